"""The bridge's mask, keypoint and semantic-segmentation columns, both directions."""

from __future__ import annotations

import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.masks import Masks
from vidflow.translate import from_frames, tensors_from_frames, to_columns, to_frames


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    bbox = torch.tensor([[1.5, 2.0, 9.0, 8.0], [10.2, 0.0, 20.0, 5.5], [3.0, 3.0, 6.0, 7.0]])
    data = torch.rand(3, 6, 10, generator=g) > 0.5
    masks = Masks(data, torch.ceil(bbox[:, :2]).long())
    kp = torch.rand(3, 4, 3, generator=g) * 20
    objs = Objects.create(frame_idx=torch.tensor([0, 0, 1]), bbox=bbox, class_id=torch.tensor([0, 1, 2]),
                          masks=masks, keypoints=kp)
    cmap = torch.randint(0, 3, (2, 24, 32), generator=g, dtype=torch.int32)
    probs = torch.rand(2, 24, 32, 3, generator=g)
    return Batch(images=torch.zeros(2, 3, 24, 32, dtype=torch.uint8),
                 frames=tuple(FrameInfo(0, i, 0.0, width=32, height=24) for i in range(2)),
                 objects=objs, tensors={"seg.class_map": cmap, "seg.class_probs": probs},
                 labels={"objects": ("a", "b", "c")})


def test_frames_carry_masks_keypoints_and_class_maps_and_come_back():
    b = _batch()
    msgs = to_frames(b)
    m0, m1 = msgs
    assert m0["instance-segmentation"].shape == (2, 6, 10) and m0["instance-segmentation"].dtype == torch.float32
    assert m0["instance-segmentation-valid"].tolist() == [[1], [1]]
    assert m1["keypoints"].shape == (1, 4, 3)
    assert m0["seg-class-map"].shape == (24, 32) and m0["seg-class-map"].dtype == torch.int32
    assert m1["seg-class-probability-matrix"].shape == (24, 32, 3)
    back = from_frames(msgs)
    assert torch.equal(back.masks.data, b.objects.masks.data)
    assert torch.equal(back.masks.origin, b.objects.masks.origin)
    assert torch.equal(back.keypoints, b.objects.keypoints)
    t = tensors_from_frames(msgs, name="seg")
    assert torch.equal(t["seg.class_map"], b.tensors["seg.class_map"])
    assert torch.equal(t["seg.class_probs"], b.tensors["seg.class_probs"])


def test_columns_pad_masks_and_invalid_masks_read_as_empty():
    b = _batch()
    cols = to_columns(b)
    assert cols["instance-segmentation"].shape == (2, 2, 6, 10) and cols["keypoints"].shape == (2, 2, 4, 3)
    msgs = to_frames(b)
    msgs[0]["instance-segmentation-valid"] = torch.tensor([[0], [1]], dtype=torch.uint8)
    back = from_frames(msgs)
    assert not back.masks.data[0].any() and torch.equal(back.masks.data[1], b.objects.masks.data[1])
