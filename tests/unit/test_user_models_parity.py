"""The user-model stand-ins (YOLO11n-seg / -pose trained and exported by Ultralytics, see
../shared/models/README.md) on the CPU: the ONNX files against the TorchScript files.

(a) ``OnnxTorchModule`` (vidflow's ONNX -> torch converter, what runs an ONNX model on CUDA
    without onnxruntime-gpu) gives the raw outputs onnxruntime gives, at the 640x640 input and a
    non-square one (640x384; the ONNX files have dynamic axes).
(b) ``Detector``'s results (boxes, classes, scores, masks, keypoints in source pixels) from the
    ONNX file, through onnxruntime and through the converter, equal those from the TorchScript
    file of the same weights, on generated shapes frames of 640x640 and 1280x720.
(c) With ``rois`` the results are those of the ROI's crop run as a source of its own.

This is **not** a comparison with Ultralytics. ``tests/gpu/test_heads_gpu.py::
test_parity_with_ultralytics`` compares vidflow's TorchScript path with Ultralytics' own
predictions (it needs a GPU and ``VIDFLOW_ULTRALYTICS``); (b) gives the ONNX path the same
agreement by transitivity through the TorchScript path. Figures: ``FIGURE {...}`` lines (-s).

The models are not in the repository (their training software is AGPL-3.0) nor in CI: the tests
run when ``VIDFLOW_MODELS`` (default ``../shared/models`` beside the repository) holds them, and
are skipped otherwise with the reason in pytest's summary (``-ra``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.ops.nms import box_iou
from vidflow.scenes import Scene
from vidflow.stages.detect import Detector

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"seg": "segment", "pose": "pose"}
#: (source width, height): seed, frame indices (the training scenes: 640-1280 px wide)
SCENES = {(640, 640): (41, (0, 20, 45)), (1280, 720): (42, (0, 20, 45))}
CONF = 0.25
#: raw outputs, per output channel: |converter - onnxruntime| <= RAW_TOL * max(1, max |channel|).
#: Both are float32 (24-bit mantissa, 6e-8 relative) and differ only in the order of summation
#: (onnxruntime fuses Conv+SiLU and uses its own GEMM); that error grows with the channel's
#: magnitude, so the bound is relative for coordinates (640 px: 0.03 px) and absolute (5e-5)
#: for the sigmoid scores (0..1). Measured on the 2-core EPYC: <= 7e-6 of the channel range.
RAW_TOL = 5e-5


def _models_dir() -> Path | None:
    env = os.environ.get("VIDFLOW_MODELS")
    d = Path(env) if env else ROOT.parent / "shared" / "models"
    return d if d.is_dir() else None


def _model(name: str) -> str:
    pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
    pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
    d = _models_dir()
    where = os.environ.get("VIDFLOW_MODELS") or str(ROOT.parent / "shared" / "models")
    if d is None or not (d / name).is_file():
        pytest.skip(f"user-model stand-in {name} not found in {where} (set VIDFLOW_MODELS to the folder "
                    f"with yolo11n_shapes_{{seg,pose}}.{{onnx,torchscript}}; CI has none: expected)")
    return str(d / name)


def _figure(**kw) -> None:
    print("FIGURE " + json.dumps(kw))


_FRAMES: dict = {}
_RESULTS: dict = {}


def _frames(size: tuple[int, int]) -> torch.Tensor:
    """``[n, 3, H, W]`` uint8 RGB frames of a generated scene."""
    if size not in _FRAMES:
        seed, idx = SCENES[size]
        s = Scene(*size, seed=seed, num_objects=(8, 13))     # within the training scenes' 3-13
        _FRAMES[size] = torch.from_numpy(np.stack([s.render(i)[0] for i in idx])).permute(0, 3, 1, 2).contiguous()
    return _FRAMES[size]


def _detect(model: str, size: tuple[int, int], backend: Literal["auto", "onnxruntime", "torch"] = "auto"):
    key = (model, size, backend)
    if key not in _RESULTS:
        det = Detector(model, conf=CONF, backend=backend)
        imgs = _frames(size)
        w, h = size
        b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=w, height=h) for i in range(len(imgs))))
        _RESULTS[key] = (det, det(b).objects)
    return _RESULTS[key]


def _match(a, b, min_iou: float = 0.99) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (index in a, index in b): same frame, same class, box IoU >= min_iou,
    a's objects in descending confidence."""
    if not len(a) or not len(b):
        return []
    iou = box_iou(a.bbox, b.bbox)
    iou[(a.frame_idx[:, None] != b.frame_idx[None]) | (a.class_id[:, None] != b.class_id[None])] = -1
    used: set[int] = set()
    pairs = []
    for i in torch.argsort(a.confidence, descending=True).tolist():
        row = iou[i].clone()
        if used:
            row[list(used)] = -1
        v, j = row.max(0)
        if v >= min_iou:
            used.add(int(j))
            pairs.append((i, int(j)))
    return pairs


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp(min=1)


def _box_pixels(lo: torch.Tensor, hi: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """``[N, h, w]`` bool: pixels with x1 <= x < x2 and y1 <= y < y2, (x1, y1) from ``lo``'s
    first two columns and (x2, y2) from ``hi``'s last two."""
    xs, ys = torch.arange(w), torch.arange(h)
    cols = (xs >= lo[:, 0:1]) & (xs < hi[:, 2:3])
    rows = (ys >= lo[:, 1:2]) & (ys < hi[:, 3:4])
    return rows[:, :, None] & cols[:, None, :]


def _near_conf(objs, k: int) -> bool:
    return abs(float(objs.confidence[k]) - CONF) < 1e-4


# (a) raw outputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("frames,inp", [((640, 640), (640, 640)), ((1280, 720), (640, 640)),
                                        ((1280, 720), (640, 384))], ids=["640sq", "720p-640sq", "720p-640x384"])
def test_converter_matches_onnxruntime(task, frames, inp):
    import onnx
    import onnxruntime as ort

    from vidflow.engines.onnx_torch import OnnxTorchModule
    from vidflow.ops.geometry import preprocess

    path = _model(f"yolo11n_shapes_{task}.onnx")
    x, _ = preprocess(_frames(frames)[:2], inp, mode="letterbox")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.inference_mode():
        got = OnnxTorchModule(onnx.load(path)).eval()(x)
    assert len(got) == len(ref) == (2 if task == "seg" else 1)
    worst = []
    for g, r in zip(got, ref):
        r = torch.from_numpy(r)
        assert g.shape == r.shape and g.dtype == r.dtype
        dims = [0, *range(2, r.dim())]                    # per output channel
        scale = r.abs().amax(dim=dims).clamp(min=1)
        err = (g - r).abs().amax(dim=dims) / scale
        worst.append(float(err.max()))
        assert err.max() <= RAW_TOL, f"channel {int(err.argmax())}: {float(err.max()):.2e} of its range"
    _figure(test="onnx_converter_vs_onnxruntime", task=task, frames=list(frames), input=list(inp),
            shapes=[list(g.shape) for g in got], worst_err_of_range=[f"{v:.1e}" for v in worst])


# (b) Detector results: ONNX (both backends) vs TorchScript -------------------------------------
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("size", list(SCENES), ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnx_results_equal_torchscript(task, backend, size):
    ts_det, ts = _detect(_model(f"yolo11n_shapes_{task}.torchscript"), size)
    on_det, on = _detect(_model(f"yolo11n_shapes_{task}.onnx"), size, backend)
    assert on_det.engine.backend == backend
    assert ts_det.active_head.task == on_det.active_head.task == TASKS[task]      # from the metadata
    assert ts_det.input_size == on_det.input_size == (640, 640)                   # imgsz of both files
    pairs = _match(ts, on)
    mi, mj = {i for i, _ in pairs}, {j for _, j in pairs}
    # an object may go missing on one side only if its score is within float noise of the threshold
    lost = [i for i in range(len(ts)) if i not in mi and not _near_conf(ts, i)]
    extra = [j for j in range(len(on)) if j not in mj and not _near_conf(on, j)]
    assert len(ts) >= 20 and not lost and not extra, (len(ts), len(on), lost, extra)
    i, j = (torch.tensor(v) for v in zip(*pairs))
    ious = box_iou(ts.bbox[i], on.bbox[j]).diagonal()
    dconf = (ts.confidence[i] - on.confidence[j]).abs().max()
    fig = dict(test="onnx_vs_torchscript", task=task, backend=backend, frames=list(size), objects_ts=len(ts),
               objects_onnx=len(on), matched=len(pairs), box_iou_min=round(float(ious.min()), 6),
               conf_max_diff=f"{float(dconf):.1e}")
    assert dconf <= 1e-4
    if task == "seg":
        w, h = size
        a, b = ts.masks.full(w, h)[i], on.masks.full(w, h)[j]
        miou = _iou(a, b)
        # A mask keeps pixel (x, y) when x1 <= x < x2 and y1 <= y < y2 (as Ultralytics crops): a box
        # edge that float noise moves across an integer (452.0 vs 452.00006) adds or drops a whole
        # row or column. Inside the pixels both boxes keep, the masks must agree (IoU >= 0.99).
        both = _box_pixels(torch.maximum(ts.bbox[i], on.bbox[j]), torch.minimum(ts.bbox[i], on.bbox[j]), w, h)
        inner = _iou(a & both, b & both)
        fig.update(mask_iou_mean=round(float(miou.mean()), 6), mask_iou_min=round(float(miou.min()), 6),
                   mask_iou_common_box_min=round(float(inner.min()), 6),
                   mask_pixels_differing=int((a ^ b).sum()), mask_pixels=int(a.sum()))
        assert float(miou.mean()) >= 0.995 and float(inner.min()) >= 0.99
    else:
        d = (ts.keypoints[i, :, :2] - on.keypoints[j, :, :2]).norm(dim=-1)
        ds = (ts.keypoints[i, :, 2] - on.keypoints[j, :, 2]).abs()
        fig.update(kpt_px_max=f"{float(d.max()):.1e}", kpt_px_median=f"{float(d.median()):.1e}",
                   kpt_score_max_diff=f"{float(ds.max()):.1e}")
        assert ts.keypoints.shape[1:] == on.keypoints.shape[1:] == (4, 3)
        assert float(d.max()) <= 0.1 and float(ds.max()) <= 1e-3
    _figure(**fig)
    assert float(ious.min()) >= 0.99


# (c) regions of interest: an ROI is the crop run as a source of its own ---------------------------
ROI = (300, 100, 940, 460)       # 640x360 of 1280x720, at a 320x320 input: the frame's scale at 640


@pytest.mark.parametrize("task", list(TASKS))
def test_roi_equals_the_crop_as_its_own_source(task):
    """With ``rois`` the model sees the ROI letterboxed as if it were a frame: its objects, masks
    and keypoints are those of the cropped image run on its own, moved by the ROI's corner -- in
    every scene, occluded objects included. (Against the *whole* frame's objects they agree only
    where what the model sees around an object does not change its answer: tests/unit/
    test_roi_heads.py, docs/MODELS.md.)"""
    model = _model(f"yolo11n_shapes_{task}.onnx")
    x1, y1, x2, y2 = ROI
    n = 0
    for seed in (1, 2, 4, 6):
        rgb, _ = Scene(1280, 720, seed=seed, num_objects=10).render(0)
        img = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        crop = img[:, y1:y2, x1:x2].contiguous()
        roi = Detector(model, rois={0: [list(ROI)]}, size=(320, 320))(
            Batch(img[None], (FrameInfo(0, 0, 0.0, width=1280, height=720),))).objects
        own = Detector(model, size=(320, 320))(Batch(crop[None], (FrameInfo(0, 0, 0.0, width=640, height=360),))).objects
        shift = torch.tensor([x1, y1, x1, y1], dtype=own.bbox.dtype)
        ob = own.bbox + shift
        assert len(roi) == len(own)
        n += len(roi)
        if not len(roi):
            continue
        iou = box_iou(roi.bbox, ob)
        iou[roi.class_id[:, None] != own.class_id[None]] = -1
        best, j = iou.max(1)
        assert float(best.min()) >= 0.999 and len(set(j.tolist())) == len(roi), (seed, best)
        if task == "seg":
            a = roi.masks.full(1280, 720)
            assert not a[:, :, :x1].any() and not a[:, :, x2:].any() and not a[:, :y1].any() and not a[:, y2:].any()
            miou = _iou(a[:, y1:y2, x1:x2], own.masks.full(640, 360)[j])
            assert float(miou.min()) >= 0.99, (seed, miou)
        else:
            d = (roi.keypoints[:, :, :2] - own.keypoints[j, :, :2] - shift[:2]).norm(dim=-1)
            assert float(d.max()) <= 0.05, (seed, d)
    assert n >= 10
