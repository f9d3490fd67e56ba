"""Semantic-segmentation head: ``[B, C, H, W]`` class logits (or probabilities) -> per-frame
class maps.

The head returns no objects; ``frame_extras["class_logits"]`` goes to the ``Detector``, which
maps it to source resolution on the device (:func:`class_maps`): the letterbox padding is cut
off, the logits are resized bilinearly to the source size, and ``argmax`` gives the class map
(``int32``, DeepStream's ``seg-class-map``); ``softmax`` the probabilities on request
(``seg-class-probability-matrix``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .base import HeadResult
from .yolo import pick_output

__all__ = ["SemanticHead", "class_maps"]


class SemanticHead:
    """``SemanticHead(output=None)``: the first 4-d output by default."""

    task = "semantic"

    def __init__(self, *, output: str | None = None) -> None:
        self.output = output

    def num_classes(self, outputs: Mapping[str, torch.Tensor]) -> int:
        return pick_output(outputs, self.output, dims=4).shape[1]

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch_size: int) -> HeadResult:
        logits = pick_output(outputs, self.output, dims=4)
        dev = logits.device
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return HeadResult(z, torch.zeros(0, 4, device=dev), torch.zeros(0, device=dev), z.clone(),
                          frame_extras={"class_logits": logits})

    def __repr__(self) -> str:
        return f"SemanticHead(output={self.output!r})"


def class_maps(logits: torch.Tensor, content: torch.Tensor, size: tuple[int, int], *,
               probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logits [B, C, h, w]`` at model-input (or a fraction of it) resolution; ``content [B, 4]``
    each frame's source content (x0, y0, x1, y1) in logit pixels; ``size=(W, H)`` the output size.
    Returns (``class map [B, H, W] int32``, ``probabilities [B, H, W, C] float32`` or None)."""
    b, c, h, w = logits.shape
    width, height = size
    # one affine grid per frame: output pixel centre -> logit coordinate (align_corners=False)
    x0, y0, x1, y1 = content.to(logits.device, torch.float32).unbind(1)
    sx, sy = (x1 - x0) / w, (y1 - y0) / h
    theta = torch.zeros(b, 2, 3, device=logits.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2] = (x0 + x1) / w - 1
    theta[:, 1, 2] = (y0 + y1) / h - 1
    grid = F.affine_grid(theta, [b, c, height, width], align_corners=False)
    up = F.grid_sample(logits.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    cmap = up.argmax(1).to(torch.int32)
    probs = up.softmax(1).permute(0, 2, 3, 1).contiguous() if probabilities else None
    return cmap, probs
