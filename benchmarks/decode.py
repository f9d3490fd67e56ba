#!/usr/bin/env python
"""Decode benchmark: N x 1080p H.264 streams on NVDEC, one Python thread each.

    python benchmarks/decode.py --streams 1 8 --frames 300 [--convert] [--clip x.mp4]

Prints one JSON line per configuration: ``{"streams", "mode", "frames", "wall_s", "fps",
"cpu_cores"}`` where ``fps`` is frames of all streams per second and ``cpu_cores`` the process
CPU time divided by wall time. Modes: ``decode`` (NVDEC + copy into an own NV12 tensor, what
FileSource yields) and, with ``--convert``, ``decode+convert`` (plus ``convert_into`` to a
1920x1080 RGB batch slot per frame, the Muxer's work) and ``decode+convert(torch)`` (same with
``VIDFLOW_NO_TRITON``-style plain torch ops). The clip is generated (scenes.make_clip) when not given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from vidflow.ops import color  # noqa: E402
from vidflow.scenes import make_clip  # noqa: E402
from vidflow.sources.file import FileSource  # noqa: E402


def run(clip: str, streams: int, frames: int, mode: str) -> dict:
    dev = torch.device("cuda")
    counts = [0] * streams
    errors: list[BaseException] = []
    outs = [torch.empty(3, 1080, 1920, dtype=torch.uint8, device=dev) for _ in range(streams)]
    barrier = threading.Barrier(streams + 1)

    def worker(k: int) -> None:
        try:
            src = FileSource(clip, loop=True, decoder="nvdec")
            it = src.frames(device=dev, source_id=k)
            first = next(it)                      # decoder created before timing starts
            if mode != "decode":
                color.convert_into(first, outs[k])    # kernel compiled before timing starts
                torch.cuda.synchronize()
            barrier.wait()
            f = first
            for _ in range(frames):
                if mode != "decode":
                    color.convert_into(f, outs[k])
                counts[k] += 1
                f = next(it)
            torch.cuda.current_stream().synchronize()
            src.close()
        except BaseException as e:                # noqa: BLE001
            errors.append(e)
            barrier.abort()

    if mode == "decode+convert(torch)":
        color._TRITON = False
    elif mode == "decode+convert":
        color._TRITON = None
        if not color.triton_available():
            return {"streams": streams, "mode": mode, "error": "triton unavailable"}
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        return {"streams": streams, "mode": mode, "error": repr(errors[0])}
    n = sum(counts)
    return {"streams": streams, "mode": mode, "frames": n, "wall_s": round(wall, 3),
            "fps": round(n / wall, 1), "cpu_cores": round(cpu / wall, 2),
            "gpu": torch.cuda.get_device_name(0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--frames", type=int, default=300, help="frames per stream")
    ap.add_argument("--clip", default=None, help="a 1080p H.264 file (default: generate one)")
    ap.add_argument("--clip-frames", type=int, default=120)
    ap.add_argument("--convert", action="store_true")
    args = ap.parse_args()
    clip = args.clip
    if clip is None:
        clip = os.path.join(tempfile.mkdtemp(), "bench1080.mp4")
        make_clip(clip, width=1920, height=1080, frames=args.clip_frames, seed=0, bitrate=4_200_000)
    modes = ["decode"] + (["decode+convert", "decode+convert(torch)"] if args.convert else [])
    for mode in modes:
        for n in args.streams:
            print(json.dumps(run(clip, n, args.frames, mode)), flush=True)


if __name__ == "__main__":
    main()
