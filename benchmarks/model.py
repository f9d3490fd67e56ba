#!/usr/bin/env python
"""Model-only throughput (img/s) of detector engines at several batch sizes, fp32 and fp16,
plus the whole Detector stage (letterbox + model + decode/NMS + mapping) on 1080p uint8 batches.
Prints one JSON line per measurement.

    python benchmarks/model.py                                   # CUDA if present
    python benchmarks/model.py --device cpu --models demo --batches 1 --dtypes fp32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vidflow.batch import Batch, FrameInfo  # noqa: E402
from vidflow.engines import load_engine  # noqa: E402
from vidflow.stages.detect import Detector  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn, dev: torch.device, min_s: float) -> tuple[float, int]:
    for _ in range(3):
        fn()
    _sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3 and time.perf_counter() - t0 >= min_s:
            break
        if n % 5 == 0:
            _sync(dev)
    _sync(dev)
    return (time.perf_counter() - t0) / n, n


_OPTS = {"eager": dict(channels_last=False, cuda_graphs=False), "cl": dict(channels_last=True, cuda_graphs=False),
         "graphs": dict(channels_last=False, cuda_graphs=True), "cl+graphs": dict(channels_last=True, cuda_graphs=True)}


def _engine(name: str, dev: torch.device, half: bool, opts: str = "default"):
    kw = _OPTS.get(opts, {}) if not name.endswith(".onnx") else {}
    if name == "demo":
        from vidflow.demo_models import load_demo
        model, info = load_demo(device=dev)
        return load_engine(model, device=dev, half=half, **kw), tuple(info["input_size"])
    path = name if os.path.exists(name) else os.path.join(ROOT, ".models", name)
    eng = load_engine(path, device=dev, half=half, **kw)
    return eng, eng.input_size or (640, 640)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="yolo11n_shapes.torchscript,yolo11n_shapes.onnx,demo")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--seconds", type=float, default=0.6, help="time per measurement")
    ap.add_argument("--stage-batch", type=int, default=32, help="batch of the Detector-stage rows (0 = skip)")
    ap.add_argument("--opts", default="default", help="TorchEngine options to compare, comma-separated: default "
                    "(CUDA: channels_last + CUDA graphs + batch buckets), eager, cl, graphs, cl+graphs")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    for name in args.models.split(","):
        for dt, opts in ((d, o) for d in args.dtypes.split(",") for o in args.opts.split(",")):
            half = dt == "fp16"
            if half and dev.type != "cuda":
                continue
            eng, (w, h) = _engine(name, dev, half, opts)
            for b in (int(v) for v in args.batches.split(",")):
                x = torch.rand(b, 3, h, w, device=dev).to(eng.input_dtype)
                with torch.inference_mode():
                    s, n = _time(lambda eng=eng, x=x: eng(x), dev, args.seconds)
                print(json.dumps({"bench": "model", "model": os.path.basename(name), "dtype": dt, "batch": b,
                                  "input": [w, h], "img_per_s": round(b / s, 1), "ms_per_batch": round(s * 1e3, 3),
                                  "iters": n, "device": gpu, "engine": getattr(eng, "backend", "torch"),
                                  "opts": opts}),
                      flush=True)
            if args.stage_batch and opts == args.opts.split(",")[0]:
                b = args.stage_batch
                det = Detector(name if name == "demo" else (name if os.path.exists(name) else
                               os.path.join(ROOT, ".models", name)), half=half)
                from vidflow.scenes import Scene
                rgb, _ = Scene(1920, 1080, seed=3).render(0)
                img = torch.from_numpy(rgb).permute(2, 0, 1).to(dev)
                batch = Batch(images=img[None].expand(b, -1, -1, -1).contiguous(),
                              frames=tuple(FrameInfo(0, i, 0.0, width=1920, height=1080) for i in range(b)))
                s, n = _time(lambda det=det, batch=batch: det(batch), dev, args.seconds)
                print(json.dumps({"bench": "detector_stage_1080p", "model": os.path.basename(name), "dtype": dt,
                                  "batch": b, "img_per_s": round(b / s, 1), "ms_per_batch": round(s * 1e3, 3),
                                  "iters": n, "device": gpu, "objects_per_frame": len(det(batch).objects) / b}),
                      flush=True)


if __name__ == "__main__":
    main()
