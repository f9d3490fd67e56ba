"""Regions of interest with the segment, pose and semantic heads: masks, keypoints and class
maps come back in source pixels of the frame. Segment / pose use the YOLO11n-seg / -pose
exports of ../shared/models (not in CI: skipped without them); semantic the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.ops.nms import box_iou
from vidflow.scenes import Scene
from vidflow.stages.detect import Detector

ROOT = Path(__file__).resolve().parents[2]
DIRS = [ROOT / "models", ROOT / ".models", Path("/work/shared/models")]
ROI = [300, 100, 940, 460]      # 640x360 of 1280x720: at a 320 input the same scale as the frame at 640


def _model(name: str) -> str:
    pytest.importorskip("onnxruntime")
    for d in DIRS:
        if (d / name).is_file():
            return str(d / name)
    pytest.skip(f"{name} is not here (../shared/models; not in CI)")


def _batch(w: int, h: int, seed: int, n: int = 10) -> Batch:
    rgb, _ = Scene(w, h, seed=seed, num_objects=n).render(0)
    return Batch(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous(), (FrameInfo(0, 0, 0.0, width=w, height=h),))


def _pairs(full, got, roi, margin: float = 8.0):
    """(full index, roi index) of the objects well inside ``roi``, matched by IoU >= 0.9."""
    x1, y1, x2, y2 = roi
    b = full.bbox
    inside = ((b[:, 0] >= x1 + margin) & (b[:, 1] >= y1 + margin) & (b[:, 2] <= x2 - margin)
              & (b[:, 3] <= y2 - margin)).nonzero().squeeze(1)
    out = []
    for i in inside.tolist():
        iou = box_iou(b[i:i + 1], got.bbox)[0] * (got.class_id == full.class_id[i])
        assert len(got) and float(iou.max()) >= 0.9, (b[i], got.bbox)
        out.append((i, int(iou.argmax())))
    return out


@pytest.mark.parametrize("seed", [4, 9])   # scenes without occluded objects in the ROI (the model's
def test_segment_masks_mapped_back(seed):  # answer there depends on what it sees around them)
    model = _model("yolo11n_shapes_seg.onnx")
    b = _batch(1280, 720, seed)
    full = Detector(model)(b).objects
    got = Detector(model, rois={0: [ROI]}, size=(320, 320))(b).objects
    pairs = _pairs(full, got, ROI)
    assert pairs and got.masks is not None
    fm, gm = full.masks.full(1280, 720), got.masks.full(1280, 720)
    x1, y1, x2, y2 = ROI
    assert not gm[:, :, :x1].any() and not gm[:, :, x2:].any() and not gm[:, :y1].any() and not gm[:, y2:].any()
    for i, j in pairs:
        inter, union = (fm[i] & gm[j]).sum(), (fm[i] | gm[j]).sum()
        assert float(inter / union) >= 0.85, (i, j, float(inter / union))


def test_pose_keypoints_mapped_back():
    model = _model("yolo11n_shapes_pose.onnx")
    b = _batch(1280, 720, 9)
    full = Detector(model)(b).objects
    got = Detector(model, rois={0: [ROI]}, size=(320, 320))(b).objects
    pairs = _pairs(full, got, ROI)
    assert pairs and got.keypoints is not None and got.keypoints.shape[1:] == (4, 3)
    x1, y1, x2, y2 = ROI
    k = got.keypoints
    assert bool(((k[..., 0] >= x1) & (k[..., 0] <= x2) & (k[..., 1] >= y1) & (k[..., 1] <= y2)).all())
    for i, j in pairs:
        d = (full.keypoints[i, :, :2] - got.keypoints[j, :, :2]).norm(dim=1)
        assert float(d.median()) <= 4.0, d


def test_semantic_class_map_of_the_rois():
    """The demo semantic model (256x256 input) on a 640x360 frame; ROIs of 320x180 at a 128
    input (the same scale). Inside an ROI the map agrees with the whole frame's, outside every
    ROI it is -1; two overlapping ROIs cover their union."""
    b = _batch(640, 360, 901)
    full = Detector("demo", head="semantic")(b).tensors["detect.class_map"][0]
    rois = [[40, 60, 360, 240], [200, 120, 520, 300]]
    out = Detector("demo", head="semantic", rois={0: rois}, size=(128, 128), probabilities=True)(b)
    cmap, probs = out.tensors["detect.class_map"][0], out.tensors["detect.class_probs"][0]
    assert cmap.shape == (360, 640) and cmap.dtype == torch.int32 and probs.shape == (360, 640, 4)
    covered = torch.zeros(360, 640, dtype=torch.bool)
    for x1, y1, x2, y2 in rois:
        covered[y1:y2, x1:x2] = True
    assert bool((cmap[~covered] == -1).all()) and bool((probs[~covered] == 0).all())
    assert bool((cmap[covered] >= 0).all())
    agree = (cmap[covered] == full[covered]).float().mean()
    assert float(agree) >= 0.95, float(agree)
