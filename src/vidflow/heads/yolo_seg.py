"""YOLO instance-segmentation head (Ultralytics ``-seg`` exports).

Outputs: predictions ``[B, 4 + C + M, N]`` (box, C class scores, M mask coefficients) and
prototypes ``[B, M, mh, mw]``. The head decodes boxes like :class:`~vidflow.heads.yolo.YoloHead`
and hands on ``extras["mask_coeffs"] [K, M]`` and ``frame_extras["protos"]``; the ``Detector``
turns them into box-cropped masks at source resolution (:func:`vidflow.ops.masks.assemble`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import HeadResult
from .yolo import YoloHead, pick_output

__all__ = ["SegmentHead"]


class SegmentHead(YoloHead):
    """``SegmentHead(conf=, iou=, max_det=, ...)``; ``output``/``protos``: output names (default:
    the 3-d and the 4-d output)."""

    task = "segment"

    def __init__(self, *, protos: str | None = None, **kw) -> None:
        super().__init__("yolov8", **kw)
        self.protos = protos

    def _protos(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p = pick_output(outputs, self.protos, dims=4)
        if p.dim() != 4:
            raise ValueError(f"protos: expected [B, M, h, w], got {tuple(p.shape)}")
        return p

    def num_classes(self, outputs: Mapping[str, torch.Tensor]) -> int:
        return pick_output(outputs, self.output).shape[1] - 4 - self._protos(outputs).shape[1]

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch_size: int) -> HeadResult:
        protos = self._protos(outputs)
        d = self._decode(pick_output(outputs, self.output), extra=protos.shape[1])
        assert d.rows is not None                 # (asked for: extra > 0)
        return HeadResult(d.frame_idx, d.bbox, d.confidence, d.class_id, extras={"mask_coeffs": d.rows},
                          frame_extras={"protos": protos})
