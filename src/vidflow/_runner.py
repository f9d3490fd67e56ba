"""Running a pipeline from the command line (``vidflow run`` / ``serve``): the progress line, the
stop on SIGTERM / SIGINT (``vidflow._signals``), the summary with the sinks' states, and the exit
code (see ``vidflow.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from . import _log
from .errors import SinkError, SourceError, VidflowError, redact_uri

__all__ = ["run_to_end", "progress", "progress_text", "stop_pipeline"]

log = logging.getLogger("vidflow.cli")


def progress_text(summary: Any) -> str:
    """The live line of ``vidflow run``: sources running (and the others' states), frames, fps,
    drops, elapsed time."""
    states = Counter(s.state for s in summary.sources.values())
    others = ", ".join(f"{n} {k}" for k, n in sorted(states.items()) if k != "running")
    dropped = sum(s.dropped for s in summary.sources.values())
    t = int(time.monotonic() - summary.started) if summary.started else 0
    return (f"{states.get('running', 0)}/{len(summary.sources)} sources running" + (f" ({others})" if others else "")
            + f" | {summary.frames} frames, {summary.fps:.1f} fps | {dropped} dropped"
            + f" | {t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}")


def progress(summary: Any) -> None:
    """Progress callback: a status line below the logs on a terminal, nothing otherwise."""
    _log.status(progress_text(summary)[:200])


def stop_pipeline(pipe: Any, drain: bool, timeout: float | None) -> None:
    """The one place the CLI stops a running pipeline (from the signal watcher's thread).

    ``drain``: let queued batches through first; else stop now (sinks drop their queues, still
    close their files). Pipelines with ``stop(drain=, timeout=)`` get both; today's ``stop()`` is
    called plain (it ends the run after the batches already handed to the stages)."""
    if "drain" in inspect.signature(pipe.stop).parameters:
        pipe.stop(drain=drain, timeout=timeout)
    else:
        pipe.stop()
    if not drain:
        for sink in pipe.sinks:
            abort = getattr(sink, "abort", None)
            if callable(abort):
                abort()


def _sink_table(pipe: Any) -> str:
    """One line per sink that reports ``stats()``: state, items written and dropped, error."""
    rows = []
    for sink in pipe.sinks:
        stats = getattr(sink, "stats", None)
        try:
            d = stats() if callable(stats) else None
        except Exception:  # noqa: BLE001 - a summary line is best effort
            d = None
        if not isinstance(d, dict):
            continue
        rows.append((str(d.get("name") or type(sink).__name__), str(d.get("state", "?")), str(d.get("written", "")),
                     str(d.get("dropped", "")), redact_uri(d.get("error") or "")))
    if not rows:
        return ""
    rows.insert(0, ("sink", "state", "written", "dropped", "error"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(n) for c, n in zip(r[:4], w)) + ("  " + r[4] if r[4] else "") for r in rows)


def _failed_sinks(pipe: Any) -> list[str]:
    out = []
    for sink in pipe.sinks:
        with contextlib.suppress(Exception):
            d = sink.stats()
            if d.get("state") == "failed":
                out.append(str(d.get("name")))
    return out


def _print_summary(pipe: Any, before_run_s: float | None = None) -> None:
    _log.clear_status()
    print(pipe.summary.table())
    first = getattr(pipe.summary, "first_batch_s", None)
    if before_run_s is not None:       # what the process did before run(): imports, YAML, models
        tail = f", first batch {before_run_s + first:.2f} s after it" if first is not None else ""
        print(f"process: run() {before_run_s:.2f} s after the process started (interpreter, imports, "
              f"pipeline built){tail}")
    sinks = _sink_table(pipe)
    if sinks:
        print(sinks)
    sys.stdout.flush()


def run_to_end(pipe: Any, args: argparse.Namespace) -> int:
    """Run ``pipe`` under SIGINT/SIGTERM handling (``vidflow._signals``); print the summary;
    return the exit code (see the module text)."""
    from ._signals import GracefulStop

    timeout = args.stop_timeout if args.stop_timeout is not None else getattr(pipe, "stop_timeout", None)
    timeout = 10.0 if timeout is None else float(timeout)
    from .runtime.startup import process_age_s

    before: list[float | None] = [None]      # set just before run()
    stopper = GracefulStop(lambda drain: stop_pipeline(pipe, drain, timeout), timeout=timeout, grace=max(1.0, timeout),
                           last_words=lambda: _print_summary(pipe, before[0]))
    log.info("run started", extra={"pipeline": args.pipeline, "sources": len(pipe.summary.sources),
                                   "sinks": len(pipe.sinks), "pid": os.getpid()})
    settings = getattr(pipe, "process_settings", None)     # torch threads, gc freeze: the process's own
    code = 0
    try:
        with stopper, (settings() if callable(settings) else contextlib.nullcontext()):
            try:
                before[0] = process_age_s()
                pipe.run()
            finally:
                _log.clear_status()        # the live line ends with the run, before any last word
    except KeyboardInterrupt:      # (no handler installed: not the main thread)
        pipe.summary.interrupted = True
        code = 130
    except SourceError as e:       # logged when it failed, and in the summary: named here, not repeated
        log.error("run failed: source %s failed (its error is above)", e.source_id, extra={"source": e.source_id})
        code = 1
    except SinkError as e:
        failed = _failed_sinks(pipe)
        if failed:
            log.error("run failed: sink %s failed (its error is above)", ", ".join(failed), extra={"sink": failed[0]})
        else:
            log.error("run failed: %s", e)
        code = 1
    except VidflowError as e:
        log.error("run failed: %s", e)
        code = 1
    except Exception as e:  # noqa: BLE001 - a bug still ends with the summary and exit code 1
        log.error("run failed: unexpected %s: %s", type(e).__name__, e, exc_info=True)
        code = 1
    if stopper.signum is not None:
        pipe.summary.interrupted = True
        code = code or (stopper.exit_code or 0)
    _print_summary(pipe, before[0])
    log.info("run finished", extra={"exit_code": code, "frames": pipe.summary.frames,
                                    "wall_s": round(pipe.summary.wall_s, 3),
                                    "signal": signal.Signals(stopper.signum).name if stopper.signum else None})
    return code
