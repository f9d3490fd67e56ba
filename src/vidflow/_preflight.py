"""Checks made on a YAML before anything runs: model files, input and output paths, extras.

Each raises ``ConfigError`` at the YAML path of the value; none of them creates, opens for
writing or unpickles anything. A path that cannot be reached because a folder above it cannot be
entered is reported as *permission denied* naming that folder, not as *not found*. An output on a
disk with less free space than ``warn_free_bytes`` (1 GiB by default) gets a warning (once per
output and process: :func:`warn_low_space`, also used by the sinks when they open their files).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import stat
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError
from .kinds import EXTRAS, MODEL_SUFFIXES

__all__ = ["check_model", "check_input", "check_output", "need_module", "extra_hint", "warn_low_space",
           "DEMO_MODELS", "WARN_FREE_BYTES", "demo_model_warning"]

log = logging.getLogger(__name__)

#: below this much free space on an output's disk, a warning at start
WARN_FREE_BYTES = 1 << 30

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
    st = _stat(p, value, path, what="model file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{value} is not a file", path)
    if suffix == ".pt" and not _torchscript(p):
        raise ConfigError(f"{value} is a pickled PyTorch checkpoint, and vidflow never unpickles model files; "
                          + _EXPORT.format(name=p.name), path)
    if fmt == "onnx":
        need_module("onnx", "an ONNX model", path)
        if backend != "torch":
            need_module("onnxruntime", "an ONNX model (backend: torch runs it without onnxruntime on CUDA)", path)


def _can(p: Path, mode: int) -> bool:
    """``os.access`` for the effective user (the one that will open the file)."""
    if os.access in os.supports_effective_ids:
        return os.access(p, mode, effective_ids=True)
    return os.access(p, mode)


def _blocked(p: Path) -> str:
    """`` (the folder X cannot be entered by this user)`` for the first folder above ``p`` that
    cannot be searched, else ``""``."""
    for parent in reversed(p.absolute().parents):
        if not os.path.isdir(parent):      # missing, or a file (reported as such by the caller)
            return ""
        if not _can(parent, os.X_OK):
            return f" (the folder {parent} cannot be entered by this user)"
    return ""


def _stat(p: Path, value: str, path: str, *, what: str = "file") -> os.stat_result:
    """``os.stat`` of an input, or the ``ConfigError`` that says why there is none."""
    try:
        return p.stat()
    except PermissionError:
        raise ConfigError(f"{value}: permission denied{_blocked(p)}", path) from None
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{what} not found: {value}", path) from None
    except OSError as e:
        raise ConfigError(f"{value}: {e.strerror or e}", path) from None


def check_input(value: str, path: str) -> None:
    """An input file (a source's path) exists and can be read; URLs pass."""
    if "://" in value:
        return
    p = Path(value)
    st = _stat(p, value, path)
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{value} is a folder, expected a file", path)
    if not _can(p, os.R_OK):
        raise ConfigError(f"{value}: permission denied (not readable by this user)", path)


def check_output(value: str, path: str, *, folder_ok: bool = False, warn_free_bytes: int | None = None) -> None:
    """An output path can be written: the file is writable if it exists, else the nearest
    existing folder above it is (folders still missing are created by the sink). Warns when its
    disk has less than ``warn_free_bytes`` free (default :data:`WARN_FREE_BYTES`)."""
    if "://" in value:
        return
    p = Path(value)
    blocked = _blocked(p)
    if blocked:
        raise ConfigError(f"{value}: permission denied{blocked}", path)
    if p.exists():
        if p.is_dir() and not folder_ok:
            raise ConfigError(f"{value} is a folder, expected a file path", path)
        if not _can(p, os.W_OK):
            raise ConfigError(f"{value}: permission denied (not writable by this user)", path)
        warn_low_space(p, warn_free_bytes)
        return
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{value}: {parent} is a file, not a folder", path)
            if not _can(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{value}: cannot create it, the folder {parent} is not writable by this user", path)
            warn_low_space(p, warn_free_bytes)
            return


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_low_space(path: str | os.PathLike, threshold: int | None = None) -> int | None:
    """Free bytes on the disk that holds (or will hold) the output ``path`` (None if unknown); a
    warning naming it when below ``threshold`` (default :data:`WARN_FREE_BYTES`; 0 turns it off),
    once per output path in this process (the check before the start and the sink's own when it
    opens the file say it once)."""
    threshold = WARN_FREE_BYTES if threshold is None else int(threshold)
    p = Path(path).absolute()
    where = next((q for q in (p, *p.parents) if q.exists()), None)
    if where is None:
        return None
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    if free < threshold:
        with _warned_lock:
            new = str(p) not in _warned
            _warned.add(str(p))
        if new:
            log.warning("only %.1f MB free on the disk of %s (warning threshold %.1f MB)", free / 1e6, path,
                        threshold / 1e6, extra={"path": str(path), "free_bytes": free, "threshold_bytes": threshold})
    return free
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
