"""YAML pipeline descriptions.

The graph lives in code; YAML holds parameters. Each item is ``kind: {kwargs}`` whose keys are
exactly the constructor's keyword arguments (``kind: value`` passes one positional argument).
``KINDS`` maps kinds to classes; ``module.path:name`` is the escape hatch for user code::

    device: auto
    sources: [{file: cam1.mp4}, {rtsp: {url: "rtsp://host/s1"}}]
    muxer: {batch_size: 8, max_wait_ms: 30, size: [1920, 1080]}
    stages: [{detect: {model: demo}}, {track: {}}, {call: mypkg.filters:drop_small}]
    sinks: [{jsonl: out/frames.jsonl}]

Every error is a ``ConfigError`` naming its YAML path (``stages[0].detect.conf``), raised before
anything starts.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["KINDS", "TOP_LEVEL", "load_config", "apply_overrides", "build_pipeline", "resolve_target"]

KINDS: dict[str, dict[str, str]] = {
    "sources": {
        "file": "vidflow.sources.file:FileSource",
        "synthetic": "vidflow.sources.synthetic:SyntheticSource",
        "rtsp": "vidflow.sources.rtsp:RtspSource",
        "uri": "vidflow.sources.rtsp:UriSource",
    },
    "stages": {
        "detect": "vidflow.stages.detect:Detector",
        "track": "vidflow.stages.track:Tracker",
        "classify": "vidflow.stages.classify:Classifier",
        "embed": "vidflow.stages.embed:Embedder",
        "identify": "vidflow.gallery:Identify",
        "draw": "vidflow.ops.draw:Annotate",
        "call": "",   # call: module.path:function (a callable Batch -> Batch)
    },
    "sinks": {
        "jsonl": "vidflow.sinks.jsonl:JsonlSink",
        "video": "vidflow.sinks.video:VideoSink",
    },
}
TOP_LEVEL = ("device", "sources", "muxer", "stages", "sinks", "queue_size", "strict", "decode_processes", "overlap")
_PATHLIKE = {("sources", "file"): "path", ("stages", "detect"): "model", ("stages", "classify"): "model",
             ("stages", "embed"): "model"}


def resolve_target(spec: str, path: str) -> Any:
    """Import ``module.path:name`` (``ConfigError`` at ``path`` when it cannot)."""
    if not isinstance(spec, str) or not re.fullmatch(r"[\w.]+:[\w.]+", spec):
        raise ConfigError(f"expected 'module.path:name', got {spec!r}", path)
    mod, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {spec!r}: {e}", path) from e
    return obj


def _parse_path(text: str) -> list[str | int]:
    parts: list[str | int] = []
    for tok in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(tok[1:-1]) if tok.startswith("[") else (int(tok) if tok.isdigit() else tok))
    if not parts:
        raise ConfigError(f"empty override path in {text!r}", "--set")
    return parts


def apply_overrides(cfg: dict, overrides: Sequence[str] | Mapping[str, Any] | None) -> dict:
    """Apply ``path=value`` overrides (``muxer.batch_size=16``, ``stages[0].detect.conf=0.4``,
    ``stages.0.detect.conf=0.4``, or by kind when one item has it: ``detect.conf=0.4``).
    Values are parsed as YAML scalars/lists (``size=[640,640]``)."""
    if not overrides:
        return cfg
    cfg = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else []
    if not isinstance(overrides, Mapping):
        items = []
        for o in overrides:
            if "=" not in o:
                raise ConfigError(f"expected PATH=VALUE, got {o!r}", "--set")
            k, _, v = o.partition("=")
            items.append((k.strip(), yaml.safe_load(v) if v.strip() else None))
    for key, value in items:
        parts = _parse_path(key)
        if parts[0] not in TOP_LEVEL:   # a kind name: find the single item that has it
            hits = [(sec, i) for sec in ("sources", "stages", "sinks") for i, it in enumerate(cfg.get(sec) or [])
                    if isinstance(it, Mapping) and parts[0] in it]
            if len(hits) != 1:
                raise ConfigError(f"{parts[0]!r} is not a top-level key ({', '.join(TOP_LEVEL)}) nor the kind of "
                                  f"exactly one item (found {len(hits)})", f"--set {key}")
            parts = [hits[0][0], hits[0][1], *parts]
        node: Any = cfg
        for i, p in enumerate(parts[:-1]):
            where = f"--set {key}"
            if isinstance(p, int):
                if not isinstance(node, list) or not -len(node) <= p < len(node):
                    raise ConfigError(f"index [{p}] out of range", where)
                node = node[p]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"{p!r}: cannot index into {type(node).__name__}", where)
                if node.get(p) is None or not isinstance(node[p], (dict, list)):
                    node[p] = {} if not isinstance(parts[i + 1], int) else []
                node = node[p]
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not -len(node) <= last < len(node):
                raise ConfigError(f"index [{last}] out of range", f"--set {key}")
        elif not isinstance(node, dict):
            raise ConfigError(f"cannot set {last!r} on {type(node).__name__}", f"--set {key}")
        node[last] = value
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> dict:
    """Read a YAML pipeline file and apply overrides. Returns a dict with ``_base`` (the YAML's
    folder, to resolve relative paths)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}") from e
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(cfg).__name__}")
    cfg = apply_overrides(cfg, overrides)
    cfg["_base"] = str(p.resolve().parent)
    return cfg


def _check_kwargs(target: Callable, kwargs: dict, path: str) -> None:
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(f"unknown key {k!r}; allowed: {', '.join(allowed)}", f"{path}.{k}")
    missing = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
               p.KEYWORD_ONLY) and n not in kwargs and n != "self"]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}", path)


def _resolve_path(value: Any, base: str | None) -> Any:
    """A relative path that does not exist from the working directory but does from the YAML's
    folder is taken from there."""
    if not isinstance(value, str) or base is None or "://" in value or Path(value).is_absolute():
        return value
    if not Path(value).exists() and (Path(base) / value).exists():
        return str(Path(base) / value)
    return value


def _build_item(section: str, index: int, item: Any, base: str | None) -> Any:
    path = f"{section}[{index}]"
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ConfigError(f"expected one 'kind: arguments' entry, got {item!r}", path)
    (kind, args), = item.items()
    kinds = KINDS[section]
    path = f"{path}.{kind}"
    if kind == "call":
        fn = resolve_target(args, path)
        if not callable(fn):
            raise ConfigError(f"{args!r} is not callable", path)
        return fn
    if kind in kinds:
        target = resolve_target(kinds[kind], path)
    elif isinstance(kind, str) and ":" in kind:
        target = resolve_target(kind, path)
    else:
        raise ConfigError(f"unknown kind {kind!r}; allowed: {', '.join(kinds)} or 'module.path:Name'", path)
    pathkey = _PATHLIKE.get((section, kind))
    if isinstance(args, Mapping):
        kwargs = dict(args)
        if pathkey and pathkey in kwargs:
            kwargs[pathkey] = _resolve_path(kwargs[pathkey], base)
        _check_kwargs(target, kwargs, path)
        call = lambda: target(**kwargs)  # noqa: E731
    elif args is None:
        _check_kwargs(target, {}, path)
        call = target
    else:
        arg = _resolve_path(args, base) if pathkey else args
        call = lambda: target(arg)  # noqa: E731
    try:
        return call()
    except ConfigError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ConfigError(str(e), path) from e


def build_pipeline(cfg: Mapping[str, Any], **kw: Any):
    """Build a :class:`~vidflow.pipeline.Pipeline` from a loaded config (``load_config``)."""
    from .mux import Muxer
    from .pipeline import Pipeline

    unknown = [k for k in cfg if k not in TOP_LEVEL and k != "_base"]
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOP_LEVEL)}",
                          str(unknown[0]))
    base = cfg.get("_base")
    built: dict[str, list] = {}
    for section in ("sources", "stages", "sinks"):
        items = cfg.get(section) or []
        if not isinstance(items, list):
            raise ConfigError(f"expected a list, got {type(items).__name__}", section)
        built[section] = [_build_item(section, i, it, base) for i, it in enumerate(items)]
    if not built["sources"]:
        raise ConfigError("at least one source is needed", "sources")
    mux_args = cfg.get("muxer") or {}
    if not isinstance(mux_args, Mapping):
        raise ConfigError(f"expected a mapping, got {type(mux_args).__name__}", "muxer")
    _check_kwargs(Muxer, dict(mux_args), "muxer")
    try:
        muxer = Muxer(**mux_args)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e), "muxer") from e
    opts = {k: cfg[k] for k in ("queue_size", "strict", "decode_processes", "overlap") if k in cfg}
    try:
        return Pipeline(built["sources"], muxer, built["stages"], built["sinks"], device=cfg.get("device", "auto"),
                        **opts, **kw)
    except ValueError as e:
        msg = str(e)
        where = next((k for k in ("device", "queue_size", "decode_processes") if msg.startswith(k)), "")
        raise ConfigError(msg, where) from e
