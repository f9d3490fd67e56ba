"""The few places where the server meets the pipeline, in one file.

TO BE REMOVED AT MERGE (wave 2): until the runtime helper's ``Pipeline.snapshot()`` and
``Pipeline(observers=[...])`` are on main, :func:`snapshot` copies ``pipeline.summary`` and
:func:`attach_observer` feeds an observer's ``on_batch`` from a small tap sink. Once both exist,
the fallbacks below are never taken and can be deleted (keep the two function names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

from ..stats import RunSummary

log = logging.getLogger(__name__)

__all__ = ["snapshot", "attach_observer", "attach_sink", "running", "source_ids", "build_source", "source_kinds"]


def snapshot(pipe: Any) -> RunSummary:
    """A copy of the pipeline's run summary, safe to read on the server's threads."""
    snap = getattr(pipe, "snapshot", None)
    if callable(snap):
        return snap()
    # FALLBACK (remove with Pipeline.snapshot): refresh the live counters (drops, a reconnecting
    # source's own state and last error: the pipeline copies them only for a progress callback,
    # which `vidflow serve` does not set), then a shallow copy of each SourceStats.
    refresh = getattr(pipe, "_refresh", None)
    if callable(refresh) and getattr(pipe, "progress", None) is None and running(pipe.summary):
        with contextlib.suppress(Exception):
            refresh()
    s = pipe.summary
    out = RunSummary(batches=s.batches, started=s.started, wall_s=s.wall_s, interrupted=s.interrupted)
    for sid, st in list(s.sources.items()):
        out.sources[sid] = dataclasses.replace(st)
    return out


def running(summary: RunSummary) -> bool:
    """The pipeline has started and not finished."""
    return bool(summary.started) and not summary.wall_s


def source_ids(pipe: Any) -> list:
    """Ids of the sources registered now (the summary keeps removed ones too)."""
    return [sid for sid, st in snapshot(pipe).sources.items() if st.state not in ("removed",)]


class _BatchTap:
    """FALLBACK (remove with Pipeline(observers=...)): a sink that reports each batch written to
    an observer's ``on_batch`` (frame count, no muxer wait known, per-frame receipt latency)."""

    name = "vidflow-serve-tap"

    def __init__(self, observer: Any) -> None:
        self.observer = observer

    def write(self, batch: Any) -> None:
        now = time.time_ns()
        lat = [(now - f.ntp_ns) / 1e9 for f in batch.frames if f.ntp_ns]
        try:
            self.observer.on_batch(len(batch.frames), float("nan"), lat)
        except Exception:  # noqa: BLE001 - an observer never stops the pipeline
            log.exception("observer %r failed", self.observer)

    def close(self) -> None:
        pass


def attach_observer(pipe: Any, observer: Any) -> bool:
    """Let ``observer`` watch ``pipe``: True when the pipeline calls all its hooks itself
    (``Pipeline(observers=...)``), False when only ``on_batch`` is fed (through a tap sink)."""
    obs = getattr(pipe, "observers", None)
    if isinstance(obs, list):
        obs.append(observer)
        return True
    attach_sink(pipe, _BatchTap(observer))
    log.info("this Pipeline has no observers=: per-stage timings are not reported, batches are")
    return False


def attach_sink(pipe: Any, sink: Any) -> None:
    """Append a sink to a pipeline (before or while it runs: ``Pipeline.sinks`` is read per batch)."""
    pipe.sinks.append(sink)


def build_source(item: Any) -> Any:
    """Build one source from a YAML-style item (``{"file": {"path": "cam.mp4"}}``) with the
    config's own checks; raises ``ConfigError`` whose path starts with ``sources[0]``. Only the
    table's kinds: ``module:Name`` items are refused before this is called."""
    from .. import config

    build_parts = getattr(config, "build_parts", None)
    if callable(build_parts):                 # the config helper's PipelineParts (wave 2)
        parts = build_parts({"sources": [item]})
        return next(iter(parts.sources.values()))
    # FALLBACK (remove with config.build_parts): the one-item builder of the current config.
    return config._build_item("sources", 0, item, None)   # noqa: SLF001


def source_kinds() -> list[str]:
    """The source kinds of the name table (``kinds.py`` once merged, else ``config.KINDS``)."""
    try:
        from ..kinds import KINDS
    except ImportError:
        from ..config import KINDS
    return [k for k in KINDS["sources"] if ":" not in k]
