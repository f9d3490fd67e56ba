"""vidflow: GPU video analytics in Python.

Decode many streams (NVDEC on CUDA, FFmpeg on CPU), batch them, run detectors, trackers and
secondary models, and reach every tensor zero-copy through DLPack. See DESIGN.md.

The public names below are imported lazily, so ``import vidflow`` stays fast and a missing
optional dependency only matters for the part that needs it.
"""

from __future__ import annotations

from typing import Any

from .kinds import exports as _exports

__version__ = "0.1.0"

#: public name -> "module:Name", from the name table (vidflow.kinds): every kind's class plus
#: the core types, errors, the pipeline and the engines
_EXPORTS = _exports()

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    spec = _EXPORTS.get(name)
    if spec is None:
        raise AttributeError(f"module 'vidflow' has no attribute {name!r}")
    from ._lazy import resolve

    value = resolve(spec)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
