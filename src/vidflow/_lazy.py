"""Resolve ``"module.path:Name"`` (a ``kinds.py`` entry) to the object, once, cached.

Used by the package's lazy exports, the YAML loader and the engines. Import errors propagate
unchanged (``ModuleNotFoundError.name`` says which module is missing).
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

__all__ = ["resolve", "split", "SPEC"]

#: ``module.path:attr.path`` with Python identifiers only
SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def split(spec: str) -> tuple[str, str]:
    """``"a.b:C.d"`` -> ``("a.b", "C.d")``; ``ValueError`` for anything else."""
    if not isinstance(spec, str) or not SPEC.fullmatch(spec):
        raise ValueError(f"expected 'module.path:Name', got {spec!r}")
    mod, _, attr = spec.partition(":")
    return mod, attr


@functools.cache
def resolve(spec: str) -> Any:
    """Import the module of ``spec`` and return the attribute it names."""
    mod, attr = split(spec)
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
