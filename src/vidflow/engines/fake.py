"""``FakeEngine``: a deterministic stand-in model for tests (no weights, no files).

Its output is a pure function of the input (per-image mean of the input plus a fixed pattern), so
tests can check that the right batch reached the engine and that shapes flow through stages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["FakeEngine"]


class FakeEngine:
    """``FakeEngine(outputs={"output0": (7, 8400)})(x [B,3,H,W]) -> {"output0": [B,7,8400]}``.

    Each output is ``pattern + mean(x[b])`` where ``pattern`` is ``torch.linspace(0, 1)`` shaped
    to the output (the same for every call), unless ``fn(x) -> dict`` is given, which is used
    instead (e.g. to return hand-made detections)."""

    def __init__(self, *, outputs: dict[str, tuple[int, ...]] | None = None,
                 fn: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
                 input_size: tuple[int, int] | None = (64, 64), labels: tuple[str, ...] | None = None,
                 device: torch.device | str = "cpu", metadata: dict[str, Any] | None = None) -> None:
        self.outputs = dict(outputs or {"output0": (7, 16)})
        self.fn = fn
        self.input_name = "images"
        self.input_size = tuple(input_size) if input_size else None
        self.input_dtype = torch.float32
        self.output_names = tuple(self.outputs)
        self.labels = tuple(labels) if labels else None
        self.metadata = dict(metadata or {})
        self.device = torch.device(device)
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device, self.input_dtype)
        self.calls.append(tuple(x.shape))
        if self.fn is not None:
            return dict(self.fn(x))
        b = x.shape[0]
        mean = x.reshape(b, -1).mean(1)
        out = {}
        for name, shape in self.outputs.items():
            n = 1
            for s in shape:
                n *= s
            pat = torch.linspace(0, 1, n, device=self.device).reshape(shape)
            out[name] = pat.unsqueeze(0) + mean.reshape((b,) + (1,) * len(shape))
        return out
