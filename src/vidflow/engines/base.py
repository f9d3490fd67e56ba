"""The engine contract: run a model on a batch of preprocessed images, return named tensors.

An engine is any object with::

    __call__(x: Tensor[B,3,H,W]) -> dict[str, Tensor]     # output name -> tensor, on x's device
    input_name: str                 # e.g. "images"
    input_size: (W, H) | None       # fixed model input size, None when any size is accepted
    input_dtype: torch.dtype        # float32, or float16 when loaded with half=True on CUDA
    output_names: tuple[str, ...]   # "output0", ... (known after the first call at the latest)
    labels: tuple[str, ...] | None  # class names from the model's metadata
    metadata: dict[str, Any]        # everything else the file carried (Ultralytics: imgsz, stride, task)
    device: torch.device

Engines accept any batch size. ``x`` is cast to ``input_dtype`` and moved to ``device`` when it
is not already there.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Engine", "parse_metadata", "labels_from", "size_from", "as_outputs"]


@runtime_checkable
class Engine(Protocol):
    input_name: str
    input_size: tuple[int, int] | None
    input_dtype: torch.dtype
    output_names: tuple[str, ...]
    labels: tuple[str, ...] | None
    metadata: dict[str, Any]
    device: torch.device

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...


def _literal(text: str) -> Any:
    """JSON first, then a Python literal (Ultralytics writes ``str(dict)`` in ONNX metadata)."""
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
    return text


def parse_metadata(raw: Mapping[str, str] | str | bytes | None) -> dict[str, Any]:
    """Turn model metadata (ONNX ``metadata_props`` as a dict of strings, or a TorchScript
    ``config.txt`` blob) into Python values. Never evaluates code (``ast.literal_eval`` only)."""
    if raw is None:
        return {}
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        v = _literal(raw) if raw.strip() else {}
        return dict(v) if isinstance(v, dict) else {}
    return {k: _literal(v) if isinstance(v, str) else v for k, v in raw.items()}


def labels_from(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Class names from ``names`` / ``labels`` metadata: ``{0: 'a', 1: 'b'}`` or ``['a', 'b']``."""
    names = meta.get("names", meta.get("labels"))
    if isinstance(names, Mapping) and names:
        try:
            items = sorted((int(k), str(v)) for k, v in names.items())
        except (TypeError, ValueError):
            return None
        if [k for k, _ in items] == list(range(len(items))):
            return tuple(v for _, v in items)
        out = [f"class{i}" for i in range(items[-1][0] + 1)]
        for k, v in items:
            out[k] = v
        return tuple(out)
    if isinstance(names, Sequence) and not isinstance(names, str) and names:
        return tuple(str(n) for n in names)
    return None


def size_from(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    """Input size ``(W, H)`` from metadata: ``imgsz`` as Ultralytics writes it (``[H, W]`` or an
    int), or ``input_size`` as vidflow writes it (``[W, H]``)."""
    for key, hw in (("imgsz", True), ("input_size", False)):
        s = meta.get(key)
        if isinstance(s, int):
            return (s, s)
        if isinstance(s, Sequence) and len(s) == 2 and all(isinstance(v, int) for v in s):
            return (int(s[1]), int(s[0])) if hw else (int(s[0]), int(s[1]))
    return None


def as_outputs(out: Any, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Normalise a model's return value to ``{name: Tensor}`` (tensor -> ``output0``; tuple/list ->
    ``output0, output1, ...`` or ``names``; nested lists/tuples are flattened; dicts kept)."""
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items() if isinstance(v, torch.Tensor)}
    flat: list[torch.Tensor] = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            flat.append(o)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(out)
    if not flat:
        raise ValueError(f"model returned no tensors (got {type(out).__name__})")
    if names is not None and len(names) == len(flat):
        return dict(zip(names, flat))
    return {f"output{i}": t for i, t in enumerate(flat)}
