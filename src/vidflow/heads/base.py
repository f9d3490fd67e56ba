"""The head contract: raw model outputs of a whole batch -> one checked table of objects.

A head is any callable ``head(outputs: dict[str, Tensor], batch_size: int) -> HeadResult``
(``outputs`` as the engine returns them). Boxes are in **model-input pixels**; the
``Detector`` maps them (and any ``extras["keypoints"]``) back to source pixels and turns
``extras["mask_coeffs"]`` + ``frame_extras["protos"]`` into instance masks. Other extras go to
``Objects.attrs["<detector name>.<key>"]``.

Heads by name (``Detector(head=...)``, YAML ``head:``): ``yolov8`` (also YOLO11; alias
``detect``), ``yolov5``, ``end2end``, ``segment``, ``pose``, ``semantic``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import torch

__all__ = ["Head", "HeadResult", "HEADS"]

#: the head names ``Detector`` knows
HEADS: tuple[str, ...] = ("yolov8", "yolov5", "end2end", "segment", "pose", "semantic")


@dataclass(frozen=True)
class HeadResult:
    """Objects of a batch, ordered by frame then by descending confidence.

    ``frame_idx [K]`` int64, ``bbox [K,4]`` float32 xyxy in model-input pixels, ``confidence
    [K]`` float32, ``class_id [K]`` int64; ``extras``: per-object tensors ``[K, ...]`` (known
    keys: ``mask_coeffs [K,M]``, ``keypoints [K,P,3]`` (x, y in input pixels, score));
    ``frame_extras``: per-frame tensors ``[B, ...]`` (``protos [B,M,h,w]``, ``class_logits
    [B,C,H,W]``)."""

    frame_idx: torch.Tensor
    bbox: torch.Tensor
    confidence: torch.Tensor
    class_id: torch.Tensor
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    frame_extras: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fi = self.frame_idx
        if not isinstance(fi, torch.Tensor) or fi.dim() != 1 or fi.dtype != torch.int64:
            raise ValueError(f"HeadResult.frame_idx: expected an int64 tensor [K], got {_desc(fi)}")
        k, dev = fi.shape[0], fi.device
        for name, shape, dtype in (("bbox", (k, 4), torch.float32), ("confidence", (k,), torch.float32),
                                   ("class_id", (k,), torch.int64)):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(f"HeadResult.{name}: expected {dtype} {list(shape)}, got {_desc(t)}")
            if t.device != dev:
                raise ValueError(f"HeadResult.{name}: expected device {dev}, got {t.device}")
        for key, v in self.extras.items():
            if not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[0] != k or v.device != dev:
                raise ValueError(f"HeadResult.extras[{key!r}]: expected a tensor [{k}, ...] on {dev}, got {_desc(v)}")
        kp = self.extras.get("keypoints")
        if kp is not None and (kp.dim() != 3 or kp.shape[2] != 3):
            raise ValueError(f"HeadResult.extras['keypoints']: expected [K, P, 3], got {_desc(kp)}")
        for key, v in self.frame_extras.items():
            if not isinstance(v, torch.Tensor) or v.device != dev:
                raise ValueError(f"HeadResult.frame_extras[{key!r}]: expected a tensor on {dev}, got {_desc(v)}")
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        object.__setattr__(self, "frame_extras", MappingProxyType(dict(self.frame_extras)))

    def __len__(self) -> int:
        return self.frame_idx.shape[0]


@runtime_checkable
class Head(Protocol):
    """Decode raw outputs of a batch of ``batch_size`` frames into a :class:`HeadResult`."""

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch_size: int) -> HeadResult: ...


def _desc(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)} on {t.device}"
    return type(t).__name__
