"""Segment / pose heads on CUDA against Ultralytics' own predictions with the same exported
models (``.wt`` copies of ../shared/models/yolo11n_shapes_{seg,pose}.{torchscript,onnx}), the
batched decode's speed at batch 64, and strict_device on the GPU.

Ultralytics is the reference only (never a dependency): ``VIDFLOW_ULTRALYTICS=<dir holding the
unpacked ultralytics package>``; its ``YOLO(...).predict(retina_masks=True)`` is used when it
imports there, else its own post-processing functions (scripts/record_head_refs.py). Figures
are printed as ``FIGURE {...}`` lines (run with ``-s``). The CPU counterpart without Ultralytics,
tests/unit/test_user_models_parity.py, checks that the ONNX files give the TorchScript files'
results (so ONNX parity follows from the TorchScript parity here, by transitivity)."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.ops.nms import box_iou
from vidflow.stages.detect import Detector
from vidflow.strict import StrictDeviceError, strict_device

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
DIRS = [ROOT / "models", ROOT / ".models", ROOT / ".models-hp", Path("/work/shared/models")]
SCENES = [((1920, 1080), 31, 8), ((1280, 720), 32, 4)]     # (size, seed, frames)


def _figure(**kw) -> None:
    print("FIGURE " + json.dumps(kw))


def _model(name: str) -> str:
    for d in DIRS:
        if (d / name).exists():
            return str(d / name)
    pytest.skip(f"{name} not found")


def _frames():
    from vidflow.scenes import Scene
    out = []
    for (w, h), seed, n in SCENES:
        s = Scene(w, h, seed=seed)
        out.append([s.render(i)[0] for i in range(n)])
    return out


@pytest.fixture(scope="module")
def frames():
    return _frames()


def _ul_root() -> Path | None:
    p = os.environ.get("VIDFLOW_ULTRALYTICS")
    return Path(p) if p and (Path(p) / "ultralytics").is_dir() else None


_REFS: dict = {}


def _reference(model: str, task: str, frames_rgb):
    key = (model, id(frames_rgb))
    if key not in _REFS:
        _REFS[key] = _reference_uncached(model, task, frames_rgb)
    return _REFS[key]


def _reference_uncached(model: str, task: str, frames_rgb):
    """Ultralytics' predictions: per frame (boxes [n,4], cls [n], conf [n], masks [n,H,W] | kpts [n,K,3])."""
    root = _ul_root()
    if root is None:
        pytest.skip("VIDFLOW_ULTRALYTICS not set")
    sys.path.insert(0, str(root))
    note = ""
    if model.endswith(".onnx") and importlib.util.find_spec("onnxruntime") is None:
        # Ultralytics runs an ONNX file through onnxruntime; without it (the GPU machine has none)
        # the reference is its prediction with the TorchScript export of the same trained weights
        ts = Path(model).with_suffix(".torchscript")
        if not ts.exists():
            pytest.skip(f"no onnxruntime for Ultralytics' ONNX reference and no {ts.name} beside it")
        model, note = str(ts), f" on {ts.name} (no onnxruntime here)"
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO  # noqa: PLC0415 - reference only
        m = YOLO(model, task={"seg": "segment", "pose": "pose"}[task])
        res = m.predict([f[..., ::-1].copy() for f in frames_rgb], imgsz=640, conf=0.25, iou=0.7,
                        retina_masks=True, device=0, half=False, verbose=False)
        how = "ultralytics.YOLO.predict" + note
        out = []
        for r in res:
            extra = r.masks.data.bool() if task == "seg" and r.masks is not None else (
                r.keypoints.data if task == "pose" else None)
            out.append((r.boxes.xyxy.float(), r.boxes.cls.long(), r.boxes.conf.float(), extra))
        return out, how
    except Exception as e:  # noqa: BLE001 - fall back to Ultralytics' own post-processing functions
        why = f"{type(e).__name__}: {e}"[:200]
    spec = importlib.util.spec_from_file_location("record_head_refs", ROOT / "scripts" / "record_head_refs.py")
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    ops, nms = rec.load_ultralytics_ops(root)
    out = []
    if model.endswith(".onnx"):
        import onnxruntime as ort
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        run = lambda x: [torch.from_numpy(v).cuda() for v in sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})]  # noqa: E731
    else:
        ts = torch.jit.load(model, map_location="cuda").eval()

        def run(x):
            r = ts(x)
            return list(r) if isinstance(r, (tuple, list)) else [r]
    for rgb in frames_rgb:
        x = (torch.from_numpy(rec.letterbox(rgb)).permute(2, 0, 1)[None].float() / 255).cuda()
        with torch.inference_mode():
            o = run(x)
        det = nms.non_max_suppression(o[0], 0.25, 0.7, nc=3, max_det=300)[0]
        boxes = ops.scale_boxes(x.shape[2:], det[:, :4].clone(), rgb.shape)
        if task == "seg":
            extra = ops.process_mask_native(o[1][0], det[:, 6:], boxes, rgb.shape[:2]).bool()
        else:
            extra = ops.scale_coords(x.shape[2:], det[:, 6:].reshape(len(det), -1, 3).clone(), rgb.shape)
        out.append((boxes, det[:, 5].long(), det[:, 4], extra))
    return out, f"ultralytics ops{note} (YOLO() did not import: {why})"


def _ul_input_size(model: str, w: int, h: int) -> tuple[int, int] | None:
    """The model input Ultralytics' predict uses for a ``w`` x ``h`` frame: a dynamic ONNX export
    runs rectangular (``rect=True``: the letterboxed frame padded to a multiple of 32 only, 640 x
    384 for 16:9), a TorchScript trace its square export size. vidflow gets the same input (W, H)."""
    if not model.endswith(".onnx"):
        return None
    r = min(640 / w, 640 / h)
    nw, nh = round(w * r), round(h * r)
    return (nw + (640 - nw) % 32, nh + (640 - nh) % 32)


def _vidflow(model: str, frames_rgb, half: bool):
    h, w = frames_rgb[0].shape[:2]
    det = Detector(model, half=half, size=_ul_input_size(model, w, h))
    imgs = torch.from_numpy(np.stack(frames_rgb)).permute(0, 3, 1, 2).contiguous().cuda()
    h, w = imgs.shape[2:]
    b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=w, height=h) for i in range(len(imgs))))
    o = det(b).objects
    assert o.device.type == "cuda"
    return det, o


def _match(ref, objs, k):
    """Greedy same-class one-to-one matching at IoU >= 0.9: list of (ref index, ours index)."""
    rb, rc, rs, _ = (t.to(objs.device) if t is not None else None for t in ref)
    sel = (objs.frame_idx == k).nonzero().squeeze(1)
    ob, oc = objs.bbox[sel], objs.class_id[sel]
    if not len(rb) or not len(ob):
        return [], sel
    iou = box_iou(rb.float(), ob)
    iou[rc[:, None] != oc[None, :]] = -1
    used, pairs = set(), []
    for i in torch.argsort(rs, descending=True).tolist():
        row = iou[i].clone()
        if used:
            row[list(used)] = -1
        v, j = row.max(0)
        if v >= 0.9:
            used.add(int(j))
            pairs.append((i, int(j)))
    return pairs, sel


@pytest.mark.parametrize("task", ["seg", "pose"])
@pytest.mark.parametrize("ext", ["torchscript", "onnx"])
@pytest.mark.parametrize("half", [False, True])
def test_parity_with_ultralytics(frames, task, ext, half):
    model = _model(f"yolo11n_shapes_{task}.{ext}")
    fig = {"test": "heads_vs_ultralytics", "task": task, "model": ext, "half": half}
    n_ref = n_ours = n_match = 0
    ious, dists = [], []
    for scene in frames:
        ref, how = _reference(model, task, scene)
        det, objs = _vidflow(model, scene, half)
        assert det.active_head.task == {"seg": "segment", "pose": "pose"}[task]      # from the metadata
        fig["backend"] = getattr(det.engine, "backend", "torch")    # ONNX: onnxruntime-gpu or the converter
        fig.setdefault("input_sizes", []).append(list(det.input_size or ()))
        h, w = scene[0].shape[:2]
        full = objs.masks.full(w, h) if task == "seg" else None
        for k, r in enumerate(ref):
            r = tuple(t.to(objs.device) for t in r)
            pairs, sel = _match(r, objs, k)
            n_ref, n_ours, n_match = n_ref + len(r[0]), n_ours + len(sel), n_match + len(pairs)
            for i, j in pairs:
                if task == "seg":
                    a, b = r[3][i], full[sel[j]]
                    ious.append(((a & b).sum() / (a | b).sum().clamp(min=1)).item())
                else:
                    dists += (r[3][i, :, :2].float() - objs.keypoints[sel[j], :, :2]).norm(dim=-1).tolist()
    fig.update(reference=how, ref_objects=n_ref, ours=n_ours, matched=n_match,
               matched_of_ref=round(n_match / max(n_ref, 1), 4), matched_of_ours=round(n_match / max(n_ours, 1), 4))
    if task == "seg":
        fig.update(mask_iou_mean=round(float(np.mean(ious)), 4), mask_iou_min=round(float(np.min(ious)), 4))
    else:
        fig.update(kpt_px_median=round(statistics.median(dists), 3), kpt_px_p95=round(float(np.percentile(dists, 95)), 3))
    _figure(**fig)
    assert n_ref > 50
    assert n_match >= 0.97 * n_ref and n_match >= 0.97 * n_ours
    if task == "seg":
        assert np.mean(ious) >= 0.90
    else:
        assert statistics.median(dists) <= 2.0


def _time(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def _syncs(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(x.message) for x in w)


def test_batched_decode_speed_batch64(frames):
    """Figures only (no timing assertion): the batched decode vs the previous decoder (flat, with
    torchvision's batched_nms when installed, as Detector used) and vs a per-frame loop."""
    import vidflow.heads._reference as old
    from vidflow.heads.yolo import decode
    from vidflow.ops import nms as nms_mod
    model = _model("yolo11n_shapes.torchscript") if any((d / "yolo11n_shapes.torchscript").exists()
                                                      for d in DIRS) else _model("yolo11n_shapes_seg.torchscript")
    from vidflow.engines.load import load_model
    eng, _ = load_model(model, device="cuda", half=True)
    scene = (frames[0] * 8)[:64]
    det = Detector(model, half=True)
    imgs = torch.from_numpy(np.stack(scene)).permute(0, 3, 1, 2).contiguous().cuda()
    b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=1920, height=1080) for i in range(64)))
    _, x, place, outs = det.launch(b)
    raw = outs["output0"][:, :7].contiguous() if outs["output0"].shape[1] > 7 else outs["output0"]
    new = decode(raw)
    ref = old.decode_reference(raw)
    assert all(torch.equal(a, e) for a, e in zip(new[:4], ref))      # same boxes as the previous decoder (pure NMS)
    old.batched_nms = nms_mod.batched_nms                            # the previous Detector path (torchvision if there)
    try:
        t_old = _time(lambda: old.decode_reference(raw))
        s_old = _syncs(lambda: old.decode_reference(raw))
        t_frame = _time(lambda: [old.decode_reference(raw[i:i + 1]) for i in range(64)], reps=5)
        s_frame = _syncs(lambda: [old.decode_reference(raw[i:i + 1]) for i in range(64)])
    finally:
        old.batched_nms = nms_mod.batched_nms_pure
    t_pure = _time(lambda: old.decode_reference(raw), reps=5)
    t_new = _time(lambda: decode(raw))
    s_new = _syncs(lambda: decode(raw))
    t_finish = _time(lambda: det.finish((b, x, place, outs)))
    _figure(test="batched_decode_batch64", model=Path(model).name, objects=len(new.frame_idx),
            torchvision=nms_mod.HAS_TORCHVISION, ms_batched=round(t_new, 3), ms_previous_flat=round(t_old, 3),
            ms_previous_flat_pure_nms=round(t_pure, 3), ms_per_frame_loop=round(t_frame, 3),
            ms_detector_finish=round(t_finish, 3), host_syncs_batched=s_new, host_syncs_previous=s_old,
            host_syncs_per_frame_loop=s_frame)


def test_segment_batch64_masks_speed(frames):
    model = _model("yolo11n_shapes_seg.torchscript")
    det = Detector(model, half=True)
    scene = (frames[0] * 8)[:64]
    imgs = torch.from_numpy(np.stack(scene)).permute(0, 3, 1, 2).contiguous().cuda()
    b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=1920, height=1080) for i in range(64)))
    pending = det.launch(b)
    from vidflow.ops.masks import to_rle
    t_masks = _time(lambda: det.finish(pending))
    det_nm = Detector(model, half=True, masks=False)
    p2 = det_nm.launch(b)
    t_boxes = _time(lambda: det_nm.finish(p2))
    objs = det.finish(pending).objects
    sizes = [[1920, 1080]] * len(objs)
    t_rle = _time(lambda: to_rle(objs.masks, sizes), reps=5)
    _figure(test="segment_batch64", objects=len(objs), crop=list(objs.masks.data.shape[1:]),
            ms_finish_with_masks=round(t_masks, 3), ms_finish_boxes_only=round(t_boxes, 3), ms_rle_all=round(t_rle, 3))


def test_strict_device_on_gpu(frames):
    seg = any((d / "yolo11n_shapes_seg.torchscript").exists() for d in DIRS)
    model = _model("yolo11n_shapes_seg.torchscript" if seg else "yolo11n_shapes.torchscript")
    det = Detector(model, half=True)
    scene = frames[0][:4]
    imgs = torch.from_numpy(np.stack(scene)).permute(0, 3, 1, 2).contiguous().cuda()
    b = Batch(images=imgs, frames=tuple(FrameInfo(0, i, 0.0, width=1920, height=1080) for i in range(4)))
    det(b)                                                          # load + warm outside
    from vidflow.ops.masks import to_rle
    with strict_device("detect"):                                   # the normal path passes
        out = det(b)
        if seg:
            to_rle(out.objects.masks, [[1920, 1080]] * len(out.objects))
        out.objects.bbox.cpu()                                      # small tables may come to the host
    assert len(out.objects) > 0
    with pytest.raises(StrictDeviceError, match=r"stage 'leaky'.*\[4, 3, 1080, 1920\] uint8 from cuda:0"):
        with strict_device("leaky"):
            b.images.cpu()
    with pytest.raises(StrictDeviceError, match=r"stage 'leaky2'.*\[1080, 1920, 3\]"):
        with strict_device("leaky2"):
            b.images[0].permute(1, 2, 0).cpu().numpy()
    if seg:
        with pytest.raises(StrictDeviceError, match="full"):
            with strict_device("full"):
                out.objects.masks.full(1920, 1080).cpu()
