"""Encoder throughput on one core: messages/s, frames/s and bytes/message for every encoder.

64 streams x 10 objects per frame, batches of 64 frames with an 8-float attribute (like a small
embedding), as the broker and JSONL sinks see them. Records are built from the bridge's columns
(``records.host_frames``: the batch's one host table, timed separately), then encoded.

``jsonl (dict path)`` is the JSONL encoder as it was before the whole-batch formatting:
``orjson.dumps`` of each ``JsonlEncoder.records`` dict (that code is unchanged and is the
reference the new path is tested against, byte for byte); both run here, side by side.

    PYTHONPATH=src python benchmarks/encoders.py [--batches 200] [--objects 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

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
    ap.add_argument("--repeat", type=int, default=3, help="passes per encoder; the fastest is printed "
                    "(a shared machine's noise only slows a pass down)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    bs = [make_batch(a.batch, a.objects, i) for i in range(a.batches)]
    t0 = time.process_time()
    hfs = [host_frames(b) for b in bs]
    t_cols = time.process_time() - t0
    frames = a.batches * a.batch
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores visible), one thread; {a.batches} batches x {a.batch} frames"
          f" x {a.objects} objects; encoders: fastest of {a.repeat} passes")
    print(f"{'host_frames (one table a batch)':32s} {frames / t_cols:12,.0f} frames/s")
    runs = [(n, {}) for n in ENCODERS] + [("jsonl", {"attrs": False})]
    for name, kw in runs + [("jsonl (dict path)", {}), ("jsonl (dict path)", {"attrs": False})]:
        def fresh(name=name, kw=kw):
            return DictPath(**kw) if name.startswith("jsonl (dict") else make_encoder(name, **kw)
        if kw:
            name = f"{name} (attrs=False)"
        fresh().encode(hfs[0], lambda s: 0)  # warm (tables, caches)
        dt = float("inf")
        for _ in range(max(1, a.repeat)):
            enc, seq = fresh(), {}      # stateful encoders (events) start each pass afresh

            def nxt(s: object, seq: dict = seq) -> int:
                seq[s] = seq.get(s, -1) + 1
                return seq[s]
            t0 = time.process_time()
            n = size = 0
            for hf in hfs:
                out = enc.encode(hf, nxt)
                n += len(out)
                size += sum(len(p) for _, p in out)
            dt = min(dt, time.process_time() - t0)
        print(f"{name:32s} {frames / dt:12,.0f} frames/s {n / dt:12,.0f} msgs/s {size / max(n, 1):8,.0f} bytes/msg"
              f"   (+columns: {frames / (dt + t_cols):,.0f} frames/s)")
    sink_write_cost([make_batch(a.batch, a.objects, 10_000 + i) for i in range(50)])   # fresh: no host table yet


class DictPath(JsonlEncoder):
    """The JSONL encoder's ``encode`` before the whole-batch formatting (its body then)."""

    def encode(self, frames, seq):
        dumps = orjson.dumps
        return [(r["source_id"], dumps(r)) for r in self.records(frames)]


def sink_write_cost(bs: list[Batch]) -> None:
    """What a sink costs the pipeline's thread: JsonlSink.write (queues the batch) vs the same
    host table + encoding done inline, per batch (fresh batches for each)."""
    import tempfile

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
