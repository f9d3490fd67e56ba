"""Strict checks of YAML values against a constructor's annotations.

A YAML value is one of str, int, float, bool, null, list or mapping, so a check is a match of
that value against the annotation: ``int`` takes an int (not ``4.5``, not ``"8"``, not
``true``), ``float`` an int or a float, ``bool`` only ``true``/``false`` (never ``"false"``),
``str`` and paths a string, ``Literal[...]`` one of its values, ``X | Y`` either, ``Sequence[X]``
/ ``tuple[...]`` a list, ``Mapping[K, V]`` a mapping, ``Any`` anything. Nothing is coerced.

This is our own table rather than pydantic/msgspec: the annotations of the kinds are a small,
closed set (``tests/unit/test_kinds.py`` checks that every kind's annotations are in it), YAML
gives plain values only, and the message has to read ``muxer.batch_size: expected int, got
"eight"`` with the YAML path carried by the error (``ConfigError.path``), not parsed back out of
another library's text; it also adds no dependency to the core install.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import json
import os
import pathlib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from .errors import ConfigError

__all__ = ["Param", "params_of", "check", "describe", "show", "checkable", "REQUIRED"]

REQUIRED: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One keyword argument of a kind: name, annotation (resolved; ``Any`` when absent),
    default (``REQUIRED`` when none), whether it was annotated, and its documentation."""

    name: str
    annotation: Any
    default: Any
    annotated: bool
    doc: str
    positional: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Param.name: expected an identifier, got {self.name!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is reported as not annotated
        return {}


def _docs_of(target: Any) -> str:
    parts = [inspect.getdoc(target) or ""]
    if inspect.isclass(target):
        init = target.__dict__.get("__init__")
        if init is not None and init.__doc__:
            parts.append(inspect.cleandoc(init.__doc__))
    return "\n".join(parts)


_ARGS = re.compile(r"^(?:Args|Arguments|Parameters):\s*$", re.M)
_ENTRY = re.compile(r"^(\s+)([\w*]+(?:\s*[,/]\s*[\w*]+)*)\s*(?:\([^)]*\))?:\s*(.*)$")


def param_docs(target: Any) -> dict[str, str]:
    """``{name: text}`` from an ``Args:`` section (``name: text``, ``a, b: text``), else from
    the first sentence of the docstring that names ````name```` (base classes' docs too)."""
    chain = [c for c in target.__mro__ if c is not object] if inspect.isclass(target) else [target]
    out: dict[str, str] = {}
    for obj in chain:
        doc = _docs_of(obj)
        for m in _ARGS.finditer(doc):
            local: dict[str, str] = {}
            names: list[str] = []
            text: list[str] = []
            indent: int | None = None
            for line in doc[m.end():].splitlines()[1:]:
                e = _ENTRY.match(line)
                if e and (indent is None or len(e.group(1)) == indent):
                    indent, text = len(e.group(1)), [e.group(3).strip()]
                    names = [n.strip("*") for n in re.split(r"\s*[,/]\s*", e.group(2))]
                elif not line.strip() or indent is None or len(line) - len(line.lstrip()) < indent:
                    break
                else:
                    text.append(line.strip())
                for n in names:
                    local[n] = " ".join(text)
            for n, t in local.items():
                out.setdefault(n, t)
        flat = " ".join(doc.split())
        for s in re.split(r"(?<=[A-Za-z0-9)`'\"])\.\s+(?=[A-Z`])", flat):
            for chunk in re.findall(r"``(.+?)``", s):
                for name in re.findall(r"[A-Za-z_]\w*", chunk):
                    out.setdefault(name, s.rstrip(".") + ".")
    return out


def params_of(target: Any) -> tuple[tuple[Param, ...], bool]:
    """The arguments a YAML item may give ``target`` (a class or a function), and whether it
    also takes any other keyword (a ``**kwargs`` not followed). A ``**kwargs`` that a subclass
    forwards to its base class is followed into the base's ``__init__``."""
    fns: list[Any] = []
    if inspect.isclass(target):
        fns = [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__ and c is not object]
    else:
        fns = [target]
    docs = param_docs(target)
    out: dict[str, Param] = {}
    more = False
    for depth, fn in enumerate(fns):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return tuple(out.values()), True
        hints = _hints(fn)
        more = False
        for i, (name, p) in enumerate(sig.parameters.items()):
            if i == 0 and name in ("self", "cls") and inspect.isclass(target):
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
                continue
            if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or name in out:
                continue
            if depth and p.kind is not p.KEYWORD_ONLY:   # a base's positional: the subclass passes it
                continue
            out[name] = Param(name, hints.get(name, Any), p.default, name in hints, docs.get(name, ""),
                              positional=p.kind is p.POSITIONAL_OR_KEYWORD)
        if not more:
            break
    return tuple(out.values()), more


def show(value: Any) -> str:
    """A YAML value as the user wrote it: ``"eight"``, ``4.5``, ``false``, ``[1, 2]``."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_NAMES = {int: "int", float: "float", bool: "bool", str: "str", type(None): "null"}
_PATHS = (os.PathLike, pathlib.Path, pathlib.PurePath)


def _args(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann)


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) is Union or isinstance(ann, types.UnionType)


def describe(ann: Any) -> str:
    """A short name for an annotation: ``int``, ``'rgb' | 'bgr'``, ``list[int] | int | null``."""
    if ann is Any or ann is REQUIRED:
        return "any"
    if ann in _NAMES:
        return _NAMES[ann]
    if ann is None:
        return "null"
    if isinstance(ann, type) and issubclass(ann, _PATHS):
        return "path"
    origin = typing.get_origin(ann)
    if _is_union(ann):
        names = [describe(a) for a in _args(ann)]
        if "str" in names and "path" in names:
            names.remove("str")
        return " | ".join(dict.fromkeys(names))
    if origin is Literal:
        return " | ".join(json.dumps(a) if not isinstance(a, str) else repr(a) for a in _args(ann))
    if origin in (list, cabc.Sequence, cabc.MutableSequence, set, frozenset) or ann in (list, cabc.Sequence):
        a = _args(ann)
        return f"list[{describe(a[0])}]" if a else "list"
    if origin is tuple or ann is tuple:
        a = _args(ann)
        if not a or (len(a) == 2 and a[1] is Ellipsis):
            return f"list[{describe(a[0]) if a else 'any'}]"
        return "[" + ", ".join(describe(x) for x in a) + "]"
    if origin in (dict, cabc.Mapping, cabc.MutableMapping) or ann in (dict, cabc.Mapping):
        a = _args(ann)
        return f"mapping[{describe(a[0])}, {describe(a[1])}]" if a else "mapping"
    if origin is cabc.Callable or ann is cabc.Callable:
        return "callable (Python only)"
    return getattr(ann, "__name__", str(ann))


def checkable(ann: Any) -> bool:
    """Whether :func:`check` knows this annotation (the kinds test requires it)."""
    if ann is Any or ann is None or ann in _NAMES or (isinstance(ann, type) and issubclass(ann, _PATHS)):
        return True
    origin = typing.get_origin(ann)
    if _is_union(ann) or origin in (tuple, list, dict, cabc.Sequence, cabc.Mapping, cabc.MutableSequence,
                                    cabc.MutableMapping, set, frozenset):
        return all(a is Ellipsis or checkable(a) for a in _args(ann))
    if origin is Literal or origin is cabc.Callable or ann is cabc.Callable:
        return True
    return isinstance(ann, type)   # a class: YAML values never are one (Python-only argument)


def _ok(value: Any, ann: Any) -> bool:
    if ann is Any:
        return True
    if ann is None or ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str or (isinstance(ann, type) and issubclass(ann, _PATHS)):
        return isinstance(value, str)
    origin = typing.get_origin(ann)
    if _is_union(ann):
        return any(_ok(value, a) for a in _args(ann))
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in _args(ann))
    a = _args(ann)
    if origin in (list, cabc.Sequence, cabc.MutableSequence, set, frozenset):
        return isinstance(value, list) and (not a or all(_ok(v, a[0]) for v in value))
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if not a or (len(a) == 2 and a[1] is Ellipsis):
            return not a or all(_ok(v, a[0]) for v in value)
        return len(value) == len(a) and all(_ok(v, t) for v, t in zip(value, a))
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        return isinstance(value, dict) and (not a or all(_ok(k, a[0]) and _ok(v, a[1]) for k, v in value.items()))
    if ann in (list, tuple, cabc.Sequence):
        return isinstance(value, list)
    if ann in (dict, cabc.Mapping):
        return isinstance(value, dict)
    if isinstance(ann, type):
        return isinstance(value, ann)
    return True


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _inner(value: Any, ann: Any, path: str, below: bool = False) -> tuple[Any, Any, str]:
    """The innermost wrong part of ``value``: inside a mapping (and in the lists below one), the
    entry that does not match, so an error reads ``detect.rois.0[1]: expected [int, int, int,
    int], got [1, 2]``. Elsewhere, or where the annotation leaves it open (two list types), the
    whole value."""
    alts = [a for a in (_args(ann) if _is_union(ann) else (ann,)) if a is not None and a is not type(None)]
    origin = [typing.get_origin(a) or a for a in alts]
    maps = [a for a, o in zip(alts, origin) if o in (dict, cabc.Mapping, cabc.MutableMapping)]
    seqs = [a for a, o in zip(alts, origin) if o in (list, tuple, cabc.Sequence, cabc.MutableSequence)]
    if isinstance(value, dict) and len(maps) == 1 and len(_args(maps[0])) == 2:
        kt, vt = _args(maps[0])
        for k, v in value.items():
            if not _ok(k, kt):
                return k, kt, f"{path}.{k}"
            if not _ok(v, vt):
                return _inner(v, vt, f"{path}.{k}", True)
    elif below and isinstance(value, list) and len(seqs) == 1 and _args(seqs[0]):
        a = _args(seqs[0])
        if typing.get_origin(seqs[0]) is tuple and not (len(a) == 2 and a[1] is Ellipsis):
            if len(value) == len(a):
                for i, (v, t) in enumerate(zip(value, a)):
                    if not _ok(v, t):
                        return _inner(v, t, f"{path}[{i}]", True)
        else:
            for i, v in enumerate(value):
                if not _ok(v, a[0]):
                    return _inner(v, a[0], f"{path}[{i}]", True)
    return value, ann, path


def check(value: Any, ann: Any, path: str) -> None:
    """Raise ``ConfigError(f"expected {describe(ann)}, got {show(value)}", path)`` unless
    ``value`` matches ``ann``; inside a mapping, ``path`` and the message name the entry that is
    wrong (``rois.0[1]``)."""
    if _ok(value, ann):
        return
    value, ann, path = _inner(value, ann, path)
    hint = ""
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value) and "float" in describe(ann):
        hint = " (YAML reads 1e-3 as text: write 0.001 or 1.0e-3)"
    raise ConfigError(f"expected {describe(ann)}, got {show(value)}{hint}", path)
