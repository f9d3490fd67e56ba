"""vidflow.translate: per-frame columns (names/dtypes/shapes of DESIGN.md) and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidflow.batch import TRACKER_BBOX, Batch, FrameInfo, Objects
from vidflow.translate import (
    decode_labels,
    eos_message,
    from_frames,
    is_eos,
    objects_from_columns,
    to_columns,
    to_frames,
)


def make_batch(*, shuffle: bool = False, b: int = 3, counts=(2, 0, 3)) -> Batch:
    g = torch.Generator().manual_seed(0)
    n = sum(counts)
    fi = torch.repeat_interleave(torch.arange(b), torch.tensor(counts))
    xy = torch.rand(n, 2, generator=g) * 50
    bbox = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1)
    objs = Objects.create(
        frame_idx=fi, bbox=bbox, confidence=torch.rand(n, generator=g),
        class_id=torch.tensor([0, 2, 1, 7, 0][:n]), object_id=torch.arange(n) * 3 - 1,
        tracker_confidence=torch.rand(n, generator=g),
        attrs={TRACKER_BBOX: bbox + 1, "color.label": torch.tensor([1, 0, 2, 1, 0][:n]),
               "color.confidence": torch.rand(n, generator=g),
               "attr.label": torch.randint(0, 3, (n, 2), generator=g),
               "embed.vector": torch.randn(n, 16, generator=g).half()})
    if shuffle:
        objs = objs[torch.randperm(n, generator=g)]
    images = torch.randint(0, 255, (b, 3, 24, 32), dtype=torch.uint8, generator=g)
    frames = tuple(FrameInfo(source_id=i, frame_num=10 + i, pts=0.5 * i, ntp_ns=1000 + i, width=64, height=48)
                   for i in range(b))
    return Batch(images=images, frames=frames, objects=objs,
                 tensors={"detect.output0": torch.randn(b, 7, 5), "detect.input": torch.rand(b, 3, 8, 8).half()},
                 labels={"objects": ("box", "disc", "triangle"), "color": ("red", "green", "bleu-ü")})


def test_columns_match_design_table():
    batch = make_batch()
    msgs = to_frames(batch)
    assert len(msgs) == 3
    m = msgs[0]
    n = 2
    expect = {  # column: (dtype, shape)
        "bbox": (torch.float32, (n, 4)), "detector-bbox": (torch.float32, (n, 4)),
        "tracker-bbox": (torch.float32, (n, 4)), "class-id": (torch.int64, (n, 1)),
        "confidence": (torch.float32, (n, 1)), "object-id": (torch.int64, (n, 1)),
        "tracker-confidence": (torch.float32, (n, 1)), "object-label": (torch.uint8, (n, len("triangle"))),
        "classification-color": (torch.int64, (n, 1, 1)), "classification-confidence-color": (torch.float32, (n, 1, 1)),
        "classification-label-color": (torch.uint8, (n, 1, len("bleu-ü".encode()))),
        "classification-attr": (torch.int64, (n, 2, 1)),
        "infer-tensor-object-embed.vector": (torch.float16, (n, 16)),
        "infer-tensor-frame-detect.output0": (torch.float32, (7, 5)),
        "infer-tensor-frame-detect.input": (torch.float16, (3, 8, 8)),
        "frame": (torch.uint8, (3, 24, 32)),
    }
    for k, (dt, shape) in expect.items():
        assert m[k].dtype == dt, k
        assert tuple(m[k].shape) == shape, k
    assert "classification-label-attr" not in m  # no labels["attr"]
    assert "classification-confidence-attr" not in m
    assert (m["source-id"], m["frame-num"], m["pts"], m["ntp"]) == (0, 10, 0.0, 1000)
    assert (m["source-frame-width"], m["source-frame-height"]) == (64, 48)
    assert msgs[1]["bbox"].shape == (0, 4) and msgs[1]["object-label"].shape == (0, 8)
    assert decode_labels(m["object-label"]) == ["box", "triangle"]
    assert decode_labels(msgs[2]["object-label"]) == ["disc", "", "box"]  # class 7 has no name
    assert decode_labels(msgs[2]["classification-label-color"]) == ["bleu-ü", "green", "red"]
    assert m["tracker-bbox"].equal(m["bbox"] + 1)


def test_views_are_zero_copy_when_ordered():
    batch = make_batch()
    m = to_frames(batch)[2]
    assert m["frame"].data_ptr() == batch.images[2].data_ptr()
    assert m["bbox"].data_ptr() == batch.objects.bbox[2:].data_ptr()
    assert m["infer-tensor-frame-detect.output0"].data_ptr() == batch.tensors["detect.output0"][2].data_ptr()
    m["frame"][0, 0, 0] = 7  # an edit through the message is an edit of the batch image
    assert batch.images[2, 0, 0, 0] == 7


def _assert_objects_equal(a: Objects, b: Objects) -> None:
    for c in ("frame_idx", "bbox", "confidence", "class_id", "object_id", "tracker_confidence"):
        assert getattr(a, c).dtype == getattr(b, c).dtype, c
        assert torch.equal(getattr(a, c), getattr(b, c)), c
    assert sorted(a.attrs) == sorted(b.attrs)
    for k in a.attrs:
        assert a.attrs[k].dtype == b.attrs[k].dtype, k
        assert torch.equal(a.attrs[k], b.attrs[k]), k


@pytest.mark.parametrize("shuffle", [False, True])
def test_round_trip_exact(shuffle):
    batch = make_batch(shuffle=shuffle)
    back = from_frames(to_frames(batch))
    ref = batch.objects[torch.argsort(batch.objects.frame_idx, stable=True)]
    _assert_objects_equal(back, ref)


def test_round_trip_with_eos_and_numpy_columns():
    batch = make_batch()
    msgs = to_frames(batch)
    as_np = [{k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in m.items()} for m in msgs]
    eos = eos_message(1)
    assert is_eos(eos) and not is_eos(msgs[0]) and eos["source-id"] == 1
    back = from_frames([as_np[0], eos, *as_np[1:]])
    _assert_objects_equal(back, batch.objects)


def test_user_detector_feeds_objects():
    # a "detector" written as plain numpy: boxes + scores per frame, no Objects involved
    msgs = [{"bbox": np.array([[1, 2, 3, 4]], dtype=np.float64), "confidence": np.array([0.5])},
            {"bbox": np.zeros((0, 4), np.float32)},
            {"bbox": np.array([[5, 6, 7, 8], [0, 0, 1, 1]], np.float32), "confidence": np.array([0.9, 0.1]),
             "class-id": np.array([[2], [1]])}]
    with pytest.raises(ValueError, match="class-id"):
        from_frames(msgs)  # frame 0 has objects but no class-id
    msgs[0]["class-id"] = np.array([0])
    objs = from_frames(msgs)
    assert objs.frame_idx.tolist() == [0, 2, 2]
    assert objs.class_id.tolist() == [0, 2, 1] and objs.object_id.tolist() == [-1, -1, -1]
    assert objs.bbox.dtype == torch.float32 and objs.bbox[0].tolist() == [1, 2, 3, 4]
    one = objects_from_columns({"bbox": [[1, 1, 2, 2]], "object-id": [[4]]}, frame_idx=3)
    assert one.frame_idx.tolist() == [3] and one.object_id.tolist() == [4]
    with pytest.raises(ValueError, match="bbox"):
        objects_from_columns({"confidence": [1.0]})


def test_translators_add_columns():
    batch = make_batch()

    def area(b, i, msg):
        bb = msg["bbox"]
        msg["area"] = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])

    msgs = to_frames(batch, translators=[area, lambda b, i, m: m.__setitem__("idx", i)])
    assert [m["idx"] for m in msgs] == [0, 1, 2]
    assert msgs[0]["area"].shape == (2,)
    _assert_objects_equal(from_frames(msgs), batch.objects)  # extra columns are ignored on the way back


def test_to_columns_padded():
    batch = make_batch(shuffle=True)
    cols = to_columns(batch)
    assert cols["num_objects"].tolist() == [2, 0, 3]
    assert cols["bbox"].shape == (3, 3, 4) and cols["class-id"].shape == (3, 3, 1)
    assert cols["classification-attr"].shape == (3, 3, 2, 1)
    assert cols["infer-tensor-object-embed.vector"].shape == (3, 3, 16)
    assert cols["object-id"][1].eq(-1).all() and cols["bbox"][1].eq(0).all()
    msgs = to_frames(batch)
    for i, m in enumerate(msgs):
        k = int(cols["num_objects"][i])
        for name in ("bbox", "confidence", "object-id", "classification-color", "infer-tensor-object-embed.vector"):
            assert torch.equal(cols[name][i, :k], m[name]), name
    assert cols["frame-num"].tolist() == [10, 11, 12] and cols["source-id"] == (0, 1, 2)
    assert cols["frame"] is batch.images


def test_empty_batch():
    b = Batch(images=torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
              frames=(FrameInfo(0, 0, 0.0), FrameInfo(1, 0, 0.0)))
    msgs = to_frames(b)
    assert [m["bbox"].shape for m in msgs] == [(0, 4), (0, 4)]
    assert len(from_frames(msgs)) == 0
    assert to_columns(b)["bbox"].shape == (2, 0, 4)
