"""Encoder throughput on one core: messages/s, frames/s and bytes/message for every encoder.

64 streams x 10 objects per frame, batches of 64 frames with an 8-float attribute (like a small
embedding), as the broker and JSONL sinks see them. Records are built from the bridge's columns
(``records.host_frames``: the batch's one host table, timed separately), then encoded.

``jsonl (dict path)`` is the JSONL encoder as it was before the whole-batch formatting:
``orjson.dumps`` of each ``JsonlEncoder.records`` dict (that code is unchanged and is the
reference the new path is tested against, byte for byte); both run here, side by side.

    PYTHONPATH=src python benchmarks/encoders.py [--batches 200] [--objects 10] [--before REV]

``--before REV`` first runs this same bench on the library of git revision ``REV`` (its ``src/``
from ``git archive``, in a subprocess), then on the working tree, and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.sinks.encoders import ENCODERS, JsonlEncoder, make_encoder
from vidflow.sinks.records import host_frames


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_batch(b: int, k: int, i: int) -> Batch:
    g = torch.Generator().manual_seed(i)
    n = b * k
    xy = torch.rand(n, 2, generator=g) * 1800
    wh = torch.rand(n, 2, generator=g) * 100 + 10
    objs = Objects.create(frame_idx=torch.arange(b).repeat_interleave(k), bbox=torch.cat([xy, xy + wh], 1),
                          confidence=torch.rand(n, generator=g), class_id=torch.randint(0, 3, (n,), generator=g),
                          object_id=torch.arange(n) + i * n, attrs={"embed.vector": torch.randn(n, 8, generator=g)})
    frames = tuple(FrameInfo(s, i, i / 30, 1_700_000_000_000_000_000 + i, 1920, 1080) for s in range(b))
    return Batch(images=torch.zeros(b, 3, 2, 2, dtype=torch.uint8), frames=frames, objects=objs,
                 labels={"objects": ("person", "car", "bike")})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5, help="passes per encoder, interleaved; the fastest is "
                    "printed (a shared machine's noise only slows a pass down)")
    ap.add_argument("--before", metavar="REV", help="also run on git revision REV's library; print both")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    old = run_revision(a.before, a) if a.before else None
    torch.set_num_threads(1)
    bs = [make_batch(a.batch, a.objects, i) for i in range(a.batches)]
    t_cols = float("inf")
    for r in range(max(1, a.repeat)):          # fresh batches each pass: the table is built once per batch
        fresh_bs = bs if r == 0 else [make_batch(a.batch, a.objects, 1000 * r + i) for i in range(a.batches)]
        t0 = time.process_time()
        hfs = [host_frames(b) for b in fresh_bs]
        t_cols = min(t_cols, time.process_time() - t0)
    hfs = [host_frames(b) for b in bs]
    frames = a.batches * a.batch
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores visible), one thread; {a.batches} batches x {a.batch} frames"
          f" x {a.objects} objects; fastest of {a.repeat} passes, the encoders' passes interleaved")
    print(f"{'host_frames (one table a batch)':32s} {frames / t_cols:12,.0f} frames/s")
    runs = [(n, {}) for n in ENCODERS] + [("jsonl", {"attrs": False}), ("jsonl (dict path)", {}),
                                          ("jsonl (dict path)", {"attrs": False})]

    def fresh(name: str, kw: dict) -> Any:
        return DictPath(**kw) if name.startswith("jsonl (dict") else make_encoder(name, **kw)

    best = [float("inf")] * len(runs)
    sizes = [(0, 0)] * len(runs)
    for name, kw in runs:
        fresh(name, kw).encode(hfs[0], lambda s: 0)  # warm (tables, caches)
    for _ in range(max(1, a.repeat)):
        for j, (name, kw) in enumerate(runs):
            enc, seq = fresh(name, kw), {}      # stateful encoders (events) start each pass afresh

            def nxt(s: object, seq: dict = seq) -> int:
                seq[s] = seq.get(s, -1) + 1
                return seq[s]
            t0 = time.process_time()
            n = size = 0
            for hf in hfs:
                out = enc.encode(hf, nxt)
                n += len(out)
                size += sum(len(p) for _, p in out)
            best[j] = min(best[j], time.process_time() - t0)
            sizes[j] = (n, size)
    got = {"host_frames (one table a batch)": frames / t_cols}
    for (name, kw), dt, (n, size) in zip(runs, best, sizes):
        label = f"{name} (attrs=False)" if kw else name
        got[label] = frames / dt
        print(f"{label:32s} {frames / dt:12,.0f} frames/s {n / dt:12,.0f} msgs/s {size / max(n, 1):8,.0f} bytes/msg"
              f"   (+columns: {frames / (dt + t_cols):,.0f} frames/s)")
    if a.json:
        print("JSON " + json.dumps(got))
        return
    sink_write_cost([make_batch(a.batch, a.objects, 10_000 + i) for i in range(50)])   # fresh: no host table yet
    if old is not None:
        print(f"\nframes/s, one thread, {cpu_name()}: {a.before} (before) vs the working tree (after)")
        for k, v in got.items():
            b = old.get(k)
            print(f"  {k:32s} {b:12,.0f} {v:12,.0f}  x{v / b:.2f}" if b else f"  {k:32s} {'-':>12s} {v:12,.0f}")


def run_revision(rev: str, a: argparse.Namespace) -> dict[str, float]:
    """This bench run on git revision ``rev``'s ``src/`` (a subprocess); its figures by name."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        tar = subprocess.run(["git", "-C", root, "archive", rev, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=tar, check=True)
        env = {**os.environ, "PYTHONPATH": os.path.join(d, "src")}
        out = subprocess.run([sys.executable, __file__, "--json", "--batches", str(a.batches), "--batch", str(a.batch),
                              "--objects", str(a.objects), "--repeat", str(a.repeat)], env=env, capture_output=True,
                             text=True, check=True).stdout
    print(f"--- {rev}:")
    lines = out.splitlines()
    print("\n".join(x for x in lines if not x.startswith("JSON ")))
    print("--- working tree:")
    return json.loads(next(x for x in lines if x.startswith("JSON "))[5:])


class DictPath(JsonlEncoder):
    """The JSONL encoder's ``encode`` before the whole-batch formatting (its body then)."""

    def encode(self, frames, seq):
        dumps = orjson.dumps
        return [(r["source_id"], dumps(r)) for r in self.records(frames)]


def sink_write_cost(bs: list[Batch]) -> None:
    """What a sink costs the pipeline's thread: JsonlSink.write (queues the batch) vs the same
    host table + encoding done inline, per batch (fresh batches for each)."""
    from vidflow.sinks.jsonl import JsonlSink

    with tempfile.TemporaryDirectory() as d:
        sink = JsonlSink(os.path.join(d, "o.jsonl"), queue_size=len(bs) + 1)
        t0 = time.perf_counter()
        for b in bs:
            sink.write(b)
        t_write = time.perf_counter() - t0
        sink.close()
        enc = JsonlEncoder()
        fresh = [make_batch(len(b), len(b.objects) // len(b), 20_000 + i) for i, b in enumerate(bs)]
        t0 = time.perf_counter()
        for b in fresh:
            enc.encode(host_frames(b), lambda s: 0)
        t_inline = time.perf_counter() - t0
    print(f"JsonlSink.write on the caller's thread: {t_write / len(bs) * 1e3:.3f} ms/batch "
          f"(inline build+encode would be {t_inline / len(bs) * 1e3:.3f} ms/batch)")


if __name__ == "__main__":
    main()
