"""The previous (wave 1) YOLO decoder, kept as the reference the batched decoder of :mod:`vidflow.heads.yolo` is tested and benchmarked against (same outputs). Decoders for YOLO-family detector outputs.

=============  ====================  ==============================================================
``format``     raw output            rows / columns
=============  ====================  ==============================================================
``yolov8``     ``[B, 4+C, N]``       cx, cy, w, h (input px), then C class scores (Ultralytics
                                     YOLOv8 / YOLO11 detect exports, no NMS inside)
``yolov5``     ``[B, N, 5+C]``       cx, cy, w, h, objectness, C class scores (score = obj * cls)
``end2end``    ``[B, N, 6]``         x1, y1, x2, y2, score, class (already NMSed: YOLOv10/26
                                     end-to-end, ``nms=True`` exports)
=============  ====================  ==============================================================

:func:`decode` returns one flat table for the whole batch, boxes in model-input pixels:
``Detections(frame_idx [K] int64, bbox [K,4] f32 xyxy, confidence [K] f32, class_id [K] int64)``,
sorted by frame then by descending confidence. Semantics follow Ultralytics'
``non_max_suppression``: a candidate is kept when its best class score is *greater than*
``conf`` (a float, or one threshold per class); at most ``max_nms`` candidates per image enter
class-aware NMS; ``max_det`` per image survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from ..ops.nms import batched_nms_pure as batched_nms
from .yolo import _thresholds, xywh_to_xyxy

__all__ = ["Detections", "decode_reference"]

Format = Literal["yolov8", "yolov5", "end2end"]
FORMATS: tuple[str, ...] = ("yolov8", "yolov5", "end2end")


class Detections(NamedTuple):
    """Flat detections of a batch: ``frame_idx [K]``, ``bbox [K,4]`` xyxy, ``confidence [K]``,
    ``class_id [K]``."""

    frame_idx: torch.Tensor
    bbox: torch.Tensor
    confidence: torch.Tensor
    class_id: torch.Tensor


def decode_reference(output: torch.Tensor, *, format: Format = "yolov8", conf: float | Sequence[float] = 0.25,
           iou: float = 0.7, max_det: int = 300, max_nms: int = 30000,
           classes: Sequence[int] | None = None, agnostic: bool = False) -> Detections:
    """Decode a raw model ``output`` (see the table above) into :class:`Detections`.

    All work stays on ``output.device``; the only host syncs are NMS's. ``classes`` keeps only
    those class ids; ``agnostic`` runs class-agnostic NMS."""
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if output.dim() != 3:
        raise ValueError(f"output: expected a 3-d tensor for format {format!r}, got {tuple(output.shape)}")
    if max_det < 1 or not 0.0 <= iou <= 1.0:
        raise ValueError(f"max_det must be >= 1 and iou in [0, 1], got {max_det}, {iou}")
    out = output.float()
    dev = out.device
    if format == "end2end":
        if out.shape[2] < 6:
            raise ValueError(f"output: expected [B, N, 6] for end2end, got {tuple(out.shape)}")
        boxes, score, cls = out[..., :4], out[..., 4], out[..., 5].round().long()
        thr = _thresholds(conf, 0 if isinstance(conf, (int, float)) else len(conf), dev)
    else:
        if format == "yolov8":
            if out.shape[1] < 5:
                raise ValueError(f"output: expected [B, 4+C, N] for yolov8, got {tuple(out.shape)}")
            out = out.transpose(1, 2)  # [B, N, 4+C]
            cls_scores = out[..., 4:]
        else:
            if out.shape[2] < 6:
                raise ValueError(f"output: expected [B, N, 5+C] for yolov5, got {tuple(out.shape)}")
            cls_scores = out[..., 5:] * out[..., 4:5]
        boxes = xywh_to_xyxy(out[..., :4])
        score, cls = cls_scores.max(-1)
        num_classes = cls_scores.shape[-1]
        thr = _thresholds(conf, num_classes, dev)
    t = thr if isinstance(thr, float) else thr[cls.clamp(0, thr.numel() - 1)]
    mask = score > t
    if format == "yolov5":
        mask &= out[..., 4] > (thr if isinstance(thr, float) else thr.min())
    if classes is not None:
        allowed = torch.as_tensor(list(classes), dtype=torch.int64, device=dev)
        mask &= torch.isin(cls, allowed)
    fi, ai = mask.nonzero(as_tuple=True)            # one sync for all the candidate columns
    bx, sc, cl = boxes[fi, ai], score[fi, ai], cls[fi, ai]
    if format == "end2end":
        keep = _top_per_frame(fi, sc, max_det)
        return Detections(fi[keep], bx[keep], sc[keep], cl[keep])
    if max_nms and sc.numel() > max_nms:
        keep = _top_per_frame(fi, sc, max_nms)
        fi, bx, sc, cl = fi[keep], bx[keep], sc[keep], cl[keep]
    groups = fi if agnostic else fi * num_classes + cl      # one NMS group per (frame, class), no sync
    keep = batched_nms(bx, sc, groups, iou)
    fi, bx, sc, cl = fi[keep], bx[keep], sc[keep], cl[keep]
    keep = _top_per_frame(fi, sc, max_det)
    return Detections(fi[keep], bx[keep], sc[keep], cl[keep])


def _top_per_frame(fi: torch.Tensor, sc: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best scores of each frame, ordered by frame then descending score
    (ties: lower index first)."""
    if fi.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=fi.device)
    o = torch.sort(sc, descending=True, stable=True).indices
    o = o[torch.sort(fi[o], stable=True).indices]  # by frame, then score
    f = fi[o]
    start = torch.searchsorted(f, f, right=False)
    rank = torch.arange(f.numel(), device=f.device) - start
    return o[rank < k]
