"""What a sink can do, declared (``runtime_checkable`` protocols, checked once at build), and
:class:`ThreadedSink`, the base that takes a sink's work off the pipeline's thread.

- :class:`Sink`: ``write(batch)`` and ``close()``. With ``overlap`` on (the default on CUDA),
  ``write`` is called on the pipeline's tail thread, not the thread that called ``run()``; calls
  are never concurrent and keep batch order.
- :class:`SupportsEndSource`: ``end_source(source_id)`` is called once after the last batch
  holding that source's frames was written (the source ended, failed or was removed).
- :class:`SupportsStats`: ``stats() -> dict`` of counters for snapshots and metrics (queue depth,
  lag, dropped, spool size...).

:class:`ThreadedSink` runs a sink's slow part (encoding, file or network I/O) on a worker thread
of its own behind a bounded queue. Declared behaviour:

- ``when_full="block"`` (default): ``write`` waits for room (back-pressure, nothing lost);
  ``"drop_oldest"``: the oldest queued item is dropped and counted in ``stats()["dropped"]``, so a
  slow sink never slows the pipeline.
- ``on_error="isolate"`` (default): a failure on the worker marks the sink ``failed`` with its
  error (``stats()["state"]``, ``stats()["error"]``), is logged once, and later writes are
  dropped and counted while the pipeline and the other sinks keep going; ``close()`` then raises
  the :class:`~vidflow.errors.SinkError`, so the run still ends with the error reported.
  ``on_error="stop"``: the error is raised from the next ``write`` (the pipeline stops).
- ``abort()`` (a stop that cannot wait, e.g. a second Ctrl-C): the queued writes are dropped and
  counted; ``close()`` then only finishes the item being written and closes the files.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Literal, Protocol, runtime_checkable

from ..batch import Batch
from ..errors import SinkError

__all__ = ["Sink", "SupportsEndSource", "SupportsStats", "ThreadedSink", "WHEN_FULL", "ON_ERROR"]

log = logging.getLogger(__name__)

WHEN_FULL = ("block", "drop_oldest")
ON_ERROR = ("isolate", "stop")


@runtime_checkable
class Sink(Protocol):
    def write(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class SupportsEndSource(Protocol):
    def end_source(self, source_id: int | str) -> None: ...


@runtime_checkable
class SupportsStats(Protocol):
    def stats(self) -> dict[str, Any]: ...


_WRITE, _END, _STOP = "write", "end", "stop"


class ThreadedSink:
    """Base class: a bounded queue and one worker thread, started on the first write.

    Subclasses override :meth:`_prepare` (caller's thread: the device-side part, e.g. drawing and
    the start of the host copy; returns the item to queue), :meth:`_process` (worker thread),
    and optionally :meth:`_end_source` and :meth:`_finish` (worker thread; ``_finish`` runs once
    at close, after the queue is drained, also after a failure so files get closed).
    """

    def __init__(self, *, name: str, queue_size: int = 8,
                 when_full: Literal["block", "drop_oldest"] = "block",
                 on_error: Literal["isolate", "stop"] = "isolate") -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full: expected one of {list(WHEN_FULL)}, got {when_full!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error: expected one of {list(ON_ERROR)}, got {on_error!r}")
        self.name, self.queue_size, self.when_full, self.on_error = str(name), int(queue_size), when_full, on_error
        self._q: collections.deque[tuple[str, Any, float]] = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: SinkError | None = None
        self._raised = False
        self._closed = False
        self._written = 0
        self._dropped = 0
        self._busy_since: float | None = None

    # ---- hooks ----------------------------------------------------------------------------
    def _prepare(self, batch: Batch) -> Any:
        return batch

    def _process(self, item: Any) -> None:
        raise NotImplementedError

    def _end_source(self, source_id: int | str) -> None:
        return None

    def _finish(self) -> None:
        return None

    # ---- caller side ----------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> SinkError | None:
        return self._error

    def write(self, batch: Batch) -> None:
        if self._closed:
            raise SinkError(f"{self.name}: write after close")
        if self._error is not None:
            self._on_failed_write()
            return
        self._put(_WRITE, self._prepare(batch))

    def end_source(self, source_id: int | str) -> None:
        """Queued behind the writes, so it runs after that source's last batch."""
        if not self._closed and self._error is None:
            self._put(_END, source_id, droppable=False)

    def _on_failed_write(self) -> None:
        with self._cv:
            self._dropped += 1
        if self.on_error == "stop" and not self._raised:
            self._raised = True
            raise self._error  # type: ignore[misc]

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"vidflow-sink-{self.name}", daemon=True)
            self._thread.start()

    def _put(self, kind: str, item: Any, *, droppable: bool = True) -> None:
        self._start()
        with self._cv:
            while len(self._q) >= self.queue_size and kind != _STOP:
                if self._error is not None:
                    break
                if self.when_full == "drop_oldest" and droppable:
                    for i, (k, _, _) in enumerate(self._q):
                        if k == _WRITE:
                            del self._q[i]
                            self._dropped += 1
                            break
                    else:
                        self._cv.wait(0.1)
                        continue
                    break
                self._cv.wait(0.1)
            if self._error is not None and kind == _WRITE:
                self._dropped += 1
            else:
                self._q.append((kind, item, time.monotonic()))
                self._cv.notify_all()
        if self._error is not None and kind == _WRITE and self.on_error == "stop" and not self._raised:
            self._raised = True
            raise self._error

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every item queued so far was processed (True), or ``timeout`` seconds passed
        or the sink failed (False). On the sink's own thread (its ``_finish``) nothing is queued
        ahead of it: True at once."""
        if threading.current_thread() is self._thread:
            return self._error is None
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._q or self._busy_since is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None or self._thread is None:
                    return False
                self._cv.wait(min(left, 0.1))
            return self._error is None

    def abort(self) -> int:
        """Drop every queued write (counted in ``stats()["dropped"]``), so that ``close()`` only
        finishes the item in progress and closes the files. Returns how many were dropped."""
        with self._cv:
            keep = [x for x in self._q if x[0] != _WRITE]
            n = len(self._q) - len(keep)
            self._q.clear()
            self._q.extend(keep)
            self._dropped += n
            self._cv.notify_all()
        if n:
            log.warning("sink %s: %d queued batch(es) dropped to stop now", self.name, n,
                        extra={"sink": self.name, "dropped": n})
        return n

    def close(self) -> None:
        """Drain the queue, run :meth:`_finish`, join the worker. Raises the sink's error, if any
        (once). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            try:
                self._finish()
            except Exception as e:  # noqa: BLE001 - reported as the sink's error
                self._fail(e)
        else:
            with self._cv:
                self._q.append((_STOP, None, time.monotonic()))
                self._cv.notify_all()
            self._thread.join()
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def stats(self) -> dict[str, Any]:
        """``state`` (idle | running | failed | closed), ``queued``, ``queue_size``, ``written``
        (items processed), ``dropped`` (dropped when full or after a failure), ``lag_s`` (age of
        the oldest item not yet processed), ``error`` (text or None)."""
        now = time.monotonic()
        with self._cv:
            oldest = [t for k, _, t in self._q if k == _WRITE][:1]
            lag = now - min([*oldest, *([self._busy_since] if self._busy_since is not None else [])], default=now)
            state = ("failed" if self._error is not None else "closed" if self._closed
                     else "running" if self._thread is not None else "idle")
            return {"name": self.name, "state": state, "queued": sum(k == _WRITE for k, _, _ in self._q),
                    "queue_size": self.queue_size, "written": self._written, "dropped": self._dropped,
                    "lag_s": round(lag, 6), "error": None if self._error is None else str(self._error)}

    def __enter__(self) -> ThreadedSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- worker side ----------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        err = e if isinstance(e, SinkError) else SinkError(f"{self.name}: {type(e).__name__}: {e}")
        if err is not e:
            err.__cause__ = e
        with self._cv:
            if self._error is None:
                self._error = err
                log.error("sink %s failed (%s): %s", self.name,
                          "isolated, the pipeline goes on" if self.on_error == "isolate" else "stopping", err,
                          extra={"sink": self.name, "state": "failed", "on_error": self.on_error})
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q:
                    self._cv.wait()
                kind, item, t = self._q.popleft()
                self._busy_since = t if kind != _STOP else None
                self._cv.notify_all()
            if kind == _STOP:
                break
            if self._error is not None:
                with self._cv:
                    self._dropped += kind == _WRITE
                    self._busy_since = None
                continue
            try:
                if kind == _WRITE:
                    self._process(item)
                else:
                    self._end_source(item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's side
                self._fail(e)
            with self._cv:
                self._written += kind == _WRITE and self._error is None
                self._busy_since = None
                self._cv.notify_all()
        try:
            self._finish()
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        with self._cv:
            self._busy_since = None
