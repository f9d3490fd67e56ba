"""The batched (whole-batch, padded) YOLO decode gives exactly the previous decoder's output;
the head contract, head selection, load_model and the new Objects columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.engines.fake import FakeEngine
from vidflow.engines.load import head_for, load_model
from vidflow.heads._reference import decode_reference
from vidflow.heads.base import Head, HeadResult
from vidflow.heads.yolo import YoloHead, decode
from vidflow.ops.masks import Masks
from vidflow.ops.nms import batched_nms_pure, nms_padded
from vidflow.stages.detect import Detector

REFS = Path(__file__).resolve().parents[1] / "refs"


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))


def _recorded() -> torch.Tensor:
    """Recorded raw outputs of the shapes models (box + 3 class rows), two frames side by side."""
    cols = []
    for task in ("seg", "pose"):
        with np.load(REFS / f"heads_{task}_raw.npz", allow_pickle=False) as z:
            cols += [torch.from_numpy(z[f"output{k}"][:7]) for k in (0, 1)]
    n = max(c.shape[1] for c in cols)
    return torch.stack([torch.cat([c, torch.zeros(7, n - c.shape[1])], 1) for c in cols])


def _random(b: int, n: int = 2000, seed: int = 0, grid: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, 2, n, generator=g) * 640
    wh = torch.rand(b, 2, n, generator=g) * 80 + 4
    if grid:      # integer boxes and quantised scores: exact IoU / score ties
        xy, wh = xy.round(), wh.round()
    s = torch.rand(b, 3, n, generator=g) ** 12
    if grid:
        s = (s * 8).round() / 8
    return torch.cat([xy, wh, s], 1)


OPTIONS = [{}, {"agnostic": True}, {"conf": [0.3, 0.2, 0.5]}, {"max_det": 3}, {"classes": [0, 2]},
           {"max_nms": 7}, {"iou": 0.3}, {"conf": 0.01, "iou": 0.5}]


@pytest.mark.parametrize("kw", OPTIONS)
def test_batched_decode_equals_previous_decoder_on_recorded_outputs(kw):
    raw = _recorded()
    a, e = decode(raw, **kw), decode_reference(raw, **kw)
    assert len(a.frame_idx) > 0 and _same(a, e)


@pytest.mark.parametrize("grid", [False, True])
@pytest.mark.parametrize("kw", OPTIONS)
def test_batched_decode_equals_previous_decoder_random(kw, grid):
    raw = _random(5, seed=3, grid=grid)
    assert _same(decode(raw, **kw), decode_reference(raw, **kw))


def test_yolov5_and_end2end_equal_previous_decoder():
    g = torch.Generator().manual_seed(4)
    v8 = _random(3, 500, seed=4)
    obj = torch.rand(3, 1, 500, generator=g)
    v5 = torch.cat([v8[:, :4], obj, v8[:, 4:] ** 0.3], 1).transpose(1, 2).contiguous()
    for kw in ({}, {"conf": [0.2, 0.3, 0.1]}, {"max_det": 2}):
        assert _same(decode(v5, format="yolov5", **kw), decode_reference(v5, format="yolov5", **kw))
    e2e = torch.cat([torch.rand(3, 50, 4, generator=g) * 600, torch.rand(3, 50, 1, generator=g),
                     torch.randint(0, 3, (3, 50, 1), generator=g).float()], 2)
    for kw in ({}, {"max_det": 4}, {"classes": [1]}):
        assert _same(decode(e2e, format="end2end", **kw), decode_reference(e2e, format="end2end", **kw))


def test_batched_decode_empty_and_no_candidates():
    raw = torch.zeros(4, 7, 100)
    d = decode(raw)
    assert d.frame_idx.shape == (0,) and d.bbox.shape == (0, 4)
    assert decode(torch.zeros(0, 7, 100)).frame_idx.shape == (0,)


def test_nms_padded_matches_per_frame_nms():
    g = torch.Generator().manual_seed(5)
    for k, grid in ((1, False), (40, False), (300, True)):
        b = 6
        xy = torch.rand(b, k, 2, generator=g) * 100
        wh = torch.rand(b, k, 2, generator=g) * 40 + 1
        if grid:
            xy, wh = xy.round(), wh.round()
        boxes = torch.cat([xy, xy + wh], 2)
        groups = torch.randint(0, 3, (b, k), generator=g)
        valid = torch.rand(b, k, generator=g) > 0.2
        keep = nms_padded(boxes, groups, valid, 0.5, check_every=1, max_elements=k * k * 2)  # chunked
        for f in range(b):
            idx = valid[f].nonzero().squeeze(1)   # already "sorted": order = index order
            sc = torch.linspace(1, 0.1, k)[idx]
            ref = set(idx[batched_nms_pure(boxes[f, idx], sc, groups[f, idx], 0.5)].tolist())
            assert set(keep[f].nonzero().squeeze(1).tolist()) == ref
    with pytest.raises(ValueError, match="groups/valid"):
        nms_padded(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool), 0.5)


def test_head_result_is_checked():
    z = torch.zeros(2, dtype=torch.int64)
    HeadResult(z, torch.zeros(2, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match="bbox"):
        HeadResult(z, torch.zeros(3, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match="frame_idx"):
        HeadResult(z.float(), torch.zeros(2, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match="extras\\['m'\\]"):
        HeadResult(z, torch.zeros(2, 4), torch.zeros(2), z, extras={"m": torch.zeros(3)})
    with pytest.raises(ValueError, match="keypoints"):
        HeadResult(z, torch.zeros(2, 4), torch.zeros(2), z, extras={"keypoints": torch.zeros(2, 4, 2)})
    assert isinstance(YoloHead(), Head)


def _batch(w=64, h=48):
    return Batch(images=torch.zeros(1, 3, h, w, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0, width=w, height=h),))


def test_custom_head_extras_go_to_attrs():
    class MyHead:
        def __call__(self, outputs, batch_size):
            z = torch.zeros(1, dtype=torch.int64)
            return HeadResult(z, torch.tensor([[8.0, 8, 40, 40]]), torch.tensor([0.9]), z + 2,
                              extras={"angle": torch.tensor([0.5])})
    eng = FakeEngine(outputs={"out": (1, 5)}, input_size=(64, 64))
    objs = Detector(eng, head=MyHead(), labels=("a", "b", "c"))(_batch()).objects
    assert objs.class_id.tolist() == [2] and objs.attrs["detect.angle"].tolist() == [0.5]


def test_format_is_deprecated_and_head_validated():
    with pytest.warns(DeprecationWarning, match="head="):
        d = Detector("demo", format="yolov5")
    assert d.head == "yolov5" and d.format == "yolov5"
    with pytest.raises(ValueError, match="head: expected one of"):
        Detector("demo", head="yolox")
    with pytest.raises(ValueError, match="give one"), pytest.deprecated_call(match="head="):
        Detector("demo", head="pose", format="yolov8")
    assert Detector("demo", head="detect").head == "yolov8"


def test_head_chosen_from_metadata():
    assert head_for({"task": "segment"}) == "segment" and head_for({"task": "pose"}) == "pose"
    assert head_for({"task": "detect"}) == "yolov8" and head_for({"format": "yolov5"}) == "yolov5"
    assert head_for({}) is None
    eng = FakeEngine(outputs={"output0": (7, 10)}, input_size=(64, 64))
    eng.metadata = {"task": "pose", "kpt_shape": [1, 3]}
    with pytest.raises(ValueError, match="rows|expected"):      # 7 rows cannot hold 4+C+1*3 with C >= 1
        Detector(eng)(_batch())
    eng = FakeEngine(outputs={"output0": (8, 10)}, input_size=(64, 64))
    eng.metadata = {"task": "pose", "kpt_shape": [1, 3]}
    det = Detector(eng)
    det(_batch())
    assert det.active_head.task == "pose" and det.active_head.kpt_shape == (1, 3)


def test_load_model_refuses_pickles_with_the_export_command(tmp_path):
    p = tmp_path / "yolo11n.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, p)
    with pytest.raises(ValueError, match="yolo export model=.*format=onnx"):
        load_model(str(p))
    with pytest.raises(ValueError, match="never unpickles"):
        Detector(str(p))(_batch())
    ts = tmp_path / "ok.pt"
    torch.jit.trace(torch.nn.Conv2d(3, 7, 1), torch.zeros(1, 3, 8, 8)).save(str(ts))
    eng, meta = load_model(str(ts))
    assert meta["task"] is None and eng(torch.zeros(1, 3, 8, 8))["output0"].shape == (1, 7, 8, 8)
    eng, meta = load_model("demo")
    assert meta["labels"] == ("box", "disc", "triangle") and meta["task"] == "detect"


def test_objects_carry_masks_and_keypoints():
    m = Masks(torch.ones(3, 4, 5, dtype=torch.bool), torch.tensor([[1, 2], [0, 0], [10, 10]]))
    kp = torch.arange(3 * 2 * 3, dtype=torch.float32).reshape(3, 2, 3)
    o = Objects.create(frame_idx=torch.tensor([0, 1, 1]), bbox=torch.zeros(3, 4), masks=m, keypoints=kp)
    sub = o[o.frame_idx == 1]
    assert len(sub.masks) == 2 and sub.masks.origin.tolist() == [[0, 0], [10, 10]]
    assert torch.equal(sub.keypoints, kp[1:])
    c = Objects.cat([o, sub], frame_offsets=[0, 2])
    assert len(c.masks) == 5 and c.keypoints.shape == (5, 2, 3)
    assert Objects.cat([o, Objects.empty()]).masks is None
    full = o.masks.full(16, 16)
    assert full.shape == (3, 16, 16) and full[0, 2:6, 1:6].all() and full[0].sum() == 20 and full[2].sum() == 20
    with pytest.raises(ValueError, match="Objects.masks"):
        Objects.create(frame_idx=torch.tensor([0]), bbox=torch.zeros(1, 4), masks=m)
    with pytest.raises(ValueError, match="Objects.keypoints"):
        Objects.create(frame_idx=torch.tensor([0]), bbox=torch.zeros(1, 4), keypoints=torch.zeros(1, 2, 2))
    assert "masks=Masks(n=3" in repr(o)


def test_semantic_head_class_map_at_source_resolution():
    # logits at model input 64x64 letterboxed from a 128x64 source: content rows 16..48
    logits = torch.zeros(1, 2, 64, 64)
    logits[0, 1, :, 32:] = 5.0                    # right half of the input is class 1
    eng = FakeEngine(fn=lambda x: {"logits": logits}, input_size=(64, 64))
    out = Detector(eng, head="semantic", probabilities=True)(_batch(128, 64))
    cmap, probs = out.tensors["detect.class_map"], out.tensors["detect.class_probs"]
    assert cmap.shape == (1, 64, 128) and cmap.dtype == torch.int32 and len(out.objects) == 0
    assert (cmap[0, :, :63] == 0).all() and (cmap[0, :, 65:] == 1).all()
    assert probs.shape == (1, 64, 128, 2) and torch.allclose(probs.sum(-1), torch.ones(1, 64, 128))


def test_tracker_keeps_masks_and_keypoints_with_their_objects():
    from vidflow.stages.track import Tracker
    tr = Tracker()
    for i in range(3):
        bbox = torch.tensor([[10.0 + i, 10.0, 30.0 + i, 40.0], [50.0, 5.0, 70.0, 25.0 + i]])
        data = torch.zeros(2, 30, 20, dtype=torch.bool)
        data[0, :5] = True
        data[1, :, :3] = True
        objs = Objects.create(frame_idx=torch.zeros(2, dtype=torch.int64), bbox=bbox, confidence=torch.tensor([0.9, 0.8]),
                              masks=Masks(data, torch.ceil(bbox[:, :2]).long()), keypoints=bbox.reshape(2, 2, 2).repeat(1, 1, 2)[..., :3])
        b = Batch(images=torch.zeros(1, 3, 80, 100, dtype=torch.uint8), frames=(FrameInfo(0, i, i / 30, width=100, height=80),),
                  objects=objs)
        out = tr(b).objects
    assert (out.object_id >= 0).all()
    assert out.masks is not None and torch.equal(out.masks.data, data) and torch.equal(out.keypoints, objs.keypoints)
