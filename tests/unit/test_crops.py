"""crop_resize: one batched op, equal to a per-crop grid_sample reference (and roi_align if present)."""

from __future__ import annotations

import pytest
import torch

from vidflow.ops.crops import crop_resize, have_roi_align


def reference(images: torch.Tensor, boxes: torch.Tensor, fi: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One ``grid_sample`` per crop, sampling bin centres (roi_align aligned=True, sampling_ratio=1)."""
    w, h = size
    H, W = images.shape[2:]
    out = []
    for b, f in zip(boxes, fi):
        x1, y1 = b[0].clamp(0, W), b[1].clamp(0, H)
        x2, y2 = b[2].clamp(0, W), b[3].clamp(0, H)
        gx = x1 + (torch.arange(w) + 0.5) * (x2 - x1) / w
        gy = y1 + (torch.arange(h) + 0.5) * (y2 - y1) / h
        yy, xx = torch.meshgrid(2 * gy / H - 1, 2 * gx / W - 1, indexing="ij")
        grid = torch.stack([xx, yy], -1)[None]
        out.append(torch.nn.functional.grid_sample(images[f:f + 1].float(), grid, mode="bilinear",
                                                   padding_mode="border", align_corners=False)[0])
    return torch.stack(out)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 37, 53), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[3.2, 4.1, 30.5, 20.7], [0, 0, 53, 37], [-5, -3, 10, 60], [10, 10, 11, 11.5],
                          [40.7, 30.2, 52.9, 36.9], [20, 5, 21, 35]])
    fi = torch.tensor([0, 1, 1, 2, 0, 2])
    return images, boxes, fi


@pytest.mark.parametrize("size", [(16, 12), (7, 31), (1, 1)])
def test_gather_equals_grid_sample_reference(data, size):
    images, boxes, fi = data
    got = crop_resize(images, boxes, fi, size, method="gather")
    assert got.shape == (6, 3, size[1], size[0]) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(images, boxes, fi, size), atol=2e-3, rtol=0)


def test_roi_align_equals_gather_when_importable(data):
    if not have_roi_align():
        pytest.skip("torchvision not importable here (the gather path is the one in use)")
    images, boxes, fi = data
    torch.testing.assert_close(crop_resize(images, boxes, fi, (16, 12), method="roi_align"),
                               crop_resize(images, boxes, fi, (16, 12), method="gather"), atol=2e-3, rtol=0)


def test_identity_crop_returns_the_pixels():
    images = torch.arange(2 * 3 * 8 * 10, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(2, 3, 8, 10)
    got = crop_resize(images, torch.tensor([[2.0, 1.0, 7.0, 5.0]]), torch.tensor([1]), (5, 4))
    assert torch.equal(got[0], images[1, :, 1:5, 2:7].float())


def test_empty_and_bad_inputs(data):
    images, boxes, fi = data
    assert crop_resize(images, boxes[:0], fi[:0], (8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="method"):
        crop_resize(images, boxes, fi, (8, 8), method="nearest")
    with pytest.raises(ValueError, match="size"):
        crop_resize(images, boxes, fi, (0, 8))
    with pytest.raises(ValueError, match="boxes"):
        crop_resize(images, boxes[:, :3], fi, (8, 8))
    with pytest.raises(ValueError, match="frame_idx"):
        crop_resize(images, boxes, fi[:2], (8, 8))
