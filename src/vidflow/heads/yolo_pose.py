"""YOLO pose head (Ultralytics ``-pose`` exports).

Output: ``[B, 4 + C + P*D, N]``: box, C class scores, then P keypoints of D values (x, y in
input pixels, and a visibility score when D = 3). ``kpt_shape=(P, D)`` comes from the model's
metadata (``kpt_shape``) or the YAML. ``extras["keypoints"] [K, P, 3]`` (score 1 when D = 2);
the ``Detector`` maps them to source pixels (clipped to the frame, as Ultralytics'
``scale_coords``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import HeadResult
from .yolo import YoloHead, pick_output

__all__ = ["PoseHead"]


class PoseHead(YoloHead):
    """``PoseHead(kpt_shape=(P, D), conf=, iou=, ...)``."""

    task = "pose"

    def __init__(self, *, kpt_shape: Sequence[int] = (17, 3), **kw) -> None:
        super().__init__("yolov8", **kw)
        ks = tuple(int(v) for v in kpt_shape)
        if len(ks) != 2 or ks[0] < 1 or ks[1] not in (2, 3):
            raise ValueError(f"kpt_shape: expected (keypoints, 2 or 3), got {kpt_shape!r}")
        self.kpt_shape = ks

    def num_classes(self, outputs: Mapping[str, torch.Tensor]) -> int:
        return pick_output(outputs, self.output).shape[1] - 4 - self.kpt_shape[0] * self.kpt_shape[1]

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch_size: int) -> HeadResult:
        p, dims = self.kpt_shape
        raw = pick_output(outputs, self.output)
        if raw.shape[1] < 5 + p * dims:
            raise ValueError(f"output: expected [B, 4+C+{p}*{dims}, N] for kpt_shape {self.kpt_shape}, "
                             f"got {tuple(raw.shape)}")
        d = self._decode(raw, extra=p * dims)
        assert d.rows is not None                 # (asked for: extra > 0)
        kp = d.rows.reshape(-1, p, dims)
        if dims == 2:
            kp = torch.cat([kp, torch.ones_like(kp[..., :1])], -1)
        return HeadResult(d.frame_idx, d.bbox, d.confidence, d.class_id, extras={"keypoints": kp.contiguous()})
