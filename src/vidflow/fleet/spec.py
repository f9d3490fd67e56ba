"""What a fleet runs, from a ``cameras.yaml``: the cameras (source entries with stable ids), the
pipeline template every worker builds, and the fleet's own settings::

    fleet:                      # all optional
      name: default             # the fleet's name in Ray (``vidflow fleet apply/status`` find it)
      workers: 2                # pipeline workers (null: one per GPU of the cluster, else 1)
      num_gpus: 1               # per worker; fractional shares a GPU (0.5: two on one); null: 1 if GPUs
      num_cpus: 1               # per worker, fractional allowed
      capacity: 64              # camera cost one worker takes (a camera costs 1 unless it says)
      max_restarts: -1          # Ray restarts a dead worker this many times (-1: always)
    pipeline:                   # the template: a pipeline YAML without sources (or a path to one)
      muxer: {batch_size: 32, size: [1920, 1080]}
      stages: [{detect: {model: demo}}, {track: {}}]
      sinks: [{jsonl: out/frames.jsonl}]      # one file per worker: out/frames.w0.jsonl ...
    cameras:
      - {id: lobby, file: clips/lobby.mp4}
      - {id: gate, rtsp: {url: "rtsp://cam-gate/stream1"}, cost: 2}

A camera is any ``sources:`` entry of a pipeline YAML plus a required, unique ``id`` (its
``source_id`` in every output, kept when it moves between workers) and an optional ``cost``.
Nothing is built here (sources are built on the workers); kinds, ids and shapes are checked
and every error is a ``ConfigError`` naming the YAML path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import load_config
from ..errors import ConfigError
from ..kinds import KINDS

__all__ = ["CameraSpec", "FleetSettings", "FleetSpec", "load_fleet", "parse_cameras", "parse_fleet"]

_PATH_KEYS = ("path",)


@dataclass(frozen=True)
class CameraSpec:
    """One camera: its stable ``id``, its ``entry`` (a YAML source item without ``id``/``cost``,
    e.g. ``{"file": "/abs/cam.mp4"}``) and ``cost`` (placement weight, default 1)."""

    id: str
    entry: Mapping[str, Any]
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"CameraSpec.id: expected a non-empty string, got {self.id!r}")
        if len(self.entry) != 1:
            raise ValueError(f"CameraSpec.entry: expected one 'kind: arguments' item, got keys {list(self.entry)}")
        if not float(self.cost) > 0:
            raise ValueError(f"CameraSpec.cost: expected > 0, got {self.cost!r}")

    @property
    def kind(self) -> str:
        return next(iter(self.entry))


@dataclass(frozen=True)
class FleetSettings:
    """The ``fleet:`` section. ``num_gpus`` None: 1 when the cluster has GPUs, else 0 (CPU
    workers). ``workers`` None: one per ``num_gpus`` share of the cluster's GPUs (at least 1).
    ``move_back``: cameras return to their first worker once it is back.
    ``poll_s``: the reconciler's tick; ``health_timeout_s``: a worker silent that long is
    treated as lost (and killed, so Ray restarts it); ``release_timeout_s``: how long a camera
    added again waits for its worker to release its previous run (removed a moment ago) before
    that counts as a failure; ``max_camera_failures``: consecutive
    failures before a camera is marked failed (retried meanwhile after ``backoff_s``, doubling up
    to ``max_backoff_s``); ``keep_records``: per-frame records each worker keeps for
    ``Fleet.records()`` (0: none); ``env``: environment variables of the worker processes."""

    name: str = "default"
    workers: int | None = None
    num_gpus: float | None = None
    num_cpus: float = 1.0
    capacity: float = 64.0
    max_restarts: int = -1
    move_back: bool = False
    poll_s: float = 0.5
    health_timeout_s: float = 10.0
    release_timeout_s: float = 30.0
    max_camera_failures: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    keep_records: int = 0
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {"num_gpus": self.num_gpus is None or self.num_gpus >= 0, "num_cpus": self.num_cpus >= 0,
                  "capacity": self.capacity > 0, "poll_s": self.poll_s > 0, "health_timeout_s": self.health_timeout_s > 0,
                  "release_timeout_s": self.release_timeout_s > 0,
                  "max_camera_failures": self.max_camera_failures >= 1, "backoff_s": self.backoff_s >= 0,
                  "max_backoff_s": self.max_backoff_s >= 0, "keep_records": self.keep_records >= 0,
                  "max_restarts": self.max_restarts >= -1,
                  "workers": self.workers is None or self.workers >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"FleetSettings: out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


@dataclass(frozen=True)
class FleetSpec:
    """A whole ``cameras.yaml``: settings, the pipeline ``template`` (a pipeline YAML mapping
    without ``sources``; ``_base`` is its folder) and the cameras in order."""

    settings: FleetSettings
    template: Mapping[str, Any]
    cameras: tuple[CameraSpec, ...]


def _absolute(entry: dict[str, Any], base: str | None) -> dict[str, Any]:
    """Relative file paths of a source entry made absolute against the YAML's folder (workers run
    elsewhere: in another working directory, or on another node sharing the storage)."""
    (kind, args), = entry.items()
    if base is None:
        return entry
    def fix(v: Any) -> Any:
        if isinstance(v, str) and "://" not in v and not os.path.isabs(v):
            p = Path(base) / v
            return str(p) if p.exists() or not Path(v).exists() else str(Path(v).resolve())
        return v
    if isinstance(args, str) and kind == "file":
        return {kind: fix(args)}
    if isinstance(args, Mapping) and kind == "file":
        return {kind: {k: fix(v) if k in _PATH_KEYS else v for k, v in args.items()}}
    return entry


def parse_cameras(items: Any, *, base: str | None = None, where: str = "cameras") -> tuple[CameraSpec, ...]:
    """Check a list of camera entries (``{id, kind: args, cost?}``) and return their specs."""
    if not isinstance(items, list):
        raise ConfigError(f"expected a list of camera entries, got {type(items).__name__}", where)
    out: list[CameraSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        path = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"expected a mapping with 'id' and one 'kind: arguments' item, got {item!r}", path)
        item = dict(item)
        cid, cost = item.pop("id", None), item.pop("cost", 1.0)
        if cid is None:
            raise ConfigError("every camera needs a stable 'id' (its source_id in the outputs)", path)
        if not isinstance(cid, (str, int)) or isinstance(cid, bool) or str(cid) == "":
            raise ConfigError(f"expected a string (or integer) id, got {cid!r}", f"{path}.id")
        cid = str(cid)
        if cid in seen:
            raise ConfigError(f"camera id {cid!r} is used twice", f"{path}.id")
        seen.add(cid)
        if not isinstance(cost, (int, float)) or isinstance(cost, bool) or not cost > 0:
            raise ConfigError(f"expected a number > 0, got {cost!r}", f"{path}.cost")
        if len(item) != 1:
            raise ConfigError(f"expected one 'kind: arguments' item besides 'id' and 'cost', got keys {list(item)}",
                              path)
        kind = next(iter(item))
        if kind not in KINDS["sources"] and not (isinstance(kind, str) and ":" in kind):
            raise ConfigError(f"unknown source kind {kind!r}; allowed: {', '.join(KINDS['sources'])} or "
                              f"'module.path:Name' (user code)", f"{path}.{kind}")
        out.append(CameraSpec(cid, _absolute(copy.deepcopy(item), base), float(cost)))
    return tuple(out)


_SETTING_TYPES: dict[str, type | tuple[type, ...]] = {"name": str, "workers": (int, type(None)), "num_gpus": (int, float, type(None)),
                  "num_cpus": (int, float), "capacity": (int, float), "max_restarts": int, "move_back": bool, "poll_s": (int, float),
                  "health_timeout_s": (int, float), "release_timeout_s": (int, float), "max_camera_failures": int, "backoff_s": (int, float),
                  "max_backoff_s": (int, float), "keep_records": int, "env": Mapping}


def parse_fleet(section: Any, where: str = "fleet") -> FleetSettings:
    """Check the ``fleet:`` section and return its settings."""
    if section is None:
        return FleetSettings()
    if not isinstance(section, Mapping):
        raise ConfigError(f"expected a mapping, got {type(section).__name__}", where)
    for k, v in section.items():
        if k not in _SETTING_TYPES:
            raise ConfigError(f"unknown key {k!r}; allowed: {', '.join(_SETTING_TYPES)}", f"{where}.{k}")
        want = _SETTING_TYPES[k]
        if isinstance(v, bool) and want is not bool or not isinstance(v, want):
            raise ConfigError(f"expected {want}, got {v!r}", f"{where}.{k}")
    kw = dict(section)
    if "env" in kw:
        kw["env"] = {str(a): str(b) for a, b in kw["env"].items()}
    try:
        return FleetSettings(**kw)
    except ValueError as e:
        raise ConfigError(str(e), where) from None


def _template(value: Any, base: str | None) -> dict[str, Any]:
    if value is None:
        raise ConfigError("a 'pipeline' template is needed (a mapping, or the path of a pipeline YAML)", "pipeline")
    if isinstance(value, str):
        p = Path(value) if os.path.isabs(value) or base is None else Path(base) / value
        tpl = load_config(p)
    elif isinstance(value, Mapping):
        tpl = {**copy.deepcopy(dict(value)), "_base": base}
    else:
        raise ConfigError(f"expected a mapping or a path, got {type(value).__name__}", "pipeline")
    if tpl.get("sources"):
        raise ConfigError("the template's sources come from 'cameras'; remove them from the template", "pipeline.sources")
    tpl.pop("sources", None)
    return tpl


def load_fleet(path: str | os.PathLike) -> FleetSpec:
    """Read a ``cameras.yaml`` (see the module docstring)."""
    cfg = load_config(os.fspath(path))
    base = cfg.pop("_base", None)
    unknown = [k for k in cfg if k not in ("fleet", "pipeline", "cameras")]
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; allowed: fleet, pipeline, cameras", str(unknown[0]))
    return FleetSpec(parse_fleet(cfg.get("fleet")), _template(cfg.get("pipeline"), base),
                     parse_cameras(cfg.get("cameras") or [], base=base))


def dump_cameras(cameras: Sequence[CameraSpec]) -> str:
    """The cameras as YAML (what ``vidflow fleet status`` shows of the desired set)."""
    return yaml.safe_dump([{"id": c.id, **dict(c.entry), **({"cost": c.cost} if c.cost != 1.0 else {})}
                           for c in cameras], sort_keys=False)
