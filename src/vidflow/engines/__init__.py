"""Model engines: run a model on ``[B,3,H,W]`` and get ``{output name: Tensor}`` back.

``load_engine(model)`` picks the engine from what ``model`` is:

=====================================  =======================================================
``torch.nn.Module`` / ScriptModule     :class:`TorchEngine`
``*.onnx``                             :class:`OnnxEngine` (onnxruntime on the CPU; converted to
                                       torch on CUDA)
``*.torchscript``, ``*.pt``, ``*.jit``  :class:`TorchEngine` via ``torch.jit.load`` (never unpickled)
=====================================  =======================================================
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch as _torch  # (the name "torch" is this package's submodule torch.py)

from .. import _lazy
from ..kinds import ENGINES, MODEL_SUFFIXES
from .base import Engine, as_outputs, labels_from, parse_metadata, size_from

__all__ = ["load_engine", "Engine", "TorchEngine", "OnnxEngine", "FakeEngine", "FORMATS",
           "as_outputs", "labels_from", "parse_metadata", "size_from"]

FORMATS = tuple(ENGINES)          # the engine table lives in vidflow.kinds
_EXT = MODEL_SUFFIXES
_LAZY = {spec.rpartition(":")[2]: spec for spec in ENGINES.values()} | {"FakeEngine": "vidflow.engines.fake:FakeEngine"}


def load_engine(model: Any, *, format: Literal["onnx", "torchscript", "torch"] | None = None,
                half: bool = False, device: _torch.device | str = "cpu", **kw: Any) -> Engine:
    """Open ``model`` (path, ``nn.Module`` or an object that already is an engine) on ``device``.

    ``format`` overrides the guess from the file extension. ``half=True`` runs float16 on CUDA.
    Extra keywords go to the engine (``input_size``, ``labels``, ONNX ``backend``)."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if isinstance(model, _torch.nn.Module):
        return _lazy.resolve(ENGINES["torch"])(model, device=device, half=half, **kw)
    if not isinstance(model, (str, os.PathLike)):
        if callable(model) and hasattr(model, "input_size") and hasattr(model, "output_names"):
            return model  # already an engine (e.g. FakeEngine)
        raise ValueError(f"model: expected a path, an nn.Module or an engine, got {type(model).__name__}")
    path = os.fspath(model)
    fmt = format or _EXT.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the model format from the extension; pass format= one of "
                         f"{', '.join(FORMATS[:2])} (known extensions: {', '.join(sorted(_EXT))})")
    return _lazy.resolve(ENGINES[fmt])(path, device=device, half=half, **kw)


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'vidflow.engines' has no attribute {name!r}")
    return _lazy.resolve(spec)
