#!/usr/bin/env python
"""The segment model against the detect model in the same run, on the same clip: end-to-end
pipeline fps (``vidflow bench``'s E: N looping FileSources -> Muxer -> Detector -> Tracker ->
JsonlSink, which writes every mask as COCO RLE), the model alone (M), and the mask-building time
per batch. Prints one JSON line per measurement, then a summary line with ``E_seg_over_detect``
(issue 18's target: >= 0.85 at 64 x 1080p streams on the GPU).

    python benchmarks/seg.py                                     # device auto; GPU: 64 x 1080p
    python benchmarks/seg.py --device cpu --streams 2 --size 1280x720 --seconds 20

Rounds alternate detect / seg (``--rounds``), so a slow spell of a shared machine lands on both.
Models: ``--detect`` / ``--seg`` (default: yolo11n_shapes{,_seg}.torchscript from
``$VIDFLOW_MODELS``, ``.models`` or ``../shared/models``). Lines:

- ``E``: as ``vidflow bench`` (fps, cpu_cores, latency, per-part ``breakdown_ms_per_batch``,
  ``image_copies_per_frame``: host<->device copies >= 100 kB (CUDA only) -- a full-frame mask
  copied to the host would show here).
- ``M``: the engine on a random ``[batch, 3, H, W]`` input, 5 s (outside the pipeline's thread
  settings: on a CPU shared with other work it swings widely; E alternates, M does not).
- ``masks``: one batch of the clip's first frames through ``Detector.finish`` with masks and with
  ``masks=False`` (``ms_masks`` = the difference: box-cropped masks assembled at source
  resolution), and ``to_rle`` of all the batch's masks (what the JSONL sink adds), device synced;
  medians, and the minima under ``min_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from vidflow.batch import Batch, FrameInfo  # noqa: E402
from vidflow.bench import make_bench_clip  # noqa: E402
from vidflow.bench.meters import host_cpu, measure  # noqa: E402
from vidflow.bench.pipe import PipeWork  # noqa: E402
from vidflow.bench.workloads import Model  # noqa: E402
from vidflow.device import resolve_device  # noqa: E402
from vidflow.engines.load import load_model  # noqa: E402
from vidflow.ops.geometry import letterbox_placement  # noqa: E402
from vidflow.stages.detect import Detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _find(name: str) -> str:
    dirs = [os.environ.get("VIDFLOW_MODELS"), ROOT / ".models", ROOT / "models", ROOT.parent / "shared" / "models"]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    raise SystemExit(f"{name} not found in $VIDFLOW_MODELS, .models, models or ../shared/models: pass --detect/--seg")


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _ms(fn, dev: torch.device, reps: int) -> tuple[float, float]:
    """(median, min) ms of ``reps`` calls after one warm-up call (min: the figure least moved by
    other work on a shared machine)."""
    fn()
    _sync(dev)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


def _clip_frames(clip: str, n: int, dev: torch.device) -> torch.Tensor:
    """The clip's first ``n`` frames as ``[n, 3, H, W]`` uint8 RGB on ``dev``."""
    import av
    import numpy as np

    out = []
    with av.open(clip) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    while len(out) < n:
        out += out[: n - len(out)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(dev)


def mask_times(seg: str, clip: str, batch: int, dev: torch.device, reps: int) -> dict[str, Any]:
    """Detector.finish with and without masks on one batch of the clip, and to_rle of its masks."""
    from vidflow.ops.masks import to_rle

    imgs = _clip_frames(clip, batch, dev)
    h, w = imgs.shape[2:]
    b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=w, height=h) for i in range(batch)))
    half = dev.type == "cuda"
    with_m, without = Detector(seg, half=half), Detector(seg, half=half, masks=False)
    pm, pb = with_m.launch(b), without.launch(b)
    t_masks = _ms(lambda: with_m.finish(pm), dev, reps)
    t_boxes = _ms(lambda: without.finish(pb), dev, reps)
    objs = with_m.finish(pm).objects
    assert objs is not None and objs.masks is not None, "the segment model gave no masks"
    m = objs.masks
    sizes = [[w, h]] * len(objs)
    t_rle = _ms(lambda: to_rle(m, sizes), dev, max(3, reps // 4))
    return {"frames": [w, h], "objects": len(objs), "objects_per_frame": round(len(objs) / batch, 2),
            "mask_crop": list(m.data.shape[1:]), "mask_mb": round(m.data.numel() / 1e6, 2),
            "ms_finish_with_masks": round(t_masks[0], 3), "ms_finish_boxes_only": round(t_boxes[0], 3),
            "ms_masks": round(t_masks[0] - t_boxes[0], 3), "ms_rle_all": round(t_rle[0], 3),
            "ms_masks_per_object": round((t_masks[0] - t_boxes[0]) / max(len(objs), 1), 4),
            "min_ms": {"finish_with_masks": round(t_masks[1], 3), "finish_boxes_only": round(t_boxes[1], 3),
                       "masks": round(t_masks[1] - t_boxes[1], 3), "rle_all": round(t_rle[1], 3)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--detect", default=None, help="the detect model (default: yolo11n_shapes.torchscript)")
    ap.add_argument("--seg", default=None, help="the segment model (default: yolo11n_shapes_seg.torchscript)")
    ap.add_argument("--streams", type=int, default=None, help="default: 64 on CUDA, 2 on the CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default: streams, at most 64")
    ap.add_argument("--size", type=_size, default=None, help="clip WxH (default: 1920x1080 on CUDA, 1280x720 on the CPU)")
    ap.add_argument("--clip", default=None, help="an H.264 file to loop (default: generated shapes scenes)")
    ap.add_argument("--seconds", type=float, default=None, help="timed window of each E (default: 10 CUDA, 20 CPU)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2, help="detect/seg alternations (default: 2)")
    ap.add_argument("--decode-processes", type=int, default=None, help="default: 8 on CUDA, 0 on the CPU")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of the masks timing (default: 20 CUDA, 5 CPU)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["E", "M", "masks"])
    ap.add_argument("--out", default=None, help="also write the JSON lines to this file")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    if gpu:
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
        os.environ.setdefault("TEARDOWN_CUPTI", "0")          # as vidflow bench (its cli.py says why)
        os.environ.setdefault("DISABLE_CUPTI_LAZY_REINIT", "1")
    n = a.streams or (64 if gpu else 2)
    bs = a.batch_size or min(n, 64)
    w, h = a.size or ((1920, 1080) if gpu else (1280, 720))
    models = {"detect": a.detect or _find("yolo11n_shapes.torchscript"), "seg": a.seg or _find("yolo11n_shapes_seg.torchscript")}
    clip = a.clip or make_bench_clip(width=w, height=h, frames=300)
    import av
    with av.open(clip) as c:
        cc = c.streams.video[0].codec_context
        src = (cc.width, cc.height)
    kproc = a.decode_processes if a.decode_processes is not None else (8 if gpu else 0)
    meas = argparse.Namespace(warmup=a.warmup, seconds=a.seconds or (10.0 if gpu else 20.0), frames=None,
                              start_timeout=300.0, breakdown_seconds=2.0, copy_seconds=1.0)
    device = torch.cuda.get_device_name(dev) if gpu else f"cpu ({os.cpu_count()} cores)"
    base = {"device": device, **host_cpu(), "streams": n, "batch_size": bs, "clip": f"{src[0]}x{src[1]}",
            "torch_threads": torch.get_num_threads()}
    out = open(a.out, "w") if a.out else None  # noqa: SIM115 - closed below

    def emit(rec: dict[str, Any]) -> None:
        line = json.dumps({**rec, **base})
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    fps: dict[str, list[float]] = {"detect": [], "seg": []}
    try:
        tmp = tempfile.mkdtemp()
        if "M" not in a.skip:
            for task, path in models.items():
                eng, md = load_model(path, device=dev, half=gpu)
                size = tuple(md.get("input_size") or (640, 640))
                res, _ = measure(Model(eng, size, bs, dev), dev, argparse.Namespace(**{**vars(meas), "seconds": 5.0,
                                 "breakdown_seconds": 0, "copy_seconds": 0.2}), 1)
                emit({"bench": "M", "task": task, "model": os.path.basename(path), "fps": res["fps"],
                      "ms_per_batch": round(bs * 1e3 / res["fps"], 2) if res["fps"] else None})
                del eng
        if "masks" not in a.skip:
            emit({"bench": "masks", "model": os.path.basename(models["seg"]),
                  **mask_times(models["seg"], clip, bs, dev, a.reps or (20 if gpu else 5))})
        if "E" not in a.skip:
            fit = letterbox_placement(src, (640, 640)).new_size
            mux = src if fit[0] >= src[0] else fit
            for r in range(a.rounds):
                for task, path in models.items():
                    work = PipeWork(clip, n, dev, model=path, batch=bs, mux_size=mux, track=True, max_wait_ms=30.0,
                                    queue_size=8, jsonl=os.path.join(tmp, f"{task}{r}.jsonl"),
                                    decode_processes=kproc)
                    res, _ = measure(work, dev, meas, n)
                    fps[task].append(res["fps"])
                    emit({"bench": "E", "task": task, "round": r, "model": os.path.basename(path), **res})
                    del work
                    if gpu:
                        torch.cuda.empty_cache()
            ratios = [s / d for s, d in zip(fps["seg"], fps["detect"]) if d]
            emit({"bench": "summary", "E_detect_fps": fps["detect"], "E_seg_fps": fps["seg"],
                  "E_seg_over_detect": round(statistics.median(ratios), 3) if ratios else None,
                  "E_seg_over_detect_rounds": [round(x, 3) for x in ratios],
                  "target": "issue 18: >= 0.85 at 64 x 1080p on the GPU" + ("" if gpu else " (this is a CPU run)")})
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
