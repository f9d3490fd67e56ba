"""YOLO-family box heads, decoded for the whole batch at once on the device.

=============  ====================  ==============================================================
``format``     raw output            rows / columns
=============  ====================  ==============================================================
``yolov8``     ``[B, 4+C, N]``       cx, cy, w, h (input px), then C class scores (Ultralytics
                                     YOLOv8 / YOLO11 detect exports, no NMS inside)
``yolov5``     ``[B, N, 5+C]``       cx, cy, w, h, objectness, C class scores (score = obj * cls)
``end2end``    ``[B, N, 6]``         x1, y1, x2, y2, score, class (already NMSed: YOLOv10/26
                                     end-to-end, ``nms=True`` exports)
=============  ====================  ==============================================================

Semantics follow Ultralytics' ``non_max_suppression``: a candidate is kept when its best class
score is *greater than* ``conf`` (a float, or one threshold per class); at most ``max_nms``
candidates per image enter class-aware NMS; ``max_det`` per image survive. Frames are decoded
side by side (``[B, K]`` padded tables, :func:`vidflow.ops.nms.nms_padded`): no Python loop
over frames, and the host waits only for the candidate count, NMS convergence and the final
index list (each a few bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import torch

from ..ops._const import const
from ..ops.nms import nms_padded
from .base import HeadResult

__all__ = ["Detections", "decode", "decode_rows", "FORMATS", "xywh_to_xyxy", "YoloHead"]

Format = Literal["yolov8", "yolov5", "end2end"]
FORMATS: tuple[str, ...] = ("yolov8", "yolov5", "end2end")


class Detections(NamedTuple):
    """Flat detections of a batch: ``frame_idx [K]``, ``bbox [K,4]`` xyxy, ``confidence [K]``,
    ``class_id [K]``; ``rows [K, E]`` the extra rows of each kept candidate (mask coefficients,
    keypoints), ``[K, 0]`` when there are none."""

    frame_idx: torch.Tensor
    bbox: torch.Tensor
    confidence: torch.Tensor
    class_id: torch.Tensor
    rows: torch.Tensor | None = None


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` centre-x, centre-y, w, h -> x1, y1, x2, y2."""
    xy, wh = b[..., :2], b[..., 2:4] / 2
    return torch.cat([xy - wh, xy + wh], dim=-1)


def _thresholds(conf: float | Sequence[float], num_classes: int, device: torch.device) -> torch.Tensor | float:
    if isinstance(conf, (int, float)):
        return float(conf)
    t = torch.as_tensor(list(conf), dtype=torch.float32)
    if t.shape != (num_classes,):
        raise ValueError(f"conf: expected a float or {num_classes} per-class values, got {len(t)}")
    return t.to(device, non_blocking=True)      # (no stream sync: ops/_const.py)


def decode(output: torch.Tensor, *, format: Format = "yolov8", conf: float | Sequence[float] = 0.25,
           iou: float = 0.7, max_det: int = 300, max_nms: int = 30000,
           classes: Sequence[int] | None = None, agnostic: bool = False) -> Detections:
    """Decode a raw model ``output`` (see the table above) into :class:`Detections`."""
    return decode_rows(output, format=format, extra=0, conf=conf, iou=iou, max_det=max_det, max_nms=max_nms,
                       classes=classes, agnostic=agnostic)


def decode_rows(output: torch.Tensor, *, format: Format = "yolov8", extra: int = 0,
                conf: float | Sequence[float] = 0.25, iou: float = 0.7, max_det: int = 300,
                max_nms: int = 30000, classes: Sequence[int] | None = None,
                agnostic: bool = False) -> Detections:
    """:func:`decode` for outputs whose last ``extra`` rows (yolov8 layout) are per-candidate
    extras (mask coefficients, keypoints): they are not class scores, and come back in
    ``Detections.rows`` for the kept candidates."""
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if output.dim() != 3:
        raise ValueError(f"output: expected a 3-d tensor for format {format!r}, got {tuple(output.shape)}")
    if max_det < 1 or not 0.0 <= iou <= 1.0:
        raise ValueError(f"max_det must be >= 1 and iou in [0, 1], got {max_det}, {iou}")
    if extra and format != "yolov8":
        raise ValueError(f"extra rows are only read for format 'yolov8', got {format!r}")
    out = output.float()
    dev = out.device
    b = out.shape[0]
    if format == "end2end":
        if out.shape[2] < 6:
            raise ValueError(f"output: expected [B, N, 6] for end2end, got {tuple(out.shape)}")
        boxes, score, cls = out[..., :4], out[..., 4], out[..., 5].round().long()
        thr = _thresholds(conf, 0 if isinstance(conf, (int, float)) else len(conf), dev)
        num_classes = 1
    else:
        if format == "yolov8":
            if out.shape[1] < 5 + extra:
                raise ValueError(f"output: expected [B, 4+C{'+' + str(extra) if extra else ''}, N] for yolov8, "
                                 f"got {tuple(out.shape)}")
            out = out.transpose(1, 2)  # [B, N, 4+C+E] (a view)
            cls_scores = out[..., 4:out.shape[2] - extra]
        else:
            if out.shape[2] < 6:
                raise ValueError(f"output: expected [B, N, 5+C] for yolov5, got {tuple(out.shape)}")
            cls_scores = out[..., 5:] * out[..., 4:5]
        boxes = xywh_to_xyxy(out[..., :4])
        score, cls = cls_scores.max(-1)
        num_classes = cls_scores.shape[-1]
        thr = _thresholds(conf, num_classes, dev)
    t = thr if isinstance(thr, float) else thr[cls.clamp(0, thr.numel() - 1)]
    cand = score > t
    if format == "yolov5":
        cand &= out[..., 4] > (thr if isinstance(thr, float) else thr.min())
    if classes is not None:
        cand &= torch.isin(cls, const(list(classes), device=dev, dtype=torch.int64))
    k = min(int(cand.sum(1).max()) if b else 0, int(max_nms) if max_nms else cand.shape[1])  # host sync 1
    if k == 0:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return Detections(z, torch.zeros(0, 4, device=dev), torch.zeros(0, device=dev), z.clone(),
                          torch.zeros(0, extra, device=dev))
    # per frame: candidates first, by descending score, ties by anchor index (stable)
    order = torch.sort(torch.where(cand, score, -torch.inf), dim=1, descending=True, stable=True).indices[:, :k]
    valid = cand.gather(1, order)
    bx = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    sc, cl = score.gather(1, order), cls.gather(1, order)
    if format == "end2end":
        keep = valid
    else:
        groups = torch.zeros_like(cl) if agnostic else cl
        keep = nms_padded(bx, groups, valid, iou)
    keep &= torch.cumsum(keep, 1) <= max_det
    fi, ki = keep.nonzero(as_tuple=True)                    # host sync: the final index list
    rows = None
    if extra:
        anchor = order[fi, ki]
        rows = out[fi, anchor, out.shape[2] - extra:]
    return Detections(fi, bx[fi, ki], sc[fi, ki], cl[fi, ki], rows)


def pick_output(outputs: Mapping[str, torch.Tensor], name: str | None, *, dims: int = 3) -> torch.Tensor:
    """``outputs[name]``, or the first output with ``dims`` dimensions."""
    if name is not None:
        if name not in outputs:
            raise ValueError(f"output: {name!r} is not an output of the model; it has {list(outputs)}")
        return outputs[name]
    for v in outputs.values():
        if v.dim() == dims:
            return v
    raise ValueError(f"the model has no {dims}-d output: {[(k, tuple(v.shape)) for k, v in outputs.items()]}")


class YoloHead:
    """Box head for ``yolov8`` (YOLOv8/YOLO11), ``yolov5`` and ``end2end`` outputs; see the
    module table. ``output``: which output to decode (default: the first 3-d one)."""

    task = "detect"

    def __init__(self, format: Format = "yolov8", *, conf: float | Sequence[float] = 0.25, iou: float = 0.7,
                 max_det: int = 300, max_nms: int = 30000, classes: Sequence[int] | None = None,
                 agnostic: bool = False, output: str | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        self.format = format
        self.conf = conf if isinstance(conf, (int, float)) else tuple(float(c) for c in conf)
        self.iou, self.max_det, self.max_nms = float(iou), int(max_det), int(max_nms)
        self.classes = tuple(int(c) for c in classes) if classes is not None else None
        self.agnostic, self.output = bool(agnostic), output

    def _decode(self, raw: torch.Tensor, extra: int = 0) -> Detections:
        return decode_rows(raw, format=self.format, extra=extra, conf=self.conf, iou=self.iou,
                           max_det=self.max_det, max_nms=self.max_nms, classes=self.classes,
                           agnostic=self.agnostic)

    def num_classes(self, outputs: Mapping[str, torch.Tensor]) -> int:
        raw = pick_output(outputs, self.output)
        return raw.shape[1] - 4 if self.format == "yolov8" else raw.shape[2] - 5 if self.format == "yolov5" else 0

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch_size: int) -> HeadResult:
        d = self._decode(pick_output(outputs, self.output))
        return HeadResult(d.frame_idx, d.bbox, d.confidence, d.class_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(format={self.format!r}, conf={self.conf}, iou={self.iou}, max_det={self.max_det})"
