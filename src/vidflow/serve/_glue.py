"""The few places where the server meets the pipeline, in one file: all through the pipeline's
public API (``snapshot()``, ``add_observer``, ``add_sink``) and the config's ``build_parts``."""

from __future__ import annotations

from typing import Any

from ..stats import RunSummary

__all__ = ["snapshot", "attach_observer", "attach_sink", "running", "source_ids", "build_source", "source_kinds"]


def snapshot(pipe: Any) -> RunSummary:
    """A copy of the pipeline's run summary, safe to read on the server's threads."""
    return pipe.snapshot()


def running(summary: RunSummary) -> bool:
    """The pipeline has started and not finished."""
    return bool(summary.started) and not summary.wall_s


def source_ids(pipe: Any) -> list:
    """Ids of the sources registered now (the summary keeps removed ones too)."""
    return [sid for sid, st in snapshot(pipe).sources.items() if st.state not in ("removed",)]


def attach_observer(pipe: Any, observer: Any) -> bool:
    """Let ``observer`` watch ``pipe`` (all its hooks: ``Pipeline.add_observer``). Returns True."""
    pipe.add_observer(observer)
    return True


def attach_sink(pipe: Any, sink: Any) -> None:
    """Add a sink to a pipeline, before or while it runs."""
    pipe.add_sink(sink)


def build_source(item: Any) -> Any:
    """Build one source from a YAML-style item (``{"file": {"path": "cam.mp4"}}``) with the
    config's own checks; raises ``ConfigError`` whose path starts with ``sources[0]``. Only the
    table's kinds: ``module:Name`` items are refused before this is called."""
    from ..config import build_parts

    parts = build_parts({"sources": [item]})
    return next(iter(parts.sources.values()))


def source_kinds() -> list[str]:
    """The source kinds of the name table (``vidflow.kinds``)."""
    from ..kinds import KINDS

    return [k for k in KINDS["sources"] if ":" not in k]
