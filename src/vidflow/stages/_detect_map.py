"""``Detector``'s second half: a :class:`~vidflow.heads.base.HeadResult` in model-input pixels
-> ``Objects`` (boxes, keypoints, masks) and per-frame tensors in source pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..batch import Batch, Objects
from ..heads.base import HeadResult
from ..ops._const import const
from ..ops.roi import Views, merge_index

__all__ = ["build"]


def build(det: Any, batch: Batch, x: torch.Tensor, views: Views,
          res: HeadResult) -> tuple[Objects, dict[str, torch.Tensor], dict[str, Any]]:
    """``res`` indexes model images (``views``: the batch's frames, or its ROI crops) -> objects
    of the batch's frames in source pixels, clipped to the area each model image covers (the
    frame, or the ROI); with ROI crops, objects of overlapping ROIs are merged (per-frame NMS)."""
    mi = res.frame_idx
    n = mi.shape[0]
    corners = views.to_source(res.bbox.reshape(-1, 2), mi.repeat_interleave(2))
    boxes = views.clip(corners, mi.repeat_interleave(2)).reshape(n, 4)
    ok = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero().squeeze(1)
    if views.crops:
        keep = merge_index(boxes[ok], res.confidence[ok], views.frame[mi[ok]], res.class_id[ok], det.iou,
                           agnostic=det.agnostic)
        ok = ok[keep]
    mi, boxes = mi[ok], boxes[ok]
    fi = views.frame[mi]
    extras = {k: v[ok] for k, v in res.extras.items()}
    labels: dict[str, Any] = {"objects": det._labels}
    keypoints = extras.pop("keypoints", None)
    if keypoints is not None:
        k, p, _ = keypoints.shape
        mk = mi.repeat_interleave(p)
        m = views.clip(views.to_source(keypoints[..., :2].reshape(-1, 2).float(), mk), mk)
        keypoints = torch.cat([m.reshape(k, p, 2), keypoints[..., 2:].float()], -1)
        labels["keypoints"] = det.keypoint_names or _names(det.meta.get("kpt_names"), p)
        sk = det.skeleton or det.meta.get("skeleton")
        if sk:
            labels["skeleton"] = tuple(tuple(int(v) for v in e) for e in sk)
    masks = None
    coeffs = extras.pop("mask_coeffs", None)
    if coeffs is not None and det.makes_masks:
        from ..ops.masks import Masks, assemble, proto_spans
        protos = res.frame_extras["protos"]
        content = views.content(tuple(protos.shape[2:]), tuple(x.shape[2:]))
        # each model image's area is a source of its own (whole pixels): masks in area pixels,
        # then moved to the frame
        a0 = views.area[:, :2]
        local = boxes - a0[mi].repeat(1, 2)
        made = assemble(protos, coeffs, mi, local, proto_spans(content), views.area[:, 2:] - a0)
        masks = Masks(made.data, made.origin + a0[mi].round().long()) if views.crops else made
    tensors: dict[str, torch.Tensor] = {}
    logits = res.frame_extras.get("class_logits")
    if logits is not None:
        from ..heads.semantic import class_maps
        dims = {(f.width or batch.size[0], f.height or batch.size[1]) for f in batch.frames}
        if len(dims) != 1:
            raise ValueError(f"{det.name}: semantic class maps need frames of one source size per batch, "
                             f"got {sorted(dims)}")
        size = dims.pop()
        if views.crops:
            cmap, probs = semantic_maps(logits, views, tuple(x.shape[2:]), size, len(batch),
                                        probabilities=det.probabilities)
        else:
            content = views.content(tuple(logits.shape[2:]), tuple(x.shape[2:]))
            cmap, probs = class_maps(logits, content, size, probabilities=det.probabilities)
        tensors[f"{det.name}.class_map"] = cmap
        if probs is not None:
            tensors[f"{det.name}.class_probs"] = probs
    attrs = {f"{det.name}.{k}": v for k, v in extras.items()}
    objs = Objects.create(frame_idx=fi, bbox=boxes, confidence=res.confidence[ok], class_id=res.class_id[ok],
                          attrs=attrs, masks=masks, keypoints=keypoints)
    return objs, tensors, labels


def _names(meta_names: Any, p: int) -> tuple[str, ...]:
    if isinstance(meta_names, dict):
        try:
            return tuple(str(meta_names[k]) for k in sorted(meta_names, key=int))
        except (TypeError, ValueError):
            pass
    if isinstance(meta_names, (list, tuple)) and len(meta_names) == p:
        return tuple(str(n) for n in meta_names)
    return tuple(str(i) for i in range(p))


def semantic_maps(logits: torch.Tensor, views: Views, in_hw: Sequence[int], size: tuple[int, int], frames: int, *,
                  probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class maps of ROI crops -> one map per frame at source resolution ``size=(W, H)``: each
    crop's per-class probabilities cover its ROI; where ROIs overlap, the larger probability of
    each class wins; pixels outside every ROI are class ``-1`` (probabilities 0)."""
    from ..heads.semantic import class_maps

    w, h = size
    n = len(views)
    whole = const([0.0, 0.0, float(w), float(h)], views.area).expand(n, 4)
    content = views.content(tuple(logits.shape[2:]), in_hw, box=whole)   # the frame in each crop's logits
    _, probs = class_maps(logits, content, size, probabilities=True)     # [n, H, W, C]
    assert probs is not None
    a = views.area.to(probs.device)
    xs = torch.arange(w, device=probs.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=probs.device, dtype=torch.float32) + 0.5
    inside = (((ys[None] >= a[:, 1:2]) & (ys[None] < a[:, 3:4]))[:, :, None]
              & ((xs[None] >= a[:, 0:1]) & (xs[None] < a[:, 2:3]))[:, None, :])      # [n, H, W]
    probs = torch.where(inside[..., None], probs, torch.full((), -1.0, device=probs.device))
    out = torch.full((frames, h, w, probs.shape[3]), -1.0, device=probs.device)
    flat = probs.reshape(n, -1)
    out.view(frames, -1).scatter_reduce_(0, views.frame.to(probs.device)[:, None].expand_as(flat), flat, "amax")
    best, cls = out.max(-1)
    cmap = torch.where(best >= 0, cls, torch.full_like(cls, -1)).to(torch.int32)
    return cmap, (out.clamp_(min=0) if probabilities else None)
