"""YAML pipeline descriptions -> :class:`PipelineParts` (built, checked objects).

The graph lives in code; YAML holds parameters. Each item is ``kind: {kwargs}`` whose keys are
exactly the constructor's keyword arguments (``kind: value`` passes its first argument). Kinds
come from ``vidflow.kinds``; ``module.path:Name`` (and ``call: module.path:fn``) names user code,
imported only when the run allows it (``vidflow._usercode``: ``--allow-code``,
``VIDFLOW_ALLOW_CODE``)::

    device: auto
    sources: [{file: cam1.mp4, id: lobby}, {rtsp: {url: "rtsp://host/s1"}}]
    muxer: {batch_size: 8, max_wait_ms: 30, size: [1920, 1080]}
    stages: [{detect: {model: demo}}, {track: {}}, {call: mypkg.filters:drop_small}]
    sinks: [{jsonl: out/frames.jsonl}]

Every value is checked against the constructor's annotation (``vidflow._validate``: no
coercion), model files and paths are checked (``vidflow._preflight``), and every error is a
``ConfigError`` whose ``path`` is the YAML path (``stages[0].detect.conf``), raised before
anything starts. This module never imports the pipeline: ``Pipeline.from_yaml`` takes the parts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import _lazy, _preflight, _validate
from ._usercode import allow_list, import_user
from .errors import ConfigError, redact_uri
from .kinds import KINDS, MUXER, YAML_SECTIONS

__all__ = ["SETTINGS", "Setting", "Part", "PipelineParts", "TOP_LEVEL", "load_config", "apply_overrides",
           "build_parts", "parse_overrides"]


@dataclass(frozen=True)
class Setting:
    """A top-level key of a pipeline YAML: its type, default, meaning and lower bound."""

    annotation: Any
    default: Any
    doc: str
    minimum: float | None = None


SETTINGS: dict[str, Setting] = {
    "device": Setting(str, "auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'"),
    "queue_size": Setting(int, 8, "frames queued per source before a file waits / a live source drops", 1),
    "strict": Setting(bool, True, "raise a failed source's error from run() once the others have finished"),
    "torch_threads": Setting(int | None, None, "torch's intra-op CPU threads while the pipeline runs", 1),
    "decode_processes": Setting(int, 0, "decode in K worker processes (0: a thread per source)", 0),
    "overlap": Setting(bool | None, None, "run the later stages and the sinks one batch behind on a second "
                                         "thread (null: on for CUDA)"),
    "warmup": Setting(bool | None, None, "prepare every batch size before the sources start (null: on for CUDA)"),
    "progress_every": Setting(float, 1.0, "seconds between progress callbacks", 0),
    "stop_timeout": Setting(float, 10.0, "seconds allowed to drain queued batches after a stop", 0),
    "strict_device": Setting(bool, False, "raise when a stage copies an image-sized tensor to the host, naming the "
                                          "stage and its shape"),
    "http": Setting(str | int | None, None, "serve /metrics and /healthz on 'host:port' or a port"),
}
TOP_LEVEL = (*SETTINGS, "sources", "muxer", "stages", "sinks")
_PATHS_IN = {"sources": "input", "stages": "input", "sinks": "output"}


@dataclass(frozen=True)
class Part:
    """One built YAML item, for ``vidflow check``: its YAML path, kind, target and arguments
    (the YAML's values; ``defaults`` holds the rest)."""

    path: str
    kind: str
    target: str
    args: Mapping[str, Any]
    obj: Any = field(repr=False)


@dataclass(frozen=True)
class PipelineParts:
    """What a YAML describes, built and checked: ``sources`` by id (YAML ``id:``, else the
    position), the muxer, stages, sinks and the top-level ``settings`` given."""

    sources: Mapping[int | str, Any]
    muxer: Any
    stages: tuple[Any, ...]
    sinks: tuple[Any, ...]
    settings: Mapping[str, Any]
    parts: tuple[Part, ...] = ()

    def __post_init__(self) -> None:
        unknown = [k for k in self.settings if k not in SETTINGS]
        if unknown:
            raise ValueError(f"PipelineParts.settings: unknown key(s) {unknown}")

    def kwargs(self, accepted: Iterable[str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``Pipeline(...)``. With ``accepted`` (the Pipeline's parameter
        names), a setting it does not take is a ``ConfigError`` naming the key, not a TypeError."""
        if accepted is not None:
            names = set(accepted)
            for k in self.settings:
                if k not in names:
                    raise ConfigError(f"{k!r} is a known setting, but this Pipeline does not take it", k)
        return {"sources": dict(self.sources), "muxer": self.muxer, "stages": list(self.stages),
                "sinks": list(self.sinks), **self.settings}


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """``["muxer.batch_size=16"]`` -> ``[("muxer.batch_size", 16)]`` (values read as YAML)."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    items = []
    for o in overrides:
        if not isinstance(o, str) or "=" not in o:
            raise ConfigError(f"expected PATH=VALUE, got {o!r}", "--set")
        k, _, v = o.partition("=")
        try:
            items.append((k.strip(), yaml.safe_load(v) if v.strip() else None))
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot read the value {v!r} as YAML: {e}", f"--set {k.strip()}") from None
    return items


def _parse_path(text: str) -> list[str | int]:
    import re

    parts: list[str | int] = [int(t[1:-1]) if t.startswith("[") else (int(t) if t.isdigit() else t)
                              for t in re.findall(r"[^.\[\]]+|\[\d+\]", text)]
    if not parts:
        raise ConfigError(f"empty override path in {text!r}", "--set")
    return parts


def apply_overrides(cfg: dict, overrides: Sequence[str] | Mapping[str, Any] | None) -> dict:
    """Apply ``path=value`` overrides (``muxer.batch_size=16``, ``stages[0].detect.conf=0.4``,
    ``stages.0.detect.conf=0.4``, or by kind when one item has it: ``detect.conf=0.4``).
    Values are parsed as YAML scalars/lists (``size=[640,640]``) and checked like the YAML's."""
    items = parse_overrides(overrides)
    if not items:
        return cfg
    cfg = copy.deepcopy(cfg)
    for key, value in items:
        parts = _parse_path(key)
        where = f"--set {key}"
        if parts[0] not in TOP_LEVEL:   # a kind name: find the single item that has it
            hits = [(sec, i) for sec in YAML_SECTIONS for i, it in enumerate(cfg.get(sec) or [])
                    if isinstance(it, Mapping) and parts[0] in it]
            if len(hits) != 1:
                raise ConfigError(f"{parts[0]!r} is not a top-level key ({', '.join(TOP_LEVEL)}) nor the kind of "
                                  f"exactly one item (found {len(hits)})", where)
            parts = [hits[0][0], hits[0][1], *parts]
        node: Any = cfg
        for i, p in enumerate(parts[:-1]):
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
                raise ConfigError(f"index [{last}] out of range", where)
        elif not isinstance(node, dict):
            raise ConfigError(f"cannot set {last!r} on {type(node).__name__}", where)
        node[last] = value
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> dict:
    """Read a YAML pipeline file and apply overrides. Returns a new dict with ``_base`` (the
    YAML's folder: relative input paths and user modules are also looked up there)."""
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
    return {**cfg, "_base": str(p.resolve().parent)}


def _resolve_path(value: Any, base: str | None) -> Any:
    """A relative input path that does not exist from the working directory but does from the
    YAML's folder is taken from there."""
    if not isinstance(value, str) or base is None or "://" in value or Path(value).is_absolute():
        return value
    if not Path(value).exists() and (Path(base) / value).exists():
        return str(Path(base) / value)
    return value


def _is_path(ann: Any) -> bool:
    return "path" in _validate.describe(ann).split(" | ")


@dataclass(frozen=True)
class _Ctx:
    base: str | None
    allowed: tuple[str, ...]


def _target(section: str, kind: str, path: str, ctx: _Ctx) -> tuple[Any, str]:
    kinds = KINDS[section]
    if kind in kinds:
        spec = kinds[kind]
        try:
            return _lazy.resolve(spec), spec
        except ModuleNotFoundError as e:
            if e.name and not e.name.startswith("vidflow"):
                raise ConfigError(f"the {kind!r} kind needs the Python package {e.name!r}, which is not installed: "
                                  f"{_preflight.extra_hint(e.name)}", path) from e
            raise
    if isinstance(kind, str) and ":" in kind:
        return import_user(kind, path, allowed=ctx.allowed, base=ctx.base), kind
    raise ConfigError(f"unknown kind {kind!r}; allowed: {', '.join(kinds)} or 'module.path:Name' "
                      f"(user code, with --allow-code)", path)


def _check_args(target: Any, args: dict[str, Any], path: str, section: str, ctx: _Ctx) -> dict[str, Any]:
    params, open_kw = _validate.params_of(target)
    by_name = {p.name: p for p in params}
    for k in args:
        if k not in by_name and not open_kw:
            raise ConfigError(f"unknown key {k!r}; allowed: {', '.join(by_name)}", f"{path}.{k}")
    missing = [p.name for p in params if p.required and p.name not in args]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}", path)
    out = dict(args)
    for k, v in args.items():
        p = by_name.get(k)
        if p is None:
            continue
        _validate.check(v, p.annotation, f"{path}.{k}")
        if isinstance(v, str) and _PATHS_IN[section] == "input" and (_is_path(p.annotation) or k == "model"):
            out[k] = v = _resolve_path(v, ctx.base)
        if k == "model" and isinstance(v, str):
            _preflight.check_model(v, f"{path}.{k}", backend=args.get("backend"))
        elif isinstance(v, str) and _is_path(p.annotation):
            if _PATHS_IN[section] == "output":
                _preflight.check_output(v, f"{path}.{k}", folder_ok=args.get("tiled") is False,
                                        warn_free_bytes=args.get("warn_free_bytes"))
            elif section == "sources":
                _preflight.check_input(v, f"{path}.{k}")
    if args.get("decoder") == "nvdec":
        _preflight.need_module("PyNvVideoCodec", "decoder: nvdec", f"{path}.decoder")
    return out


def _build(target: Any, kwargs: dict[str, Any], path: str) -> Any:
    try:
        return target(**kwargs)
    except ConfigError:
        raise
    except (ValueError, OSError) as e:   # a value the annotation allows but the constructor refuses
        sub = getattr(e, "yaml_path", None)          # where inside the arguments, when it says (rois.0[1])
        if isinstance(sub, str) and sub:
            raise ConfigError(redact_uri(getattr(e, "reason", str(e))), f"{path}.{sub}") from e
        raise ConfigError(redact_uri(str(e)), path) from e


def _build_item(section: str, index: int, item: Any, ctx: _Ctx) -> tuple[Any, Any, Part]:
    path = f"{section}[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(f"expected one 'kind: arguments' entry, got {_validate.show(item)}", path)
    item = dict(item)
    sid = item.pop("id", None) if section == "sources" else None
    if len(item) != 1:
        extra = " (and an optional 'id')" if section == "sources" else ""
        raise ConfigError(f"expected one 'kind: arguments' entry{extra}, got keys {list(item)}", path)
    if sid is not None:
        _validate.check(sid, int | str, f"{path}.id")
    (kind, args), = item.items()
    path = f"{path}.{kind}"
    if kind == "call" and section == "stages":
        if not isinstance(args, str):
            raise ConfigError(f"expected 'module.path:function', got {_validate.show(args)}", path)
        fn = import_user(args, path, allowed=ctx.allowed, base=ctx.base)
        if not callable(fn):
            raise ConfigError(f"{args!r} is not callable", path)
        return None, fn, Part(path, kind, args, {}, fn)
    target, spec = _target(section, kind, path, ctx)
    if args is None:
        args = {}
    elif not isinstance(args, Mapping):   # `file: a.mp4`: the first argument
        params, _ = _validate.params_of(target)
        first = next((p for p in params if p.positional), None)
        if first is None:
            raise ConfigError(f"expected a mapping of keyword arguments, got {_validate.show(args)}", path)
        args = {first.name: args}
    kwargs = _check_args(target, dict(args), path, section, ctx)
    return sid, _build(target, kwargs, path), Part(path, kind, spec, kwargs, None)


def _settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, s in SETTINGS.items():
        if k not in cfg:
            continue
        v = cfg[k]
        _validate.check(v, s.annotation, k)
        if s.minimum is not None and v is not None and v < s.minimum:
            raise ConfigError(f"expected >= {s.minimum:g}, got {_validate.show(v)}", k)
        out[k] = v
    if "device" in out:
        from .device import resolve_device

        try:
            resolve_device(out["device"])
        except ValueError as e:
            raise ConfigError(str(e), "device") from None
    return out


def build_parts(cfg: Mapping[str, Any], *, allow_code: Iterable[str] | str | None = None) -> PipelineParts:
    """Check a loaded config (``load_config``) and build its parts. ``allow_code``: modules whose
    ``module:Name`` entries may be imported (with ``$VIDFLOW_ALLOW_CODE``)."""
    unknown = [k for k in cfg if k not in TOP_LEVEL and k != "_base"]
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOP_LEVEL)}",
                          str(unknown[0]))
    ctx = _Ctx(cfg.get("_base"), allow_list(allow_code))
    settings = _settings(cfg)
    described: list[Part] = []
    built: dict[str, list] = {}
    sources: dict[int | str, Any] = {}
    for section in YAML_SECTIONS:
        items = cfg.get(section) or []
        if not isinstance(items, list):
            raise ConfigError(f"expected a list, got {type(items).__name__}", section)
        built[section] = []
        for i, it in enumerate(items):
            sid, obj, part = _build_item(section, i, it, ctx)
            described.append(Part(part.path, part.kind, part.target, part.args, obj))
            if section == "sources":
                sid = i if sid is None else sid
                if sid in sources:
                    raise ConfigError(f"source id {sid!r} is used twice", f"sources[{i}].id")
                sources[sid] = obj
            built[section].append(obj)
    if not sources:
        raise ConfigError("at least one source is needed", "sources")
    mux_args = cfg.get("muxer") or {}
    if not isinstance(mux_args, Mapping):
        raise ConfigError(f"expected a mapping, got {type(mux_args).__name__}", "muxer")
    mux_cls = _lazy.resolve(MUXER)
    mux_kw = _check_args(mux_cls, dict(mux_args), "muxer", "stages", ctx)
    muxer = _build(mux_cls, mux_kw, "muxer")
    described.insert(len(sources), Part("muxer", "muxer", MUXER, mux_kw, muxer))
    note = _preflight.demo_model_warning(sources.values(), [p.args.get("model", "demo") for p in described
                                                              if p.kind == "detect"])
    if note:
        logging.getLogger("vidflow").warning(note)
    return PipelineParts(sources, muxer, tuple(built["stages"]), tuple(built["sinks"]), settings, tuple(described))

