"""Checks made on a YAML before anything runs: model files, input and output paths, extras.

Each raises ``ConfigError`` at the YAML path of the value; none of them creates, opens for
writing or unpickles anything.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError
from .kinds import EXTRAS, MODEL_SUFFIXES

__all__ = ["check_model", "check_input", "check_output", "need_module", "extra_hint", "DEMO_MODELS",
           "demo_model_warning"]

#: model values that are vidflow's own models, not files
DEMO_MODELS = ("demo",)

_EXPORT = ("export it without pickles: an Ultralytics model with `yolo export model={name} format=onnx` "
           "(or format=torchscript); any nn.Module with torch.jit.save(torch.jit.trace(model, example), "
           "'model.torchscript') or torch.onnx.export(model, example, 'model.onnx')")


def extra_hint(module: str) -> str:
    """``"pip install 'vidflow[onnx]'"`` for a module an extra brings, else ``"pip install MODULE"``."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    return f"pip install 'vidflow[{extra}]'" if extra else f"pip install {top}"


def need_module(module: str, why: str, path: str) -> None:
    """``ConfigError`` naming the install line unless ``module`` can be imported."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{why} needs the Python package {module!r}, which is not installed: "
                          f"{extra_hint(module)}", path)


def _torchscript(p: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``) holds ``code/`` and ``constants.pkl``; a
    ``torch.save`` checkpoint holds only pickled data."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def check_model(value: str, path: str, *, backend: str | None = None) -> None:
    """A model file named in YAML exists, has a known suffix, is not a pickle and its runtime is
    installed."""
    if value in DEMO_MODELS:
        return
    p = Path(value)
    suffix = p.suffix.lower()
    fmt = MODEL_SUFFIXES.get(suffix)
    if fmt is None:
        raise ConfigError(f"{value}: unknown model file type {suffix or '(none)'!r}; expected one of "
                          f"{', '.join(sorted(MODEL_SUFFIXES))} or 'demo'", path)
    if not p.is_file():
        raise ConfigError(f"model file not found: {value}" + _why_missing(p), path)
    if suffix == ".pt" and not _torchscript(p):
        raise ConfigError(f"{value} is a pickled PyTorch checkpoint, and vidflow never unpickles model files; "
                          + _EXPORT.format(name=p.name), path)
    if fmt == "onnx":
        need_module("onnx", "an ONNX model", path)
        if backend != "torch":
            need_module("onnxruntime", "an ONNX model (backend: torch runs it without onnxruntime on CUDA)", path)


def _why_missing(p: Path) -> str:
    """`` (the folder X cannot be read)`` when a parent folder hides the file."""
    for parent in p.absolute().parents:
        if parent.exists():
            if not os.access(parent, os.R_OK | os.X_OK):
                return f" (the folder {parent} cannot be read by this user)"
            return ""
    return ""


def check_input(value: str, path: str) -> None:
    """An input file (a source's path) exists and can be read; URLs pass."""
    if "://" in value:
        return
    p = Path(value)
    if not p.exists():
        raise ConfigError(f"file not found: {value}" + _why_missing(p), path)
    if p.is_dir():
        raise ConfigError(f"{value} is a folder, expected a file", path)
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{value}: permission denied (not readable by this user)", path)


def check_output(value: str, path: str, *, folder_ok: bool = False) -> None:
    """An output path can be written: the file is writable if it exists, else the nearest
    existing folder above it is (folders still missing are created by the sink)."""
    if "://" in value:
        return
    p = Path(value)
    if p.exists():
        if p.is_dir() and not folder_ok:
            raise ConfigError(f"{value} is a folder, expected a file path", path)
        if not os.access(p, os.W_OK):
            raise ConfigError(f"{value}: permission denied (not writable by this user)", path)
        return
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{value}: {parent} is a file, not a folder", path)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{value}: cannot create it, the folder {parent} is not writable by this user", path)
            return


def _demo_footage(source: object) -> bool:
    """A source the demo detector was made for: generated scenes, or a clip ``vidflow.scenes``
    wrote (it leaves ``<clip>.gt.jsonl`` beside it)."""
    if type(source).__name__ == "SyntheticSource":
        return True
    path = getattr(source, "path", None)
    return isinstance(path, str) and os.path.isfile(path + ".gt.jsonl")


def demo_model_warning(sources: Iterable[object], models: Iterable[object]) -> str | None:
    """The warning for ``model: demo`` on footage that is not the demo's (a real file, a camera),
    else None."""
    if not any(isinstance(m, str) and m in DEMO_MODELS for m in models):
        return None
    real = [getattr(s, "uri", None) or type(s).__name__ for s in sources if not _demo_footage(s)]
    if not real:
        return None
    return (f"model: demo only knows vidflow's generated shapes (box, disc, triangle): on real footage "
            f"({', '.join(map(str, real[:3]))}{', ...' if len(real) > 3 else ''}) it draws confident boxes on "
            f"nothing. Bring a model: `yolo export model=yolo11n.pt format=onnx`, then model: yolo11n.onnx "
            f"(docs/MODELS.md)")
