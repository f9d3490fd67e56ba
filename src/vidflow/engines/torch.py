"""PyTorch engines: a ``torch.nn.Module`` in memory, or a TorchScript file.

TorchScript files are opened with ``torch.jit.load`` (no pickle of arbitrary Python objects);
an Ultralytics ``config.txt`` extra file supplies labels and input size. ``half=True`` runs the
model in float16 (CUDA only; ignored on CPU, where float16 convolutions are slow or missing).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .base import as_outputs, labels_from, parse_metadata, size_from

__all__ = ["TorchEngine"]


class TorchEngine:
    """Run ``model`` (an ``nn.Module``, a ``torch.jit.ScriptModule``, or a path to a TorchScript
    file) on ``[B,3,H,W]`` inputs; returns ``{output name: Tensor}``.

    ``input_size=(W, H)``, ``labels`` and ``metadata`` override what the file carries."""

    def __init__(self, model: torch.nn.Module | str | os.PathLike, *, device: torch.device | str = "cpu",
                 half: bool = False, input_size: tuple[int, int] | None = None,
                 labels: tuple[str, ...] | None = None, metadata: dict[str, Any] | None = None,
                 output_names: tuple[str, ...] | None = None, input_name: str = "images") -> None:
        self.device = torch.device(device)
        meta: dict[str, Any] = {}
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"TorchScript model not found: {path}")
            extra = {"config.txt": ""}
            try:
                model = torch.jit.load(path, map_location=self.device, _extra_files=extra)
            except RuntimeError as e:
                raise ValueError(f"{path}: not a TorchScript file ({e}). Plain pickled .pt checkpoints "
                                 f"are not loaded (unsafe); export with torch.jit.script/trace.") from e
            meta = parse_metadata(extra["config.txt"])
        elif not isinstance(model, torch.nn.Module):
            raise ValueError(f"model: expected an nn.Module or a TorchScript path, got {type(model).__name__}")
        meta.update(metadata or {})
        self.metadata = meta
        self.half = bool(half) and self.device.type == "cuda"
        self.input_dtype = torch.float16 if self.half else torch.float32
        model = model.to(self.device).eval()
        if self.half:
            model = model.half()
        self.model = model
        self.input_name = input_name
        self.input_size = tuple(input_size) if input_size else size_from(meta)
        self.labels = tuple(labels) if labels else labels_from(meta)
        self._names = tuple(output_names) if output_names else None
        self.output_names: tuple[str, ...] = self._names or ("output0",)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B,3,H,W]`` -> ``{name: Tensor}`` on ``self.device``."""
        x = x.to(self.device, self.input_dtype, non_blocking=True)
        out = as_outputs(self.model(x), self._names)
        self.output_names = tuple(out)
        return out

    def __repr__(self) -> str:
        return (f"TorchEngine({type(self.model).__name__}, device={self.device}, dtype={self.input_dtype}, "
                f"input_size={self.input_size}, labels={self.labels})")
