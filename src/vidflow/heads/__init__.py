"""Heads: raw model outputs of a batch -> a checked :class:`~vidflow.heads.base.HeadResult`.

``yolo`` (:class:`YoloHead`: yolov8 / YOLO11, yolov5, end2end), ``yolo_seg``
(:class:`SegmentHead`), ``yolo_pose`` (:class:`PoseHead`), ``semantic`` (:class:`SemanticHead`).
"""

from .base import HEADS, Head, HeadResult

__all__ = ["HEADS", "Head", "HeadResult"]
