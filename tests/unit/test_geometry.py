"""Letterbox / resize / normalise. The reference is an independent numpy re-implementation of
OpenCV's ``resize(INTER_LINEAR)`` for uint8 (its 11-bit fixed-point weights, half-pixel source
coordinates clamped at the borders) plus ``copyMakeBorder(114)``; the GPU test compares with
OpenCV itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidflow.ops.geometry import (
    clip_boxes,
    input_to_image,
    letterbox,
    letterbox_placement,
    normalize,
    preprocess,
    resize,
)


def cv2_linear_u8(img: np.ndarray, dw: int, dh: int) -> np.ndarray:
    """OpenCV INTER_LINEAR for uint8 HxWxC: weights quantised to 2048, rounding (+2^21) >> 22."""
    h, w = img.shape[:2]

    def taps(n_dst: int, n_src: int):
        scale = n_src / n_dst
        f = (np.arange(n_dst) + 0.5) * scale - 0.5
        i0 = np.floor(f).astype(np.int64)
        a = f - i0
        a[i0 < 0] = 0
        i0[i0 < 0] = 0
        hi = i0 >= n_src - 1
        a[hi] = 0
        i0[hi] = n_src - 1
        i1 = np.minimum(i0 + 1, n_src - 1)
        w1 = np.round(a * 2048).astype(np.int64)
        return i0, i1, 2048 - w1, w1

    x0, x1, wx0, wx1 = taps(dw, w)
    y0, y1, wy0, wy1 = taps(dh, h)
    src = img.astype(np.int64)
    rows = src[:, x0] * wx0[None, :, None] + src[:, x1] * wx1[None, :, None]   # [h, dw, C] * 2048
    out = rows[y0] * wy0[:, None, None] + rows[y1] * wy1[:, None, None]        # * 2048^2
    return ((out + (1 << 21)) >> 22).clip(0, 255).astype(np.uint8)


def ref_letterbox(img: np.ndarray, W: int, H: int) -> np.ndarray:
    h, w = img.shape[:2]
    r = min(W / w, H / h)
    nw, nh = int(round(w * r)), int(round(h * r))
    rs = cv2_linear_u8(img, nw, nh) if (nw, nh) != (w, h) else img
    top, left = int(round((H - nh) / 2 - 0.1)), int(round((W - nw) / 2 - 0.1))
    out = np.full((H, W, 3), 114, np.uint8)
    out[top:top + nh, left:left + nw] = rs
    return out


@pytest.mark.parametrize("src,dst", [((640, 480), (640, 640)), ((1280, 720), (640, 640)), ((333, 517), (320, 256)),
                                     ((100, 60), (320, 320)), ((640, 640), (640, 640)), ((64, 48), (48, 64))])
def test_letterbox_matches_opencv_reference(src, dst):
    g = torch.Generator().manual_seed(sum(src) + sum(dst))
    w, h = src
    imgs = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=g)
    imgs[:, :, h // 4:h // 2, : w // 3] = 37  # flat areas and hard edges as well as noise
    out, p = letterbox(imgs, dst)
    assert out.shape == (2, 3, dst[1], dst[0]) and out.dtype == torch.uint8
    for k in range(2):
        ref = ref_letterbox(imgs[k].permute(1, 2, 0).numpy(), *dst)
        d = np.abs(out[k].permute(1, 2, 0).numpy().astype(int) - ref.astype(int))
        assert (d <= 1).mean() >= 0.99, f"{(d <= 1).mean():.4f} within 1 LSB"
        assert d.max() <= 2
        assert (out[k, :, :p.top] == 114).all() and (out[k, :, :, :p.left] == 114).all()


def test_placement_matches_ultralytics_arithmetic():
    p = letterbox_placement((1920, 1080), (640, 640))
    assert p.new_size == (640, 360) and (p.left, p.top) == (0, 140)
    p = letterbox_placement((641, 480), (640, 640))   # odd remainder: extra pixel goes right/bottom
    assert p.new_size == (640, 479) and p.top == 80   # round(80.5 - 0.1) = 80
    with pytest.raises(ValueError, match="width, height"):
        letterbox_placement((0, 10), (640, 640))


def test_box_mapping_round_trip():
    p = letterbox_placement((1920, 1080), (640, 640))
    boxes = torch.tensor([[0.0, 0.0, 1920.0, 1080.0], [100.0, 200.0, 300.0, 400.0]])
    sx, sy = p.scale
    to_input = boxes * torch.tensor([sx, sy, sx, sy]) + torch.tensor([p.left, p.top, p.left, p.top])
    assert torch.allclose(input_to_image(to_input, p), boxes, atol=1e-3)
    clipped = clip_boxes(torch.tensor([[-5.0, -1.0, 2000.0, 50.0]]), torch.tensor([[1920.0, 1080.0]]))
    assert clipped.tolist() == [[0.0, 0.0, 1920.0, 50.0]]


def test_resize_and_normalize():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6).to(torch.uint8)
    out, p = resize(x, (3, 2))
    assert out.shape == (2, 3, 2, 3) and p.scale == (0.5, 0.5)
    same, _ = resize(x, (6, 4))
    assert torch.equal(same, x)
    img = torch.zeros(1, 3, 1, 1)
    img[0, :, 0, 0] = torch.tensor([255.0, 0.0, 51.0])
    assert normalize(img)[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert normalize(img, color="bgr")[0, :, 0, 0].tolist() == pytest.approx([0.2, 0.0, 1.0])
    n = normalize(img, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert n[0, :, 0, 0].tolist() == pytest.approx([1.0, -2.0, -0.6])
    assert normalize(img, dtype=torch.float16).dtype == torch.float16
    assert img[0, :, 0, 0].tolist() == [255.0, 0.0, 51.0]  # input untouched
    with pytest.raises(ValueError, match="rgb"):
        normalize(img, color="yuv")


def test_preprocess_is_one_batched_call():
    imgs = torch.randint(0, 256, (4, 3, 48, 64), dtype=torch.uint8)
    x, p = preprocess(imgs, (32, 32))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    lb, _ = letterbox(imgs, (32, 32), dtype=torch.float32)
    assert torch.allclose(x * 255, lb, atol=1e-3)
    assert torch.allclose(x[:, :, 0, 0], torch.full((4, 3), 114 / 255))  # pad row
    with pytest.raises(ValueError, match="letterbox"):
        preprocess(imgs, (32, 32), mode="crop")
