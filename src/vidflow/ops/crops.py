"""Cut all object crops of a batch out of the batch images and resize them, in one batched op.

``crop_resize`` samples each output pixel bilinearly at the centre of its bin inside the box
(torchvision ``roi_align(..., sampling_ratio=1, aligned=True)`` semantics). Two equivalent
implementations:

- ``"roi_align"``: ``torchvision.ops.roi_align`` on the float images (when torchvision imports);
- ``"gather"``: pure torch: the four neighbours of every output pixel are gathered straight from
  the uint8 images with one advanced-indexing op each and blended (no float copy of the frames).

Both are checked equal (tests/unit/test_crops.py). Boxes are clipped to the image first, so no
sample falls outside it.

``mask_fill`` then sets the pixels of each crop whose sample point lies outside the object's
instance mask (:class:`~vidflow.ops.masks.Masks`, box-cropped, source pixels) to a fill value,
for all crops at once (one gather of the masks at the crops' sample points, one ``where``).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from ._const import const
from .masks import Masks

__all__ = ["crop_resize", "mask_fill", "have_roi_align"]

Method = Literal["auto", "roi_align", "gather"]


@functools.cache
def have_roi_align() -> bool:
    """Whether ``torchvision.ops.roi_align`` can be imported."""
    try:
        from torchvision.ops import roi_align  # noqa: F401
    except Exception:  # ImportError, or a torchvision built for another torch
        return False
    return True


def _check(images: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor, size: tuple[int, int]) -> tuple[int, int]:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"crop_resize: images expected shape (B, 3, H, W), got {tuple(images.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"crop_resize: boxes expected shape (N, 4), got {tuple(boxes.shape)}")
    if frame_idx.shape != (boxes.shape[0],):
        raise ValueError(f"crop_resize: frame_idx expected shape ({boxes.shape[0]},), got {tuple(frame_idx.shape)}")
    try:
        w, h = (int(size[0]), int(size[1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"crop_resize: size expected (w, h), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"crop_resize: size expected positive (w, h), got {size!r}")
    return w, h


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor, size: tuple[int, int], *,
                method: Method = "auto", clip: bool = True) -> torch.Tensor:
    """Crops of ``images`` resized to ``size``.

    Args:
        images: ``[B,3,H,W]`` uint8 (or float) batch images, on any device.
        boxes: ``[N,4]`` xyxy in batch-image pixels (clipped to the image here).
        frame_idx: ``[N]`` int64, which image each box is in.
        size: output ``(w, h)``.
        method: ``"auto"`` (roi_align when torchvision imports, else gather), ``"roi_align"``, ``"gather"``.
        clip: clip the boxes to the image first (default). ``clip=False`` samples a box reaching
            beyond the image as it is (the ROI letterbox does, and overwrites those pixels); samples
            outside the image are edge values (gather) or 0 more than a pixel out (roi_align).

    Returns:
        ``[N,3,h,w]`` float32 on ``images.device``, values in the images' range (0..255 for uint8).
    """
    w, h = _check(images, boxes, frame_idx, size)
    if method not in ("auto", "roi_align", "gather"):
        raise ValueError(f"crop_resize: method must be one of 'auto', 'roi_align', 'gather', got {method!r}")
    dev = images.device
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, 3, h, w, dtype=torch.float32, device=dev)
    H, W = images.shape[2], images.shape[3]
    lim = const([W, H, W, H], device=dev, dtype=torch.float32)
    b = boxes.to(dev, torch.float32)
    if clip:
        b = torch.minimum(b.clamp(min=0), lim)
    fi = frame_idx.to(dev, torch.int64)
    if method == "auto":
        method = "roi_align" if have_roi_align() else "gather"
    if method == "roi_align":
        from torchvision.ops import roi_align

        rois = torch.cat([fi[:, None].to(torch.float32), b], 1)
        return roi_align(images.float(), rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return _gather(images, b, fi, w, h)


def _gather(images: torch.Tensor, b: torch.Tensor, fi: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Pure-torch bilinear sampler, same sample points and edge clamping as ``roi_align``."""
    dev = images.device
    H, W = images.shape[2], images.shape[3]
    jx = torch.arange(w, dtype=torch.float32, device=dev) + 0.5
    jy = torch.arange(h, dtype=torch.float32, device=dev) + 0.5
    xs = (b[:, 0:1] + jx * ((b[:, 2:3] - b[:, 0:1]) / w) - 0.5).clamp(0, W - 1)  # [N,w] pixel-index coords
    ys = (b[:, 1:2] + jy * ((b[:, 3:4] - b[:, 1:2]) / h) - 0.5).clamp(0, H - 1)  # [N,h]
    x0, y0 = xs.floor(), ys.floor()
    fx, fy = (xs - x0)[:, None, :, None], (ys - y0)[:, :, None, None]  # [N,1,w,1], [N,h,1,1]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    n = fi[:, None, None]

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:  # -> [N,h,w,3] float
        return images[n, :, yy[:, :, None], xx[:, None, :]].float()

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bot * fy).permute(0, 3, 1, 2).contiguous()


def mask_fill(crops: torch.Tensor, masks: Masks, rows: torch.Tensor, boxes: torch.Tensor,
              fill: float | tuple[float, float, float] = 114.0) -> torch.Tensor:
    """``crops`` with every pixel outside its object's mask set to ``fill``.

    Args:
        crops: ``[R,3,h,w]`` float crops (:func:`crop_resize`) of the boxes ``boxes``.
        masks: the objects' masks (``Objects.masks``); crop ``r`` is of object ``rows[r]``.
        rows: ``[R]`` int64 positions in ``masks``.
        boxes: ``[R,4]`` xyxy of each crop in **source** pixels (the frame the masks are in).
        fill: the value (or one per channel) of the pixels outside, in the crops' range
            (0..255 for crops of uint8 images; 114: the letterbox grey).

    A crop pixel is inside when its sample point (the centre of its bin in the box, as
    :func:`crop_resize` samples it) falls on a True pixel of the mask (nearest pixel). Returns a
    new tensor on ``crops.device``; no host sync.
    """
    r, _, h, w = crops.shape
    if rows.shape != (r,) or boxes.shape != (r, 4):
        raise ValueError(f"mask_fill: rows [{r}] and boxes [{r}, 4] expected, got {tuple(rows.shape)}, "
                         f"{tuple(boxes.shape)}")
    dev = crops.device
    fv = torch.as_tensor(fill, dtype=crops.dtype, device=dev).reshape(-1)
    if fv.numel() not in (1, 3):
        raise ValueError(f"mask_fill: fill expected one value or three (one per channel), got {fill!r}")
    fv = fv.reshape(1, -1, 1, 1)
    if r == 0:
        return crops.clone()
    data = masks.data.to(dev)
    mh, mw = data.shape[1], data.shape[2]
    if mh == 0 or mw == 0:
        return fv.expand_as(crops).clone()
    idx = rows.to(dev, torch.int64)
    b = boxes.to(dev, torch.float32)
    org = masks.origin.to(dev)[idx]                                                  # [R, 2]
    jx = torch.arange(w, dtype=torch.float32, device=dev) + 0.5
    jy = torch.arange(h, dtype=torch.float32, device=dev) + 0.5
    xs = torch.floor(b[:, 0:1] + jx * ((b[:, 2:3] - b[:, 0:1]) / w)).long() - org[:, 0:1]   # [R, w] mask column
    ys = torch.floor(b[:, 1:2] + jy * ((b[:, 3:4] - b[:, 1:2]) / h)).long() - org[:, 1:2]   # [R, h] mask row
    ok_x, ok_y = (xs >= 0) & (xs < mw), (ys >= 0) & (ys < mh)
    on = data[idx[:, None, None], ys.clamp(0, mh - 1)[:, :, None], xs.clamp(0, mw - 1)[:, None, :]]  # [R, h, w]
    on = on & ok_y[:, :, None] & ok_x[:, None, :]
    return torch.where(on[:, None], crops, fv)
