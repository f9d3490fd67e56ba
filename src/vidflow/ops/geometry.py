"""Model-input geometry: letterbox (Ultralytics-compatible), plain resize, normalisation.

Every function works on a whole batch at once, on the batch's device: a handful of kernels per
batch, never a Python loop over frames.

Letterbox follows Ultralytics' ``LetterBox(auto=False)``: ``r = min(W/w, H/h)``, the image is
resized to ``(round(w*r), round(h*r))`` with bilinear interpolation (half-pixel centres, no
antialias: the same sampling as OpenCV's ``INTER_LINEAR``), centred, and the border filled
with 114 (left/top = ``round(d/2 - 0.1)``, so an odd remainder goes right/bottom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ._const import const

__all__ = ["Placement", "letterbox_placement", "letterbox", "resize", "normalize", "preprocess",
           "input_to_image", "clip_boxes"]

Color = Literal["rgb", "bgr"]


@dataclass(frozen=True)
class Placement:
    """Where a ``(w, h)`` image lands inside a ``(W, H)`` model input.

    The resized image covers input pixels ``[left, left+new_w) x [top, top+new_h)``;
    ``sx = new_w / w`` and ``sy = new_h / h`` are the per-axis scales.
    """

    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    new_size: tuple[int, int]
    left: int
    top: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.new_size[0] / self.src_size[0], self.new_size[1] / self.src_size[1]


def _size(size: Sequence[int] | int, what: str = "size") -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f"{what}: expected (width, height) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def letterbox_placement(src_size: Sequence[int], dst_size: Sequence[int] | int) -> Placement:
    """Ultralytics' letterbox arithmetic for an image of ``src_size=(w, h)`` into ``dst_size``."""
    w, h = _size(src_size, "src_size")
    W, H = _size(dst_size, "dst_size")
    r = min(W / w, H / h)
    nw, nh = int(round(w * r)), int(round(h * r))
    nw, nh = min(max(nw, 1), W), min(max(nh, 1), H)
    left = int(round((W - nw) / 2 - 0.1))
    top = int(round((H - nh) / 2 - 0.1))
    return Placement((w, h), (W, H), (nw, nh), max(left, 0), max(top, 0))


def _resize_float(images: torch.Tensor, new_size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """``[B,3,h,w]`` (any dtype) -> ``[B,3,nh,nw]`` of ``dtype`` (values still 0..255)."""
    x = images.to(dtype)
    if (x.shape[3], x.shape[2]) != new_size:
        if x.device.type == "cpu" and dtype == torch.float16:  # no CPU half bilinear in older torch
            x = F.interpolate(x.float(), size=(new_size[1], new_size[0]), mode="bilinear",
                              align_corners=False, antialias=False).to(dtype)
        else:
            x = F.interpolate(x, size=(new_size[1], new_size[0]), mode="bilinear",
                              align_corners=False, antialias=False)
    return x


def _finish(x: torch.Tensor, out_dtype: torch.dtype | None) -> torch.Tensor:
    if out_dtype is None or out_dtype == x.dtype:
        return x
    if out_dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8)
    return x.to(out_dtype)


def letterbox(images: torch.Tensor, size: Sequence[int] | int, *, pad_value: float = 114.0,
              dtype: torch.dtype | None = None) -> tuple[torch.Tensor, Placement]:
    """Letterbox a batch ``images [B,3,h,w]`` (uint8 or float, values 0..255) to ``size=(W,H)``.

    Returns ``(out [B,3,H,W], placement)``; ``out`` has ``dtype`` (default: uint8 in -> uint8 out,
    rounded; float in -> same float), values 0..255, border = ``pad_value``.
    """
    _check_images(images)
    W, H = _size(size)
    p = letterbox_placement((images.shape[3], images.shape[2]), (W, H))
    work = images.dtype if images.is_floating_point() else torch.float32
    x = _resize_float(images, p.new_size, work)
    if p.new_size != (W, H):
        out = torch.full((images.shape[0], 3, H, W), float(pad_value), dtype=work, device=images.device)
        out[:, :, p.top:p.top + p.new_size[1], p.left:p.left + p.new_size[0]] = x
        x = out
    return _finish(x, dtype or images.dtype), p


def resize(images: torch.Tensor, size: Sequence[int] | int, *,
           dtype: torch.dtype | None = None) -> tuple[torch.Tensor, Placement]:
    """Plain bilinear resize (aspect not kept) of ``images [B,3,h,w]`` to ``size=(W,H)``."""
    _check_images(images)
    W, H = _size(size)
    p = Placement((images.shape[3], images.shape[2]), (W, H), (W, H), 0, 0)
    work = images.dtype if images.is_floating_point() else torch.float32
    return _finish(_resize_float(images, (W, H), work), dtype or images.dtype), p


def normalize(x: torch.Tensor, *, scale: float = 1 / 255, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, color: Color = "rgb",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B,3,H,W]`` 0..255 RGB -> model input: ``((x * scale) - mean) / std`` in channel order
    ``color`` ("rgb" | "bgr"; mean/std are given in that order), cast to ``dtype``."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color: expected 'rgb' or 'bgr', got {color!r}")
    y = x.to(dtype) if x.dtype != dtype else x
    if color == "bgr":
        y = y.flip(1)
    if mean is None and std is None:
        return y * scale if y is x else y.mul_(scale)     # never writes into the caller's tensor
    m = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32).view(1, 3, 1, 1)
    if m.numel() != 3 or s.numel() != 3:
        raise ValueError(f"mean/std: expected 3 values each, got {mean!r} / {std!r}")
    # (x*scale - m)/s == x*(scale/s) + (-m/s): one fused multiply-add
    a = (scale / s).to(y.device, y.dtype, non_blocking=True)     # (no stream sync: ops/_const.py)
    b = (-m / s).to(y.device, y.dtype, non_blocking=True)
    return torch.addcmul(b, y, a)


def preprocess(images: torch.Tensor, size: Sequence[int] | int, *, mode: Literal["letterbox", "resize"] = "letterbox",
               pad_value: float = 114.0, scale: float = 1 / 255, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, color: Color = "rgb",
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, Placement]:
    """uint8 RGB ``[B,3,h,w]`` -> model input ``[B,3,H,W]`` of ``dtype`` plus its placement.

    Resizes in float32 (float16 on CUDA when ``dtype`` is float16), then normalises."""
    if mode not in ("letterbox", "resize"):
        raise ValueError(f"mode: expected 'letterbox' or 'resize', got {mode!r}")
    work = torch.float16 if (dtype == torch.float16 and images.is_cuda) else torch.float32
    fn = letterbox if mode == "letterbox" else resize
    kw = {"pad_value": pad_value} if mode == "letterbox" else {}
    x, p = fn(images.to(work) if not images.is_floating_point() else images, size, dtype=work, **kw)
    return normalize(x, scale=scale, mean=mean, std=std, color=color, dtype=dtype), p


def input_to_image(boxes: torch.Tensor, p: Placement) -> torch.Tensor:
    """Map xyxy boxes ``[N,4]`` from model-input pixels back to the pre-letterbox image pixels."""
    sx, sy = p.scale
    off = const([p.left, p.top, p.left, p.top], boxes)
    inv = const([1 / sx, 1 / sy, 1 / sx, 1 / sy], boxes)
    return (boxes - off) * inv


def clip_boxes(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Clip xyxy ``boxes [N,4]`` to ``[0, w] x [0, h]`` with per-box ``sizes [N,2]`` (w, h)."""
    hi = sizes.to(boxes.dtype).repeat(1, 2)
    return torch.minimum(boxes.clamp(min=0), hi)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (B, 3, H, W), got {got}")
