"""Record Ultralytics' own predictions of the shapes seg/pose models as test references.

Dev tool, never imported by vidflow (Ultralytics is AGPL-3.0 and not a dependency). Ultralytics'
post-processing (``ultralytics/utils/ops.py``, ``nms.py``) is loaded from an unpacked wheel
(``pip download ultralytics --no-deps``), with its package ``__init__`` replaced by a few
stand-ins so that neither torchvision nor its other run-time dependencies are needed;
preprocessing is Ultralytics' ``LetterBox`` (cv2 resize INTER_LINEAR, centred 114 padding).

    python scripts/record_head_refs.py --ultralytics /tmp/ul/x --models /work/shared/models

writes ``tests/refs/heads_<task>.json`` (Ultralytics' boxes, classes, scores, COCO RLE masks,
keypoints in source pixels) and ``tests/refs/heads_<task>_raw.npz`` (the model's raw outputs:
candidate columns with a class score > 0.2 and, for seg, the prototypes in float16), so CPU CI
runs vidflow's heads on the same raw outputs (tests/unit/test_head_refs.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch

FRAMES = [((1920, 1080), 21, 5), ((1280, 720), 22, 9)]   # (size, scene seed, frame number)


def load_ultralytics_ops(root: Path):
    pkg = types.ModuleType("ultralytics")
    pkg.__path__ = [str(root / "ultralytics")]
    utils = types.ModuleType("ultralytics.utils")
    utils.__path__ = [str(root / "ultralytics" / "utils")]
    utils.LOGGER = logging.getLogger("ultralytics")
    utils.NOT_MACOS14 = True
    utils.TORCH_VERSION = torch.__version__
    checks = types.ModuleType("ultralytics.utils.checks")
    checks.check_version = lambda *a, **k: True
    tu = types.ModuleType("ultralytics.utils.torch_utils")
    tu.get_torch_device_backend = lambda *a, **k: "cpu"
    metrics = types.ModuleType("ultralytics.utils.metrics")
    metrics.batch_probiou = metrics.box_iou = None          # rotated boxes / merge-NMS only
    for m in (pkg, utils, checks, tu, metrics):
        sys.modules[m.__name__] = m
    mods = {}
    for name in ("ops", "nms"):
        spec = importlib.util.spec_from_file_location(f"ultralytics.utils.{name}",
                                                      root / "ultralytics" / "utils" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods["ops"], mods["nms"]


def letterbox(img: np.ndarray, size: int = 640) -> np.ndarray:
    import cv2
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    if (w, h) != (nw, nh):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ultralytics", type=Path, required=True)
    ap.add_argument("--models", type=Path, default=Path("/work/shared/models"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "refs")
    args = ap.parse_args()
    ops, nms = load_ultralytics_ops(args.ultralytics)
    import pycocotools.mask as cm

    from vidflow.scenes import Scene

    args.out.mkdir(parents=True, exist_ok=True)
    for task in ("seg", "pose"):
        model = torch.jit.load(str(args.models / f"yolo11n_shapes_{task}.torchscript"), map_location="cpu").eval()
        frames, raw = [], {}
        for k, ((w, h), seed, num) in enumerate(FRAMES):
            rgb, _ = Scene(w, h, seed=seed).render(num)
            x = torch.from_numpy(letterbox(rgb)).permute(2, 0, 1)[None].float() / 255
            with torch.inference_mode():
                out = model(x)
            pred = out[0] if isinstance(out, (tuple, list)) else out
            det = nms.non_max_suppression(pred, 0.25, 0.7, nc=3, max_det=300)[0]
            boxes = ops.scale_boxes(x.shape[2:], det[:, :4].clone(), rgb.shape)
            rec = {"size": [w, h], "seed": seed, "frame": num, "bbox": boxes.round(decimals=3).tolist(),
                   "class_id": det[:, 5].long().tolist(), "confidence": det[:, 4].round(decimals=5).tolist()}
            if task == "seg":
                protos = out[1]
                masks = ops.process_mask_native(protos[0], det[:, 6:], boxes, rgb.shape[:2])
                rles = cm.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
                rec["masks"] = [r["counts"].decode() for r in rles]
                raw[f"protos{k}"] = protos[0].numpy().astype(np.float16)
            else:
                kpts = det[:, 6:].reshape(len(det), 4, 3)
                kpts = ops.scale_coords(x.shape[2:], kpts.clone(), rgb.shape)
                rec["keypoints"] = kpts.round(decimals=3).tolist()
            keep = (pred[0, 4:7].max(0).values > 0.2).nonzero().squeeze(1)
            raw[f"output{k}"] = pred[0][:, keep].numpy().astype(np.float32)
            frames.append(rec)
            print(task, w, h, "objects", len(det))
        (args.out / f"heads_{task}.json").write_text(json.dumps({"model": f"yolo11n_shapes_{task}.torchscript",
                                                                 "conf": 0.25, "iou": 0.7, "frames": frames}))
        np.savez_compressed(args.out / f"heads_{task}_raw.npz", **raw)


if __name__ == "__main__":
    main()
