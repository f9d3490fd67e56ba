"""The supervision.Detections adapter (runs where supervision is installed)."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.masks import Masks

sv = pytest.importorskip("supervision")

from vidflow.interop.supervision import from_detections, to_detections  # noqa: E402


def test_round_trip_boxes_masks_classes_tracks():
    data = torch.zeros(2, 6, 8, dtype=torch.bool)
    data[0, 1:4, 2:6] = True
    data[1, 0:2, 0:3] = True
    bbox = torch.tensor([[10.0, 5.0, 18.0, 11.0], [0.5, 20.0, 4.0, 22.0]])
    objs = Objects.create(frame_idx=torch.tensor([0, 0]), bbox=bbox, class_id=torch.tensor([2, 0]),
                          object_id=torch.tensor([7, 9]), confidence=torch.tensor([0.9, 0.4]),
                          masks=Masks(data, torch.ceil(bbox[:, :2]).long()), keypoints=torch.rand(2, 3, 3))
    b = Batch(images=torch.zeros(1, 3, 32, 40, dtype=torch.uint8),
              frames=(FrameInfo(0, 0, 0.0, width=40, height=32),), objects=objs, labels={"objects": ("a", "b", "c")})
    d = to_detections(b)
    assert isinstance(d, sv.Detections) and len(d) == 2
    assert d.mask.shape == (2, 32, 40) and d.mask[0].sum() == 12
    assert d.tracker_id.tolist() == [7, 9] and d.class_id.tolist() == [2, 0]
    assert list(d.data["class_name"]) == ["c", "a"]
    back = from_detections(d)
    assert torch.equal(back.bbox, bbox) and back.object_id.tolist() == [7, 9]
    assert torch.equal(back.masks.full(40, 32), objs.masks.full(40, 32))
    assert torch.allclose(back.keypoints, objs.keypoints)
