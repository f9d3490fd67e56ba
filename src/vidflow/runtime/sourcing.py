"""A pipeline's sources: a thread (or a decode-process slot) each, their queues and counters;
delivering frames, ending, removing and retiring sources."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import DecodeError, SourceError, redact_uri
from ..mux import SourceQueue
from ..stats import RunSummary, SourceStats
from .observing import Observers

__all__ = ["Sourcing"]

log = logging.getLogger(__name__)

_FINAL = ("removed", "failed", "ended", "stopped")


def _counter_dict(c: Any) -> dict[str, Any]:
    """A source's ``stats()`` (a :class:`~vidflow.stats.SourceCounters`, or a dict from older
    sources) as a dict."""
    if dataclasses.is_dataclass(c) and not isinstance(c, type):
        return {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    return dict(c) if isinstance(c, Mapping) else {}


class Sourcing:
    """The sources of one pipeline, by id. ``summary`` / ``lock``: the pipeline's run summary and
    the lock every write to it holds; ``on_retired(sid)``: called once a source has ended and
    all its frames went through the muxer (the pipeline resets the stages and ends the sinks)."""

    def __init__(self, *, device: torch.device, queue_size: int, decode_processes: int, summary: RunSummary,
                 lock: threading.RLock, cond: threading.Condition, observers: Observers,
                 on_retired: Callable[[int | str], None]) -> None:
        self.device, self.queue_size, self.decode_processes = device, queue_size, decode_processes
        self.summary, self.lock, self.cond, self.observers = summary, lock, cond, observers
        self.on_retired = on_retired
        self._reg = threading.RLock()             # the tables below (re-entered by observers' snapshot())
        self.sources: dict[int | str, Any] = {}
        self.queues: dict[int | str, SourceQueue] = {}
        self._threads: dict[int | str, threading.Thread] = {}
        self._stats: dict[int | str, Callable[[], Any] | None] = {}    # bound stats(), found once
        self._handles: dict[int | str, Any] = {}                        # PooledSource of decode processes
        self._pool: Any = None
        self.running = False
        self.draining = False
        self._next_id = 0

    # -- registry ------------------------------------------------------------------------------
    def add(self, source: Any, source_id: int | str | None = None) -> int | str:
        if not callable(getattr(source, "frames", None)):
            raise ValueError(f"add_source: expected a Source (with frames() and close()), got {type(source).__name__}")
        if source_id is not None and (not isinstance(source_id, (int, str)) or isinstance(source_id, bool)):
            raise ValueError(f"add_source: source ids must be int or str, got {source_id!r}")
        stats = getattr(source, "stats", None)
        with self._reg:
            if source_id is None:
                while self._next_id in self.sources or self._next_id in self.summary.sources:
                    self._next_id += 1
                source_id = self._next_id
            if source_id in self.sources:
                raise ValueError(f"add_source: source id {source_id!r} is already in use")
            live = bool(getattr(source, "live", False))
            self.sources[source_id] = source
            self._stats[source_id] = stats if callable(stats) else None
            self.queues[source_id] = SourceQueue(source_id, maxsize=self.queue_size, live=live, cond=self.cond)
            with self.lock:
                self.summary.sources[source_id] = SourceStats(source_id, redact_uri(getattr(source, "uri", "")), live)
            if self.running:
                self.start(source_id)
        return source_id

    def remove(self, source_id: int | str) -> None:
        with self._reg:
            if source_id not in self.sources:
                raise KeyError(f"remove_source: no source with id {source_id!r}")
            q, src = self.queues[source_id], self.sources[source_id]
            self._set_state(source_id, "removed")
        q.close()
        self._close_source(source_id, src)
        if not self.running:
            self.retire(source_id)

    def _set_state(self, sid: int | str, state: str) -> None:
        with self.lock:
            st = self.summary.sources.get(sid)
            if st is None or st.state == state:
                return
            st.state = state
        if self.observers.sources:
            self.observers.source_state(sid, state)

    def _close_source(self, sid: int | str, src: Any) -> None:
        if sid in self._handles and self._pool is not None:
            self._pool.close(sid)
        try:
            src.close()
        except Exception as e:  # noqa: BLE001 - closing must not break the pipeline
            log.warning("source %s: close failed: %s", sid, redact_uri(e))

    # -- running -------------------------------------------------------------------------------
    def start_all(self) -> None:
        """Start every source not started yet; from now on an added source starts at once."""
        with self._reg:
            self.running = True
            for sid in list(self.sources):
                if not self._started(sid):
                    self.start(sid)

    def start_files(self) -> None:
        """Start the sources that are not live (their queues hold them back, nothing is dropped)
        ahead of the others: the pipeline does it before its warm-up, so that decoders open and
        decode processes come up meanwhile."""
        with self._reg:
            for sid, src in list(self.sources.items()):
                if not self._started(sid) and not getattr(src, "live", False):
                    self.start(sid)

    def _started(self, sid: int | str) -> bool:
        with self.lock:
            return self.summary.sources[sid].started is not None     # (a re-added id has new stats)

    def start(self, sid: int | str) -> None:
        """Start one source (the caller holds the registry lock)."""
        with self.lock:
            st = self.summary.sources[sid]
            st.started = time.monotonic()
        self._set_state(sid, "connecting" if st.live else "running")
        src = self.sources[sid]
        if self.decode_processes:
            from ..sources.pool import DecodePool, poolable
            if poolable(src):
                if self._pool is None:
                    # ring slots: the queue, plus a batch being converted and one waiting for its release
                    self._pool = DecodePool(self.decode_processes, self.device, slots=self.queue_size + 4)
                self._handles[sid] = self._pool.open(sid, src, lambda f, sid=sid: self.deliver(sid, f, block=False),
                                                     lambda err, sid=sid: self.ended(sid, err))
                return
        t = threading.Thread(target=self._produce, args=(sid,), name=f"vidflow-source-{sid}", daemon=True)
        self._threads[sid] = t
        t.start()

    def deliver(self, sid: int | str, frame: Any, *, block: bool = True) -> bool:
        """A source's frame into its queue; False when the queue no longer takes frames."""
        q, st = self.queues.get(sid), self.summary.sources.get(sid)
        if q is None or st is None or self.draining:
            return False
        with self.lock:
            st.decoded += 1
            first = st.state in ("connecting", "backoff")
        if first:
            self._set_state(sid, "running")
        return q.put(frame, block=block)

    def ended(self, sid: int | str, err: BaseException | None, q: SourceQueue | None = None) -> None:
        """A source's end of stream (``err`` None) or failure: record it, close its queue."""
        q = self.queues.get(sid) if q is None else q      # (a SourceQueue has len(): never `q or`)
        st, src = self.summary.sources.get(sid), self.sources.get(sid)
        if q is None or st is None:
            return
        try:
            state = None
            if err is not None:
                if not q.closed and not self.draining:    # (removed or stopped meanwhile: no failure)
                    if not isinstance(err, SourceError):
                        err = DecodeError(f"{type(err).__name__}: {err}", source_id=sid, uri=getattr(src, "uri", None))
                    with self.lock:
                        st.error = err
                        st.errors += 1
                    state = "failed"
                    log.error("%s", err)
            elif st.state != "removed":
                state = "stopped" if q.closed or self.draining else "ended"
            if state is not None:
                self._set_state(sid, state)
        finally:
            st.ended = time.monotonic()
            q.finish()

    def _produce(self, sid: int | str) -> None:
        src, q = self.sources[sid], self.queues[sid]
        # on CUDA, whatever the source does on the device (uploads, copies) goes to a stream of its
        # own thread, so it never waits for the stages' work queued on the pipeline's stream
        side: Any = contextlib.nullcontext()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            side = torch.cuda.stream(torch.cuda.Stream(self.device))
        err: BaseException | None = None
        try:
            with side:
                for frame in src.frames(device=self.device, source_id=sid):
                    if not self.deliver(sid, frame):
                        break
        except Exception as e:  # noqa: BLE001 - a source fails alone; reported, never swallowed
            err = e
        self.ended(sid, err, q)

    def retire(self, sid: int | str) -> None:
        """A source has ended and all its frames went through: release it everywhere."""
        with self._reg:
            q = self.queues.pop(sid, None)
            src = self.sources.pop(sid, None)
            t = self._threads.pop(sid, None)
            reader = self._stats.pop(sid, None)
            handle = self._handles.pop(sid, None)
        if q is not None:
            self._copy_counters(sid, q, handle.stats if handle is not None else reader, None)
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
        if src is not None:
            try:
                src.close()
            except Exception as e:  # noqa: BLE001
                log.warning("source %s: close failed: %s", sid, redact_uri(e))
        self.on_retired(sid)

    # -- stopping ------------------------------------------------------------------------------
    def stop_sources(self) -> None:
        """``stop(drain=True)``: no new frames; each source is closed and ends as ``"stopped"``."""
        self.draining = True
        with self._reg:
            items = list(self.sources.items())
        for sid, src in items:
            self._close_source(sid, src)

    def close_queues(self) -> None:
        """Stop now: queued frames are discarded, producers return."""
        with self.cond:
            for q in list(self.queues.values()):
                q.close()

    def shutdown(self) -> None:
        self.close_queues()
        for sid in list(self.sources):
            if sid in self._handles and self._pool is not None:
                self._pool.close(sid)
            self.retire(sid)
        if self._pool is not None:
            self._pool.shutdown()
        self.running = False

    # -- counters ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Copy live counters (drops, a reconnecting source's own state and counters) into the summary."""
        with self._reg:
            items = [(sid, q, self._handles[sid].stats if sid in self._handles else self._stats.get(sid),
                      self._handles.get(sid) or self.sources.get(sid)) for sid, q in self.queues.items()]
        for sid, q, reader, src in items:
            self._copy_counters(sid, q, reader, getattr(src, "state", None))

    def _copy_counters(self, sid: int | str, q: SourceQueue, reader: Callable[[], Any] | None,
                       state: Any) -> None:
        d: dict[str, Any] = {}
        if reader is not None:
            try:
                d = _counter_dict(reader())
            except Exception as e:  # noqa: BLE001 - counters are best effort, never a reason to fail
                log.debug("source %s: stats() failed: %s", sid, redact_uri(e))
        with self.lock:
            st = self.summary.sources.get(sid)
            if st is None:
                return
            st.dropped = q.dropped
            st.reconnects = int(d.get("reconnects", st.reconnects) or 0)
            st.stalls = int(d.get("stalls", st.stalls) or 0)
            decode_errors = int(d.get("decode_errors", 0) or 0)
            st.errors = max(st.errors, decode_errors + (1 if st.error is not None else 0))
            if "last_error" in d:                      # the worker's current one ("" once recovered)
                st.last_error = redact_uri(d.get("last_error") or "")
            new = state if isinstance(state, str) and st.state not in _FINAL else None
        if new is not None:
            self._set_state(sid, new)

    def decode_processes_info(self) -> tuple[list[int], float]:
        """The decode processes' pids and their CPU seconds so far (none: ``([], 0.0)``)."""
        pool = self._pool
        if pool is None:
            return [], 0.0
        return pool.pids(), pool.cpu_seconds()
