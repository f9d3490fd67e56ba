"""Annotate draws translucent masks and keypoints (with the skeleton) on the device."""

from __future__ import annotations

import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.draw import PALETTE, Annotate
from vidflow.ops.masks import Masks


def _batch(scale: int = 1) -> Batch:
    data = torch.zeros(1, 20, 20, dtype=torch.bool)
    data[0, 5:15, 5:15] = True
    masks = Masks(data, torch.tensor([[40, 30]]))
    kp = torch.tensor([[[60.0, 30.0, 0.9], [60.0, 48.0, 0.9], [45.0, 40.0, 0.1]]])
    objs = Objects.create(frame_idx=torch.tensor([0]), bbox=torch.tensor([[40.0, 30.0, 80.0, 60.0]]),
                          class_id=torch.tensor([1]), masks=masks, keypoints=kp)
    h, w = 120 * scale, 160 * scale
    imgs = torch.full((1, 3, h, w), 100, dtype=torch.uint8)
    region = None if scale == 1 else (0.0, 0.0, float(w), float(h))
    return Batch(images=imgs, frames=(FrameInfo(0, 0, 0.0, width=160, height=120, region=region),), objects=objs,
                 labels={"objects": ("a", "b"), "skeleton": ((0, 1),)})


def test_masks_are_blended_and_keypoints_drawn():
    b = Annotate(labels=False, ids=False, thickness=1, alpha=0.5)(_batch())
    img = b.images[0]
    c = torch.tensor(PALETTE[1])
    inside = img[:, 40, 50]                                  # mask pixel (y=30+10, x=40+10)
    assert torch.equal(inside, ((100 + c) / 2).round().to(torch.uint8))
    assert img[:, 33, 43].tolist() == [100, 100, 100]          # in the box, outside the mask
    assert torch.equal(img[:, 30, 60], c.to(torch.uint8))     # keypoint 0 drawn opaque
    assert torch.equal(img[:, 39, 60], c.to(torch.uint8))     # on the skeleton edge 0-1
    assert img[:, 40, 45].tolist() != c.tolist()              # keypoint 2 below kpt_conf: not drawn


def test_masks_follow_the_region_when_the_image_is_scaled():
    b = Annotate(labels=False, ids=False, keypoints=False, thickness=1, alpha=1.0)(_batch(scale=2))
    img = b.images[0]
    c = torch.tensor(PALETTE[1], dtype=torch.uint8)
    assert torch.equal(img[:, 80, 100], c) and torch.equal(img[:, 2 * 44 + 1, 2 * 54 + 1], c)
    assert img[:, 2 * 34, 2 * 44].tolist() == [100, 100, 100]
