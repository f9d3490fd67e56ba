"""The frame a source hands to the muxer (:class:`SourceFrame`), shared by sources, ops and the muxer.

It lives outside ``vidflow.sources`` so that ``vidflow.ops`` (colour conversion) and ``vidflow.mux``
read frames without importing any source: ``ops`` never imports ``sources``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from .batch import FrameInfo

__all__ = ["SourceFrame", "PixelFormat", "ColorMatrix"]

PixelFormat = Literal["rgb", "nv12"]
ColorMatrix = Literal["bt601", "bt709"]


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame, before the muxer converts and scales it.

    ``data`` is either ``format="rgb"``: uint8 ``[3,H,W]`` (any strides), or ``format="nv12"``:
    uint8 ``[H*3//2, W]`` (Y plane then interleaved UV), on CPU or CUDA. ``matrix`` and
    ``full_range`` say how to turn YUV into RGB (from the stream's metadata; a stream that names no
    matrix is BT.601 limited range at every size, as FFmpeg treats it: ``ops.color.default_matrix``). ``info.width`` /
    ``info.height`` are the displayed size (``data`` may be larger when the decoder pads).
    ``release``: when set, ``data`` is borrowed (a slot of a decode process's ring buffer) and
    must be handed back by calling ``release()`` once nothing reads it any more; the muxer does
    this after its conversion kernel has finished, a live queue when it drops the frame.
    """

    info: FrameInfo
    data: torch.Tensor
    format: PixelFormat = "rgb"
    matrix: ColorMatrix = "bt601"
    full_range: bool = False
    release: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.format not in ("rgb", "nv12"):
            raise ValueError(f"SourceFrame.format: expected 'rgb' or 'nv12', got {self.format!r}")
        if self.data.dtype != torch.uint8:
            raise ValueError(f"SourceFrame.data: expected uint8, got {self.data.dtype}")
        if self.format == "rgb" and (self.data.dim() != 3 or self.data.shape[0] != 3):
            raise ValueError(f"SourceFrame.data (rgb): expected shape (3, H, W), got {tuple(self.data.shape)}")
        if self.format == "nv12" and (self.data.dim() != 2 or self.data.shape[0] % 3):
            raise ValueError(f"SourceFrame.data (nv12): expected shape (H*3//2, W), got {tuple(self.data.shape)}")
