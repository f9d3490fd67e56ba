"""Stopping ``vidflow run`` / ``vidflow serve`` on SIGTERM and SIGINT without losing output.

- first signal: a graceful stop (``stop(drain=True)``): the sources stop, queued batches drain,
  every sink flushes and closes (MP4 finalised, JSONL ends on a complete line), the summary is
  printed, and the exit code is ``128 + signal`` (130 SIGINT, 143 SIGTERM);
- a second signal, or ``timeout`` seconds without the run finishing: stop now
  (``stop(drain=False)``): queued work is dropped, the sinks still close, so files stay readable;
- a third signal, or ``grace`` more seconds (the CLI: ``timeout`` again, at least 1 s): the summary so far is printed and the process leaves
  at once (``os._exit``); outputs are still readable, as after a hard kill (fragmented MP4, JSONL
  written a complete line at a time).

The handler itself only writes a byte to a pipe (safe whatever the main thread holds); a watcher
thread does the stopping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["GracefulStop", "SIGNALS"]

log = logging.getLogger("vidflow.cli")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DONE = b"\0"


class GracefulStop:
    """A context manager around a run: ``stop(drain)`` is called from the watcher thread;
    ``last_words()`` (the summary) is printed before a forced exit. ``signum`` / ``exit_code``
    tell whether a signal ended the run."""

    def __init__(self, stop: Callable[[bool], Any], *, timeout: float = 10.0, grace: float = 10.0,
                 last_words: Callable[[], Any] | None = None) -> None:
        self._stop, self.timeout, self.grace, self._last_words = stop, float(timeout), float(grace), last_words
        self.signum: int | None = None
        self.count = 0
        self._r, self._w = os.pipe()
        self._old: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self.installed = False

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        self.count += 1
        with contextlib.suppress(OSError):
            os.write(self._w, bytes([signum]))

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
            self.installed = True
        self._thread = threading.Thread(target=self._watch, name="vidflow-signals", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        with contextlib.suppress(OSError):
            os.write(self._w, _DONE)
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _next(self, timeout: float | None) -> bytes | None:
        """The next byte from the handler (or ``_DONE``); None after ``timeout`` seconds."""
        try:
            ready, _, _ = select.select([self._r], [], [], timeout)
            return os.read(self._r, 1) if ready else None
        except (OSError, ValueError):      # closed by __exit__ after its wait for this thread
            return _DONE

    def _name(self, b: bytes) -> str:
        try:
            return signal.Signals(b[0]).name
        except (ValueError, IndexError):
            return str(b[0])

    def _watch(self) -> None:
        b = self._next(None)
        if b in (_DONE, b""):
            return
        log.warning("stopping: finishing queued batches and closing the outputs (again to stop now)",
                    extra={"signal": self._name(b or b""), "stop_timeout_s": self.timeout})
        self._call(True)
        b = self._next(self.timeout)
        if b == _DONE:
            return
        log.warning("stopping now: queued batches dropped, outputs being closed",
                    extra={"signal": self._name(b) if b else None,
                           "reason": "second signal" if b else "stop_timeout passed"})
        self._call(False)
        b = self._next(self.grace)
        if b == _DONE:
            return
        log.error("exiting without waiting for the pipeline; outputs stay readable up to their last complete "
                  "record", extra={"reason": "third signal" if b else "not finished in time",
                                   "exit_code": self.exit_code})
        if self._last_words is not None:
            with contextlib.suppress(Exception):
                self._last_words()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(self.exit_code or 1)

    def _call(self, drain: bool) -> None:
        try:
            self._stop(drain)
        except Exception as e:  # noqa: BLE001 - a failed stop must not kill the watcher
            log.error("stop failed: %s: %s", type(e).__name__, e)
