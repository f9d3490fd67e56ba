"""``Detector``'s second half: a :class:`~vidflow.heads.base.HeadResult` in model-input pixels
-> ``Objects`` (boxes, keypoints, masks) and per-frame tensors in source pixels."""

from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch, Objects
from ..heads.base import HeadResult
from ..ops.geometry import Placement, clip_boxes, input_to_image

__all__ = ["build", "content_boxes"]


def content_boxes(batch: Batch, place: Placement, out_hw: tuple[int, int], in_hw: tuple[int, int]) -> torch.Tensor:
    """``[B, 4]``: where each frame's whole source lies in a model output map of ``out_hw``
    (h, w) pixels, for a model input of ``in_hw`` (prototypes, logits)."""
    b = len(batch)
    fi = torch.arange(b, device=batch.device)
    wh = batch.source_sizes()
    src = torch.cat([torch.zeros_like(wh), wh], 1)
    img = batch.source_to_image(src, fi)
    sx, sy = place.scale
    inp = img * img.new_tensor([sx, sy, sx, sy]) + img.new_tensor([place.left, place.top, place.left, place.top])
    gx, gy = out_hw[1] / in_hw[1], out_hw[0] / in_hw[0]
    return inp * inp.new_tensor([gx, gy, gx, gy])


def build(det: Any, batch: Batch, x: torch.Tensor, place: Placement,
          res: HeadResult) -> tuple[Objects, dict[str, torch.Tensor], dict[str, Any]]:
    fi = res.frame_idx
    sizes = batch.source_sizes()
    boxes = batch.image_to_source(input_to_image(res.bbox, place), fi)
    boxes = clip_boxes(boxes, sizes[fi])
    ok = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero().squeeze(1)
    fi, boxes = fi[ok], boxes[ok]
    extras = {k: v[ok] for k, v in res.extras.items()}
    labels: dict[str, Any] = {"objects": det._labels}
    keypoints = extras.pop("keypoints", None)
    if keypoints is not None:
        k, p, _ = keypoints.shape
        xy = keypoints[..., :2].reshape(-1, 2)
        fk = fi.repeat_interleave(p)
        m = batch.image_to_source(input_to_image(xy.repeat(1, 2), place), fk)[:, :2]
        m = torch.minimum(m.clamp(min=0), sizes[fk])
        keypoints = torch.cat([m.reshape(k, p, 2), keypoints[..., 2:].float()], -1)
        labels["keypoints"] = det.keypoint_names or _names(det.meta.get("kpt_names"), p)
        sk = det.skeleton or det.meta.get("skeleton")
        if sk:
            labels["skeleton"] = tuple(tuple(int(v) for v in e) for e in sk)
    masks = None
    coeffs = extras.pop("mask_coeffs", None)
    if coeffs is not None and det.masks:
        from ..ops.masks import assemble, proto_spans
        protos = res.frame_extras["protos"]
        content = content_boxes(batch, place, tuple(protos.shape[2:]), tuple(x.shape[2:]))
        masks = assemble(protos, coeffs, fi, boxes, proto_spans(content), sizes)
    tensors: dict[str, torch.Tensor] = {}
    logits = res.frame_extras.get("class_logits")
    if logits is not None:
        from ..heads.semantic import class_maps
        dims = {(f.width or batch.size[0], f.height or batch.size[1]) for f in batch.frames}
        if len(dims) != 1:
            raise ValueError(f"{det.name}: semantic class maps need frames of one source size per batch, "
                             f"got {sorted(dims)}")
        content = content_boxes(batch, place, tuple(logits.shape[2:]), tuple(x.shape[2:]))
        cmap, probs = class_maps(logits, content, dims.pop(), probabilities=det.probabilities)
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
