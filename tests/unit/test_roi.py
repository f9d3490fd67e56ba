"""Regions of interest (``Detector(rois=...)``, DeepStream's nvdspreprocess) on the CPU with the
demo detector and generated scenes: objects inside an ROI are found where the full-frame
detector finds them, objects outside are not reported, several sources with different ROIs go
through one forward pass, overlapping ROIs do not duplicate objects, the ROI crops are exactly
the letterbox of the cut-out, and bad ROIs in YAML name their path."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.ops.geometry import letterbox
from vidflow.ops.nms import box_iou
from vidflow.ops.roi import RoiError, letterbox_crops, parse_rois
from vidflow.scenes import Scene
from vidflow.stages.detect import Detector


def _frame(w: int, h: int, seed: int, i: int = 0) -> torch.Tensor:
    rgb, _ = Scene(w, h, seed=seed, num_objects=10).render(i)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _batch(images: list[torch.Tensor], ids: list, sizes: list | None = None) -> Batch:
    frames = tuple(FrameInfo(sid, 0, 0.0, width=(sizes[k][0] if sizes else img.shape[2]),
                             height=(sizes[k][1] if sizes else img.shape[1]))
                   for k, (sid, img) in enumerate(zip(ids, images)))
    return Batch(torch.stack(images), frames)


def _inside(boxes: torch.Tensor, roi, margin: float = 0.0) -> torch.Tensor:
    x1, y1, x2, y2 = roi
    return ((boxes[:, 0] >= x1 + margin) & (boxes[:, 1] >= y1 + margin)
            & (boxes[:, 2] <= x2 - margin) & (boxes[:, 3] <= y2 - margin))


def _check_roi_against_full(full, got, roi) -> int:
    """Every full-frame object well inside ``roi`` is found at the same place (IoU >= 0.9, same
    class); every reported object lies in the ROI; those wholly outside are not reported."""
    assert bool(_inside(got.bbox, roi).all()), got.bbox
    want = full[_inside(full.bbox, roi, margin=8)]
    for b, c in zip(want.bbox, want.class_id):
        iou = box_iou(b[None], got.bbox)[0]
        same = got.class_id == c
        assert same.any() and float(iou[same].max()) >= 0.9, (b, got.bbox, got.class_id)
    x1, y1, x2, y2 = roi
    outside = full[(full.bbox[:, 2] <= x1) | (full.bbox[:, 0] >= x2) | (full.bbox[:, 3] <= y1) | (full.bbox[:, 1] >= y2)]
    if len(outside) and len(got):
        assert float(box_iou(outside.bbox, got.bbox).max()) == 0.0
    return len(want)


ROI = [300, 100, 940, 460]          # 640x360 of a 1280x720 frame
# The demo detector (320x320 input) knows objects at one scale: the whole 1280x720 frame reaches
# it at 1/4, so the ROI detectors get a 160x160 input and see the 640x360 ROI at 1/4 too (a
# small ROI in a large input magnifies its objects beyond what that model was trained on).
ROI_SIZE = (160, 160)


def test_crops_are_the_letterbox_of_the_cut_out():
    img = _frame(1280, 720, seed=7)[None]
    # the frame scaled into a 640x360 batch image (as the muxer does): the ROI maps to whole pixels
    small = torch.nn.functional.interpolate(img.float(), size=(360, 640), mode="bilinear",
                                            align_corners=False).round().to(torch.uint8)
    for images, region in ((img, [0, 0, 1280, 720]), (small, [0, 0, 640, 360])):
        s = images.shape[3] / 1280
        x, views = letterbox_crops(images, torch.tensor([ROI], dtype=torch.float32), torch.tensor([0]),
                                   torch.tensor([region], dtype=torch.float32), torch.tensor([[1280.0, 720.0]]),
                                   (640, 640))
        x1, y1, x2, y2 = (int(v * s) for v in ROI)
        ref, _ = letterbox(images[:, :, y1:y2, x1:x2].float(), (640, 640))
        if s == 1:
            assert torch.equal(x, ref)
        else:   # upscaled: the outermost samples read the frame beyond the ROI, not a clamped edge
            assert torch.equal(x[..., :140, :], ref[..., :140, :]) and torch.equal(x[..., 500:, :], ref[..., 500:, :])
            assert torch.allclose(x[..., 141:499, 1:639], ref[..., 141:499, 1:639], atol=1e-3)
        # model-input pixels map back to source pixels through the views
        corner = views.to_source(torch.tensor([[0.0, 140.0], [640.0, 500.0]]), torch.tensor([0, 0]))
        assert torch.allclose(corner, torch.tensor([[300.0, 100.0], [940.0, 460.0]]), atol=1e-3)


@pytest.fixture(scope="module")
def det():
    return Detector("demo")


@pytest.mark.parametrize("seed", [7, 9])
def test_objects_inside_found_at_the_same_place_outside_not_reported(det, seed):
    b = _batch([_frame(1280, 720, seed)], [0])
    full = det(b).objects
    got = Detector("demo", rois={0: [ROI]}, size=ROI_SIZE)(b).objects
    assert _check_roi_against_full(full, got, ROI) >= 1
    assert len(got) < len(full)          # the objects elsewhere in the frame are gone


def test_sources_with_different_rois_in_one_pass(det):
    """Source 0 (ROI A), source "cam1" (ROI B; a 1920x1080 camera scaled into the 1280x720
    batch image), source 2 (no ROI: the whole frame, as without rois)."""
    big = _frame(1920, 1080, seed=11)
    scaled = torch.nn.functional.interpolate(big[None].float(), size=(720, 1280), mode="bilinear",
                                             align_corners=False, antialias=True)[0].round().to(torch.uint8)
    images = [_frame(1280, 720, seed=7), scaled, _frame(1280, 720, seed=3)]
    sizes = [(1280, 720), (1920, 1080), (1280, 720)]
    roi_b = [int(v * 1.5) for v in ROI]
    b = _batch(images, [0, "cam1", 2], sizes)
    from vidflow.demo_models import load_demo

    model, info = load_demo()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[0]))
    d = Detector(model, rois={0: [ROI], "cam1": [roi_b]}, size=ROI_SIZE, labels=info["labels"])
    out = d(b)
    assert calls == [3]                              # three crops, one forward pass
    full = det(b).objects
    n = 0
    for i, roi in ((0, ROI), (1, roi_b)):
        n += _check_roi_against_full(full.for_frame(i), out.objects.for_frame(i), roi)
    assert n >= 2
    f2, g2 = Detector("demo", size=ROI_SIZE)(b).objects.for_frame(2), out.objects.for_frame(2)
    assert len(f2) == len(g2) and torch.allclose(f2.bbox, g2.bbox, atol=1e-3)
    assert torch.equal(f2.class_id, g2.class_id)


def test_overlapping_rois_do_not_duplicate(det):
    b = _batch([_frame(1280, 720, seed=7)], [0])
    one = Detector("demo", rois={0: [ROI]}, size=ROI_SIZE)(b).objects
    shifted = [ROI[0] + 16, ROI[1] + 8, ROI[2] + 16, ROI[3] + 8]
    two = Detector("demo", rois={0: [ROI, shifted]}, size=ROI_SIZE)(b).objects
    inner = [max(ROI[0], shifted[0]), max(ROI[1], shifted[1]), min(ROI[2], shifted[2]), min(ROI[3], shifted[3])]
    a, c = one[_inside(one.bbox, inner, 8)], two[_inside(two.bbox, inner, 8)]
    assert len(a) >= 1 and len(c) == len(a)          # each object of the overlap once
    iou = box_iou(c.bbox, c.bbox) * (c.class_id[:, None] == c.class_id[None]).float()
    assert float((iou - torch.eye(len(c))).max()) < 0.7


def test_rois_of_other_sources_leave_the_batch_as_it_was(det):
    b = _batch([_frame(1280, 720, seed=3)], [5])
    full = Detector("demo", size=ROI_SIZE)(b).objects
    got = Detector("demo", rois={0: [ROI]}, size=ROI_SIZE)(b).objects
    assert torch.equal(full.bbox, got.bbox) and torch.equal(full.class_id, got.class_id)


@pytest.mark.parametrize("rois, where, msg", [
    ({0: [[1, 2, 3]]}, "rois.0[0]", "expected [x1, y1, x2, y2]"),
    ({0: [[0, 0, 10, 10], [5, 5, 5, 9]]}, "rois.0[1]", "0 <= x1 < x2"),
    ({"cam": [[-1, 0, 10, 10]]}, "rois.cam[0]", "0 <= x1 < x2"),
    ({0: []}, "rois.0", "non-empty"),
    ({0: [[0, 0, 4, 4]], "0": [[0, 0, 4, 4]]}, "rois.0", "given twice"),
    ({0: [[0.5, 0, 4, 4]]}, "rois.0[0]", "4 integers"),
])
def test_bad_rois(rois, where, msg):
    with pytest.raises(RoiError) as ei:
        parse_rois(rois)
    assert ei.value.yaml_path == where and msg in str(ei.value)


def test_rois_refuse_keep_input():
    with pytest.raises(ValueError, match="not with rois"):
        Detector("demo", rois={0: [[0, 0, 8, 8]]}, keep_input=True)


@pytest.mark.parametrize("rois, path, msg", [
    ("{0: [[300, 100, 940, 460]], cam: [[0, 0, 8, 8]]}", None, None),
    ("{0: [[300, 100, 940]]}", "stages[0].detect.rois.0[0]", "expected [int, int, int, int], got [300, 100, 940]"),
    ("{0: [[300, 100, 940, 460.5]]}", "stages[0].detect.rois.0[0][3]", "expected int, got 460.5"),
    ("{0: [[300, 100, 940, 460]], 1: [[0, 0, 8, 8], [9, 9, 3, 20]]}", "stages[0].detect.rois.1[1]", "0 <= x1 < x2"),
    ("{0: 5}", "stages[0].detect.rois.0", "expected list[[int, int, int, int]], got 5"),
    ("[[0, 0, 8, 8]]", "stages[0].detect.rois", "expected mapping"),
])
def test_rois_in_yaml(tmp_path, rois, path, msg):
    from vidflow.config import build_parts, load_config
    from vidflow.errors import ConfigError

    p = tmp_path / "p.yaml"
    p.write_text(f"sources: [{{synthetic: {{frames: 1}}}}]\nstages: [{{detect: {{model: demo, rois: {rois}}}}}]\n")
    if path is None:
        parts = build_parts(load_config(p))
        d = parts.stages[0]
        assert d.rois == {"0": ((300, 100, 940, 460),), "cam": ((0, 0, 8, 8),)}
        return
    with pytest.raises(ConfigError) as ei:
        build_parts(load_config(p))
    assert ei.value.path == path and msg in str(ei.value)


def test_roi_beyond_the_frame_is_clipped_to_it():
    """An ROI reaching past the frame (a camera smaller than the ROIs were drawn for) covers the
    part inside it; one wholly outside finds nothing."""
    b = _batch([_frame(1280, 720, seed=7)], [0])
    got = Detector("demo", rois={0: [[640, 360, 5000, 5000]]}, size=ROI_SIZE)(b).objects
    assert len(got) and bool(_inside(got.bbox, [640, 360, 1280, 720]).all())
    none = Detector("demo", rois={0: [[2000, 0, 2600, 400]]}, size=ROI_SIZE)(b).objects
    assert len(none) == 0
