"""Translucent instance masks and keypoints (with a skeleton) drawn into batch images on the
device, batched over objects (used by :class:`vidflow.ops.draw.Annotate`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..batch import Batch
from ._const import const
from .masks import Masks

__all__ = ["blend_masks", "keypoint_rects"]


def _affine(batch: Batch, fi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object: image = source * scale + offset (``[N,2]`` each)."""
    reg = batch.regions()[fi]
    scale = (reg[:, 2:] - reg[:, :2]) / batch.source_sizes()[fi]
    return scale, reg[:, :2]


def blend_masks(batch: Batch, masks: Masks, fi: torch.Tensor, colors: torch.Tensor, alpha: float = 0.45) -> None:
    """Blend each object's mask colour ``colors [N,3]`` uint8 into ``batch.images`` in place:
    every image pixel whose centre falls on a mask pixel (nearest source pixel). One tiny sync
    (the largest mask rectangle in image pixels)."""
    n = len(masks)
    if n == 0 or masks.data.shape[1] == 0 or masks.data.shape[2] == 0:
        return
    img = batch.images
    b, _, ih, iw = img.shape
    dev = img.device
    scale, off = _affine(batch, fi)
    mh, mw = masks.data.shape[1:]
    org = masks.origin.to(torch.float32)
    lo = torch.floor(org * scale + off)
    hi = torch.ceil((org + const([mw, mh], device=dev, dtype=org.dtype)) * scale + off)
    sw, sh = (hi - lo).max(0).values.long().clamp(min=1).tolist()
    xs = lo[:, 0, None] + torch.arange(sw, device=dev)                   # [N, sw] image columns
    ys = lo[:, 1, None] + torch.arange(sh, device=dev)                   # [N, sh] image rows
    mx = torch.floor((xs + 0.5 - off[:, 0, None]) / scale[:, 0, None]).long() - masks.origin[:, 0, None]
    my = torch.floor((ys + 0.5 - off[:, 1, None]) / scale[:, 1, None]).long() - masks.origin[:, 1, None]
    okx = (mx >= 0) & (mx < mw) & (xs >= 0) & (xs < iw)
    oky = (my >= 0) & (my < mh) & (ys >= 0) & (ys < ih)
    idx = torch.arange(n, device=dev)[:, None, None]
    on = masks.data[idx, my.clamp(0, mh - 1)[:, :, None], mx.clamp(0, mw - 1)[:, None, :]]
    on &= oky[:, :, None] & okx[:, None, :]
    k, r, c = on.nonzero(as_tuple=True)
    if k.numel() == 0:
        return
    f, y, x = fi[k], ys[k, r].long(), xs[k, c].long()
    px = img[f, :, y, x].float()                                          # [P,3]
    new = (px * (1 - alpha) + colors[k].float() * alpha).round().to(torch.uint8)
    img[f, :, y, x] = new


def keypoint_rects(batch: Batch, keypoints: torch.Tensor, fi: torch.Tensor, *, radius: int,
                   conf: float = 0.5, skeleton: Sequence[Sequence[int]] = (),
                   line: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Small squares for the keypoints (score > ``conf``) and dots along skeleton edges, in
    image pixels: (rects ``[M,4]``, frame ids ``[M]``, object index ``[M]``)."""
    n, p, _ = keypoints.shape
    dev = keypoints.device
    scale, off = _affine(batch, fi)
    xy = keypoints[..., :2] * scale[:, None] + off[:, None]                # [N,P,2]
    vis = keypoints[..., 2] > conf
    pts, obj, ok = [xy.reshape(-1, 2)], [torch.arange(n, device=dev).repeat_interleave(p)], [vis.reshape(-1)]
    rad = [torch.full((n * p,), float(radius), device=dev)]
    for a, bb in skeleton:
        if not (0 <= a < p and 0 <= bb < p):
            continue
        t = torch.linspace(0, 1, 24, device=dev)
        seg = xy[:, a, None] * (1 - t[None, :, None]) + xy[:, bb, None] * t[None, :, None]   # [N,24,2]
        pts.append(seg.reshape(-1, 2))
        obj.append(torch.arange(n, device=dev).repeat_interleave(24))
        ok.append((vis[:, a] & vis[:, bb]).repeat_interleave(24))
        rad.append(torch.full((n * 24,), float(line), device=dev))
    pts_t, obj_t, ok_t, rad_t = torch.cat(pts), torch.cat(obj), torch.cat(ok), torch.cat(rad)
    rects = torch.cat([pts_t - rad_t[:, None], pts_t + rad_t[:, None] + 1], 1)
    fid = torch.where(ok_t, fi[obj_t], torch.full_like(obj_t, -1))          # invisible -> off-canvas frame
    return rects, fid, obj_t
