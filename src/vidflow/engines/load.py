"""``load_model``: the one way vidflow opens a model (``Detector``, the secondary stages, bench).

``model`` may be ``"demo"`` (vidflow's own shapes detector; ``demo="semantic"`` its semantic
segmentation model), a file (``.onnx``; ``.torchscript`` / ``.pt`` / ``.jit`` TorchScript), an
``nn.Module`` or an engine. Returns ``(engine, meta)``; ``meta`` merges the file's metadata with
normalised keys: ``labels`` (tuple or None), ``input_size`` ``(W, H)`` or None, ``task``
(``detect`` / ``segment`` / ``pose`` / ``semantic`` / ...; None when unknown), ``kpt_shape``.

Pickled checkpoints (an Ultralytics ``yolo11n.pt``, a ``torch.save`` of a module) are never
unpickled: they are refused with the command that exports them.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Literal

import torch

from .base import labels_from, size_from

__all__ = ["load_model", "DEMO", "export_hint", "head_for", "require_runtime"]

DEMO = "demo"
_TASK_HEAD = {"detect": "yolov8", "segment": "segment", "pose": "pose", "semantic": "semantic"}


def export_hint(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return (f"{path}: a pickled PyTorch checkpoint, which vidflow never unpickles (it can run any code). "
            f"Export it once: Ultralytics: `yolo export model={path} format=onnx` (or format=torchscript), "
            f"then model: {stem}.onnx; any nn.Module: torch.jit.trace(model, example).save('{stem}.torchscript') "
            f"or torch.onnx.export(...). See docs/MODELS.md.")


def require_runtime(model: Any, backend: str | None = "auto") -> None:
    """``ModuleNotFoundError`` with the exact install line when ``model`` is an ``.onnx`` file and
    onnx / onnxruntime are missing (``backend="torch"`` needs onnx only): called where a stage is
    built, so the hint comes before the first batch."""
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model).lower().endswith(".onnx"):
        return
    import importlib.util

    need = ("onnx",) if backend == "torch" else ("onnx", "onnxruntime")
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(f"{os.fspath(model)}: ONNX models need the onnx extra: pip install 'vidflow[onnx]' "
                                  f"(missing {', '.join(missing)})", name=missing[0])


def _is_pickle_checkpoint(path: str) -> bool:
    """A ``torch.save`` file: a zip without TorchScript's ``code/`` folder, or a legacy pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return not any("/code/" in n or n.startswith("code/") for n in z.namelist())
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"   # pickle protocol 2+


def head_for(meta: dict[str, Any]) -> str | None:
    """The head name a model's metadata implies (``task`` as Ultralytics writes it), or None."""
    fmt = meta.get("format")
    task = meta.get("task")
    if task == "detect" and fmt in ("yolov5", "end2end", "yolov8"):
        return fmt
    if task in _TASK_HEAD:
        return _TASK_HEAD[task]
    return fmt if fmt in ("yolov8", "yolov5", "end2end") else None


def load_model(model: Any, *, device: torch.device | str = "cpu", half: bool = False,
               demo: Literal["detector", "semantic"] = "detector",
               backend: Literal["auto", "onnxruntime", "torch"] = "auto", **kw: Any) -> tuple[Any, dict[str, Any]]:
    """Open ``model`` on ``device`` -> ``(engine, meta)`` (see the module text)."""
    from . import load_engine

    dev = torch.device(device)
    extra: dict[str, Any] = {}
    if isinstance(model, str) and model == DEMO:
        if demo == "semantic":
            from ..demo_models.semantic import load_demo_semantic
            model, extra = load_demo_semantic(device=dev)
        else:
            from ..demo_models import load_demo
            model, extra = load_demo(device=dev)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model: file not found: {path!r} (or use model: demo)")
        low = path.lower()
        if low.endswith(".onnx"):
            require_runtime(path, backend)
            kw["backend"] = backend
        elif low.endswith((".pt", ".pth", ".ckpt", ".bin")) and _is_pickle_checkpoint(path):
            raise ValueError(export_hint(path))
    eng = load_engine(model, device=dev, half=half, **kw)
    md = {**getattr(eng, "metadata", {}), **extra}
    labels = getattr(eng, "labels", None) or labels_from(md)
    meta = {**md, "labels": tuple(labels) if labels else None,
            "input_size": getattr(eng, "input_size", None) or size_from(md),
            "task": md.get("task") or ("detect" if md.get("format") in ("yolov8", "yolov5", "end2end") else None)}
    if "kpt_shape" in md:
        meta["kpt_shape"] = tuple(int(v) for v in md["kpt_shape"])
    return eng, meta
