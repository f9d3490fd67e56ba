"""Regions of interest (DeepStream's ``nvdspreprocess``): the model sees only ROI crops.

``rois = {source_id: [[x1, y1, x2, y2], ...]}`` in **source pixels**. For a batch, every ROI of
every frame becomes one model image (frames of sources without ROIs: one model image of the
whole frame), all letterboxed to the model input together: :func:`plan` builds the crop table
(the only per-frame Python is looking up each frame's boxes, cached per batch composition),
:func:`letterbox_crops` samples all crops in one batched op (:func:`vidflow.ops.crops.crop_resize`
on the *letterbox-extended* box of each crop, so the sampling is exactly
:func:`vidflow.ops.geometry.letterbox`'s, then everything outside the ROI set to the pad value).

:class:`Views` maps model-input pixels back to source pixels, per model image: ``source =
origin + input * scale``, and says which source area each model image covers (``area``: the
ROI clipped to the frame, or the whole frame). The same class describes the plain full-frame
letterbox (:meth:`Views.full`), so the Detector maps boxes, keypoints and masks back the same way
with or without ROIs.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._const import const
from .crops import crop_resize
from .geometry import Placement

__all__ = ["RoiError", "parse_rois", "Views", "plan", "letterbox_crops", "merge_index"]

Box = tuple[int, int, int, int]
_WHOLE = float(1 << 30)     # "the whole frame": clipped to the source size on the device


class RoiError(ValueError):
    """A bad ``rois`` value. ``yaml_path`` is where inside the Detector's arguments
    (``rois.0[1]``), ``reason`` the message without it (the YAML loader joins the two)."""

    def __init__(self, reason: str, yaml_path: str) -> None:
        self.reason, self.yaml_path = reason, yaml_path
        super().__init__(f"{yaml_path}: {reason}")


def parse_rois(rois: Mapping[Any, Sequence[Sequence[int]]] | None) -> dict[str, tuple[Box, ...]]:
    """Check ``rois`` and return ``{str(source_id): ((x1, y1, x2, y2), ...)}``.

    Keys are source ids (int or str; ``0`` and ``"0"`` name the same source, so not both);
    values a non-empty list of boxes of 4 integers with ``0 <= x1 < x2`` and ``0 <= y1 < y2``."""
    if rois is None:
        return {}
    if not isinstance(rois, Mapping):
        raise RoiError(f"expected a mapping {{source_id: [[x1, y1, x2, y2], ...]}}, got {type(rois).__name__}", "rois")
    out: dict[str, tuple[Box, ...]] = {}
    for key, boxes in rois.items():
        where = f"rois.{key}"
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise RoiError(f"a source id is an int or a str, got {key!r}", where)
        if str(key) in out:
            raise RoiError(f"source {key!r} is given twice (as {key!r} and as {str(key)!r})", where)
        if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence) or len(boxes) == 0:
            raise RoiError(f"expected a non-empty list of [x1, y1, x2, y2] (leave the source out to use "
                           f"the whole frame), got {boxes!r}", where)
        parsed = []
        for i, b in enumerate(boxes):
            parsed.append(_box(b, f"{where}[{i}]"))
        out[str(key)] = tuple(parsed)
    return out


def _box(b: Any, where: str) -> Box:
    if isinstance(b, (str, bytes)) or not isinstance(b, Sequence) or len(b) != 4:
        raise RoiError(f"expected [x1, y1, x2, y2] in source pixels, got {b!r}", where)
    try:
        x1, y1, x2, y2 = (operator.index(v) for v in b)
    except TypeError:
        raise RoiError(f"expected 4 integers (source pixels), got {list(b)!r}", where) from None
    if min(x1, y1) < 0 or x2 <= x1 or y2 <= y1:
        raise RoiError(f"expected 0 <= x1 < x2 and 0 <= y1 < y2, got {[x1, y1, x2, y2]}", where)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Views:
    """How the model images of one batch relate to its frames (``n`` model images).

    ``frame [n]`` int64: the batch frame of each model image; ``area [n, 4]`` float32: the
    source-pixel box it covers (whole pixels); ``origin [n, 2]`` / ``scale [n, 2]``: source
    ``(x, y) = origin + input_xy * scale``; ``crops``: whether these are ROI crops (then objects
    of one frame may come from several model images)."""

    frame: torch.Tensor
    area: torch.Tensor
    origin: torch.Tensor
    scale: torch.Tensor
    crops: bool = False

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @classmethod
    def full(cls, place: Placement, regions: torch.Tensor, sizes: torch.Tensor) -> Views:
        """The plain path: the whole batch image letterboxed (``place``); ``regions [B, 4]`` each
        frame's region in the batch image, ``sizes [B, 2]`` its source size."""
        sx, sy = place.scale
        s = sizes / (regions[:, 2:] - regions[:, :2]).clamp(min=1e-6)        # source px per image px
        inv = const([1 / sx, 1 / sy], regions)
        off = const([-place.left / sx, -place.top / sy], regions)
        b = sizes.shape[0]
        area = torch.cat([torch.zeros_like(sizes), sizes], 1)
        return cls(torch.arange(b, device=sizes.device), area, (off - regions[:, :2]) * s, inv * s)

    def to_source(self, xy: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Points ``xy [N, 2]`` in model-input pixels of model images ``idx [N]`` -> source pixels."""
        return self.origin[idx] + xy * self.scale[idx]

    def clip(self, xy: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Clamp source points ``xy [N, 2]`` into the area of model images ``idx [N]``."""
        a = self.area[idx]
        return torch.maximum(torch.minimum(xy, a[:, 2:]), a[:, :2])

    def content(self, out_hw: Sequence[int], in_hw: Sequence[int], box: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, 4]``: where each model image's ``area`` (or ``box [n, 4]``, source pixels) lies in
        a model output map of ``out_hw`` (h, w) pixels, for a model input of ``in_hw``."""
        b = self.area if box is None else box
        o, s = self.origin.repeat(1, 2), self.scale.repeat(1, 2)
        g = const([out_hw[1] / in_hw[1], out_hw[0] / in_hw[0]], b).repeat(2)
        return (b - o) / s * g


def plan(frames: Sequence[Any], rois: Mapping[str, tuple[Box, ...]], device: torch.device,
         cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The crop table of a batch of ``frames`` (``FrameInfo``): ``(boxes [C, 4] source pixels,
    frame [C] int64)`` on ``device``, one row per ROI of each frame and one whole-frame row for
    each frame of a source without ROIs; ``None`` when no frame has ROIs (the plain path).
    ``cache``: a dict kept by the caller, keyed by the device and the batch's source ids."""
    ids = tuple(str(f.source_id) for f in frames)
    key = (str(device), ids)
    if cache is not None and key in cache:
        return cache[key]
    if not any(i in rois for i in ids):
        out = None
    else:
        boxes: list[tuple[float, ...]] = []
        frame: list[int] = []
        for i, sid in enumerate(ids):
            r = rois.get(sid, ((0.0, 0.0, _WHOLE, _WHOLE),))
            boxes.extend(r)
            frame.extend([i] * len(r))
        out = (torch.tensor(boxes, dtype=torch.float32).to(device, non_blocking=True),
               torch.tensor(frame, dtype=torch.int64).to(device, non_blocking=True))
    if cache is not None:
        if len(cache) >= 256:
            cache.clear()
        cache[key] = out
    return out


def letterbox_crops(images: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, regions: torch.Tensor,
                    sizes: torch.Tensor, size: tuple[int, int], *, pad_value: float = 114.0,
                    letterbox: bool = True) -> tuple[torch.Tensor, Views]:
    """Letterbox every crop ``boxes [C, 4]`` (source pixels of frame ``frame [C]``; clipped to the
    frame here) of the batch ``images [B, 3, H, W]`` to ``size=(W, H)`` in one batched op.

    ``regions [B, 4]`` / ``sizes [B, 2]``: each frame's region in the batch image and its source
    size (``Batch.regions()``, ``Batch.source_sizes()``). Returns ``(x [C, 3, H, W] float32
    0..255, views)``. Each crop is placed like Ultralytics' letterbox of an image of the crop's
    size (``r = min(W/w, H/h)``, rounded size, centred, ``pad_value`` border); ``letterbox=False``
    stretches each crop to the whole input instead."""
    W, H = int(size[0]), int(size[1])
    fs = sizes[frame]                                                  # [C, 2]
    area = torch.minimum(boxes.clamp(min=0), fs.repeat(1, 2))          # whole pixels (sizes are ints)
    reg = regions[frame]
    per = (reg[:, 2:] - reg[:, :2]) / fs                               # image px per source px
    lt = reg[:, :2] + area[:, :2] * per                                # the crop in image pixels
    wh = ((area[:, 2:] - area[:, :2]) * per).clamp(min=1e-3)
    dst = const([W, H], wh)
    if letterbox:
        r = torch.minimum(W / wh[:, 0], H / wh[:, 1])[:, None]
        new = torch.minimum(torch.round(wh * r).clamp(min=1), dst)      # [C, 2] letterboxed size
        pad = torch.round((dst - new) / 2 - 0.1).clamp(min=0)          # [C, 2] left, top
    else:
        new, pad = dst.expand_as(wh), torch.zeros_like(wh)
    s = new / wh                                                       # input px per image px
    ext0 = lt - pad / s                                                # image point at input (0, 0)
    ext = torch.cat([ext0, ext0 + dst / s], 1)
    x = crop_resize(images, ext, frame, (W, H), clip=False, method="gather")   # no float copy of the frames
    u = torch.arange(W, device=x.device, dtype=torch.float32)
    v = torch.arange(H, device=x.device, dtype=torch.float32)
    inside_u = (u[None] >= pad[:, 0:1]) & (u[None] < pad[:, 0:1] + new[:, 0:1])
    inside_v = (v[None] >= pad[:, 1:2]) & (v[None] < pad[:, 1:2] + new[:, 1:2])
    inside = inside_v[:, None, :, None] & inside_u[:, None, None, :]    # [C, 1, H, W]
    x = torch.where(inside, x, torch.full((), float(pad_value), dtype=x.dtype, device=x.device))
    src_per_in = 1 / (per * s)                                         # source px per input px
    origin = (ext0 - reg[:, :2]) / per
    return x, Views(frame, area, origin, src_per_in, crops=True)


def merge_index(boxes: torch.Tensor, scores: torch.Tensor, frame: torch.Tensor, classes: torch.Tensor,
                iou: float, *, agnostic: bool = False) -> torch.Tensor:
    """Objects of overlapping ROIs merged: per-frame (and per-class unless ``agnostic``) NMS at
    ``iou``. Returns the kept indices in their original order."""
    from .nms import batched_nms

    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    groups = frame * (1 << 24) + (0 if agnostic else classes)
    return torch.sort(batched_nms(boxes, scores, groups, iou)).values
