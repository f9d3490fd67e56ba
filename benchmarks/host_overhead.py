"""The pipeline's own host CPU per frame, without a model's compute: N tiny looping clips (or
``FakeSource``s) -> Muxer(batch N) -> Detector with a stand-in engine that returns ``--objects``
boxes per frame in YOLOv8 layout -> Tracker -> JSONL, on the CPU. What is left is vidflow's Python
per frame and per batch (sources, decode processes and their IPC, muxer, detector wrapper and
decode, tracker, host copy, sink) -- the part that runs on the host's CPU on a GPU machine too,
where it decides end-to-end fps when the GPU is not the limit (issue 15). Prints one JSON line per
configuration, and with ``--profile`` the top functions of the pipeline's process by own time.

    python benchmarks/host_overhead.py [--streams 64] [--objects 11] [--seconds 8]
        [--decode-processes 0 2] [--fake-sources] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time

import torch


def stand_in(objects: int, anchors: int = 256):
    """An engine whose output0 [B, 4+3, anchors] holds ``objects`` confident boxes per frame
    (spread over the input, moving a little each call) and low scores elsewhere."""
    from vidflow.engines.fake import FakeEngine

    calls = [0]

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = torch.zeros(b, 7, anchors)
        k = torch.arange(objects, dtype=torch.float32)
        cols = max(1, int(objects ** 0.5))
        cx = (k % cols + 0.5) / cols * w + calls[0] % 3
        cy = (k // cols + 0.5) / (objects / cols + 1) * h
        out[:, 0, :objects], out[:, 1, :objects] = cx, cy
        out[:, 2, :objects], out[:, 3, :objects] = w / (2 * cols), h / (2 * cols)
        out[:, 4 + (torch.arange(objects) % 3), torch.arange(objects)] = 0.9
        calls[0] += 1
        return {"output0": out}

    return FakeEngine(outputs={"output0": (7, anchors)}, fn=fn, input_size=(64, 64))


def run(args: argparse.Namespace, k: int, clips: list[str], out_dir: str) -> dict:
    from vidflow import FileSource, Muxer, Pipeline
    from vidflow.sinks.jsonl import JsonlSink
    from vidflow.stages.detect import Detector
    from vidflow.stages.track import Tracker
    from vidflow.testing import FakeSource

    if args.fake_sources:
        sources = [FakeSource(None, width=64, height=64) for _ in range(args.streams)]
    else:
        sources = [FileSource(clips[i % len(clips)], loop=True) for i in range(args.streams)]
    stages = [Detector(stand_in(args.objects), size=(64, 64)), Tracker()]
    pipe = Pipeline(sources, Muxer(batch_size=args.streams, max_wait_ms=50, size=(64, 64)), stages,
                    [JsonlSink(os.path.join(out_dir, f"p{k}.jsonl"))], device="cpu", decode_processes=k)
    prof = cProfile.Profile() if args.profile else None
    with pipe.process_settings():
        it = iter(pipe)
        n = 0
        t_end = time.monotonic() + args.warmup
        while time.monotonic() < t_end:
            n += len(next(it).frames)
        f0, c0, t0 = n, time.process_time(), time.monotonic()
        if prof is not None:
            prof.enable()
        while time.monotonic() - t0 < args.seconds:
            n += len(next(it).frames)
        if prof is not None:
            prof.disable()
        f1, c1, t1 = n, time.process_time(), time.monotonic()
        it.close()
    frames = f1 - f0
    res = {"bench": "host_overhead", "decode_processes": k, "sources": "fake" if args.fake_sources else "file",
           "streams": args.streams, "objects_per_frame": args.objects, "fps": round(frames / (t1 - t0), 1),
           "main_process_cpu_ms_per_frame": round((c1 - c0) / max(frames, 1) * 1e3, 4),
           "main_process_cores": round((c1 - c0) / (t1 - t0), 2)}
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
        res["profile"] = s.getvalue()
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--objects", type=int, default=11)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--decode-processes", type=int, nargs="+", default=[0, 2])
    p.add_argument("--fake-sources", action="store_true", help="FakeSource (no decode) instead of files")
    p.add_argument("--profile", action="store_true", help="cProfile the pipeline's thread(s) in this process")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    from vidflow.bench.meters import host_cpu
    from vidflow.testing import make_clip

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        clips = [] if args.fake_sources else [
            make_clip(os.path.join(d, f"c{i}.mp4"), width=64, height=64, frames=120, seed=i).path for i in range(4)]
        for k in args.decode_processes:
            r = run(args, k, clips, d)
            prof = r.pop("profile", None)
            print(json.dumps({**r, **host_cpu()}), flush=True)
            if prof:
                print(prof, flush=True)


if __name__ == "__main__":
    main()
