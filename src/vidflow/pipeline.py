"""``Pipeline``: sources (a thread each) -> muxer -> stages -> sinks.

Run it to the end with ``run()``, or pull batches with ``for batch in pipeline``. A source that
fails stops alone: the others run to their end; then, with ``strict=True`` (the default),
``run()`` raises that source's ``SourceError``. An exception in a stage or sink stops everything
at once and is raised from ``run()`` as ``StageError`` / ``SinkError`` naming it. Sinks and
stages are closed in every case, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from .batch import Batch
from .device import resolve_device
from .errors import DecodeError, SinkError, SourceError, StageError, VidflowError, redact_uri
from .mux import Muxer, SourceQueue
from .stats import RunSummary, SourceStats

__all__ = ["Pipeline", "RunSummary", "SourceStats"]

log = logging.getLogger("vidflow")


def _name(obj: Any) -> str:
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__)


def _counter_dict(c: Any) -> dict[str, Any]:
    """A source's ``stats()`` (a :class:`~vidflow.stats.SourceCounters` or, from older sources, a
    dict) as a dict."""
    if dataclasses.is_dataclass(c) and not isinstance(c, type):
        return {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    return dict(c) if isinstance(c, Mapping) else {}


def _copy_source_counters(src: Any, st: SourceStats) -> None:
    """Copy a source's own counters (``stats()`` of live/reconnecting sources) into its stats."""
    stats = getattr(src, "stats", None)
    if not callable(stats):
        return
    try:
        d = _counter_dict(stats())
    except Exception as e:  # noqa: BLE001 - counters are best effort, never a reason to fail
        log.debug("source %s: stats() failed: %s", st.source_id, redact_uri(e))
        return
    st.reconnects = int(d.get("reconnects", st.reconnects) or 0)
    st.stalls = int(d.get("stalls", st.stalls) or 0)
    decode_errors = int(d.get("decode_errors", 0) or 0)
    st.errors = max(st.errors, decode_errors + (1 if st.error is not None else 0))
    if d.get("last_error"):
        st.last_error = redact_uri(d["last_error"])


class Pipeline:
    """Sources + muxer + stages + sinks.

    Args:
        sources: objects following the Source protocol (``vidflow.sources.base``): a sequence
            (the i-th gets ``source_id`` i) or a mapping ``{id: source}`` of stable ids (an int or
            a str: shards on several machines keep their own, YAML ``id:``).
        muxer: batching settings (default ``Muxer()``).
        stages: callables ``Batch -> Batch`` run in order.
        sinks: objects with ``write(batch)`` and ``close()``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        queue_size: frames queued per source before a file source waits / a live one drops.
        strict: raise a failed source's error from ``run()`` once the others have finished.
        progress: called with a :class:`RunSummary` snapshot about every ``progress_every`` s.
        torch_threads: torch's intra-op CPU threads while the pipeline runs (restored after).
            ``None``: 1 on CUDA, where the CPU only runs small per-batch ops (tracking, NMS
            bookkeeping) and more threads only spin — measured on an H100 at 64 streams: 10
            cores -> 1.2 at the same fps; unchanged on the CPU, where the model needs them.
        decode_processes: 0 (default): each source decodes in a thread of this process. K >= 1:
            the sources that can move (``poolable``: ``FileSource``, ``UriSource``) decode in K worker
            processes and hand frames over zero-copy (``vidflow.sources.pool``), so 64 decoder
            threads no longer compete with the stages for this process's GIL; other sources
            keep their thread.
        overlap: run the later part of the stages and the sinks on a second thread, one batch
            behind. A stage with ``launch``/``finish`` (the detector) is cut there: the main thread
            assembles batch i+1 and queues its model on the GPU while batch i is decoded (NMS),
            tracked and written. Without such a stage, the trailing ``host_stage = True`` stages
            (the tracker) move. Order is kept (batches, per-source resets and end-of-source
            calls go through the same queue) and errors are raised from ``run()`` as before.
            ``None``: on for CUDA, off on the CPU.
        warmup: before the sources start, stages with ``warmup(batch_size, device)`` (the
            detector) prepare every batch size the muxer can send (cuDNN autotuning, CUDA graph
            capture), so the first batches of each size do not stall. Then the objects alive at
            that point (torch, models, modules: hundreds of thousands) are moved out of the
            garbage collector's generations (``gc.freeze()``), so its full collections do not
            walk them again and again, pausing the loop (``VIDFLOW_NO_GC_FREEZE=1`` skips it).
            ``gc.unfreeze()`` at the end of the run undoes it (and any freeze made before the
            run). The muxer compiles its conversion kernel at the same time (``Muxer.warmup``).
            ``None``: on for CUDA.
        stop_timeout: seconds :meth:`stop` (``drain=True``) lets queued batches finish through
            the stages and sinks before it stops at once.
    """

    def __init__(self, sources: Sequence[Any] | Mapping[int | str, Any] = (), muxer: Muxer | None = None,
                 stages: Sequence[Callable] = (),
                 sinks: Sequence[Any] = (), *, device: str | torch.device = "auto", queue_size: int = 8,
                 strict: bool = True, progress: Callable[[RunSummary], None] | None = None,
                 progress_every: float = 1.0, torch_threads: int | None = None, decode_processes: int = 0,
                 overlap: bool | None = None, warmup: bool | None = None, stop_timeout: float = 10.0) -> None:
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if float(stop_timeout) < 0:
            raise ValueError(f"stop_timeout must be >= 0, got {stop_timeout}")
        self.stop_timeout = float(stop_timeout)
        self.device = resolve_device(device)
        self.muxer = muxer if muxer is not None else Muxer()
        self.stages = list(stages)
        self.sinks = list(sinks)
        for s in self.stages:
            if not callable(s):
                raise ValueError(f"stages: expected callables Batch -> Batch, got {type(s).__name__}")
        for s in self.sinks:
            if not callable(getattr(s, "write", None)):
                raise ValueError(f"sinks: expected objects with write(batch), got {type(s).__name__}")
        self.queue_size = int(queue_size)
        self.strict = bool(strict)
        self.progress = progress
        self.progress_every = float(progress_every)
        if torch_threads is not None and int(torch_threads) < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {torch_threads}")
        self.torch_threads = torch_threads if torch_threads is not None else (1 if self.device.type == "cuda" else None)
        self._saved_threads: int | None = None
        if int(decode_processes) < 0:
            raise ValueError(f"decode_processes must be >= 0, got {decode_processes}")
        self.decode_processes = int(decode_processes)
        cuda = self.device.type == "cuda"
        self.overlap = cuda if overlap is None else bool(overlap)
        self.warmup = cuda if warmup is None else bool(warmup)
        self._head, self._tail_stages = _split(self.stages)
        self._tail: _Tail | None = None
        self._froze = False
        self._pool: Any = None
        self._pooled: set = set()
        self.summary = RunSummary()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats_lock = threading.RLock()       # every write to self.summary, and snapshot()
        self._draining = False                     # stop(drain=True): no new frames, finish the queued
        self._abort = False                        # stop(drain=False) or a drain past its timeout
        self._handles: dict[int | str, Any] = {}   # sid -> PooledSource (counters of decode processes)
        self._done = threading.Event()             # set when a run has shut down
        self._queues: dict[int | str, SourceQueue] = {}
        self._sources: dict[int | str, Any] = {}
        self._threads: dict[int | str, threading.Thread] = {}
        self._running = False
        self._used = False
        self._next_id = 0
        if isinstance(sources, Mapping):
            for sid, src in sources.items():
                if not isinstance(sid, (int, str)) or isinstance(sid, bool):
                    raise ValueError(f"sources: ids must be int or str, got {sid!r}")
                self.add_source(src, sid)
        else:
            for src in sources:
                self.add_source(src)

    @classmethod
    def from_yaml(cls, path: str, overrides: Sequence[str] | dict | None = None, *,
                  allow_code: Sequence[str] | str | None = None, **kw: Any) -> Pipeline:
        """Build the pipeline a YAML file describes (as ``vidflow run`` does); ``overrides`` are
        ``"path=value"`` strings (``"muxer.batch_size=16"``) or a dict of them; ``allow_code``:
        modules whose ``module:Name`` entries the YAML may import (``vidflow.config``)."""
        import inspect

        from .config import build_parts, load_config

        parts = build_parts(load_config(path, overrides), allow_code=allow_code)
        kwargs = parts.kwargs(inspect.signature(cls).parameters)
        sources = kwargs.pop("sources")
        return cls(**{"sources": sources, **kwargs, **kw})   # YAML ids (`id:`), else the positions 0, 1, ...

    # -- sources -----------------------------------------------------------------------------
    def add_source(self, source: Any, source_id: int | str | None = None) -> int | str:
        """Register a source; on a running pipeline it starts at once. Returns its id."""
        if not callable(getattr(source, "frames", None)):
            raise ValueError(f"add_source: expected a Source (with frames() and close()), got {type(source).__name__}")
        with self._lock:
            if source_id is None:
                while self._next_id in self._sources or self._next_id in self.summary.sources:
                    self._next_id += 1
                source_id = self._next_id
            if source_id in self._sources:
                raise ValueError(f"add_source: source id {source_id!r} is already in use")
            live = bool(getattr(source, "live", False))
            self._sources[source_id] = source
            self._queues[source_id] = SourceQueue(source_id, maxsize=self.queue_size, live=live, cond=self._cond)
            self.summary.sources[source_id] = SourceStats(source_id, redact_uri(getattr(source, "uri", "")), live)
            if self._running:
                self._start_source(source_id)
        return source_id

    def remove_source(self, source_id: int | str) -> None:
        """Stop a source of a running pipeline: its queued frames are discarded, its decoder
        closed, per-source stage state reset. Raises ``KeyError`` for an unknown id."""
        with self._lock:
            if source_id not in self._sources:
                raise KeyError(f"remove_source: no source with id {source_id!r}")
            q = self._queues[source_id]
            src = self._sources[source_id]
            self.summary.sources[source_id].state = "removed"
        q.close()
        if source_id in self._pooled and self._pool is not None:
            self._pool.close(source_id)
        try:
            src.close()
        except Exception as e:  # noqa: BLE001 - closing must not break the pipeline
            log.warning("source %s: close failed: %s", source_id, redact_uri(e))
        if not self._running:
            self._retire(source_id)

    def _start_source(self, sid: int | str) -> None:
        st = self.summary.sources[sid]
        st.started = time.monotonic()
        st.state = "connecting" if st.live else "running"
        src = self._sources[sid]
        if self.decode_processes:
            from .sources.pool import DecodePool, poolable
            if poolable(src):
                if self._pool is None:
                    # ring slots: the queue, plus a batch being converted and one waiting for its release
                    self._pool = DecodePool(self.decode_processes, self.device, slots=self.queue_size + 4)
                self._pooled.add(sid)
                self._handles[sid] = self._pool.open(sid, src, lambda f, sid=sid: self._deliver(sid, f, block=False),
                                                     lambda err, sid=sid: self._source_ended(sid, err))
                return
        t = threading.Thread(target=self._produce, args=(sid,), name=f"vidflow-source-{sid}", daemon=True)
        self._threads[sid] = t
        t.start()

    def _deliver(self, sid: int | str, frame: Any, *, block: bool = True) -> bool:
        """A source's frame into its queue; False when the queue no longer takes frames."""
        q, st = self._queues.get(sid), self.summary.sources.get(sid)
        if q is None or st is None or self._draining:
            return False
        with self._stats_lock:
            st.decoded += 1
            if st.state in ("connecting", "backoff"):
                st.state = "running"
        return q.put(frame, block=block)

    def _source_ended(self, sid: int | str, err: BaseException | None, q: SourceQueue | None = None) -> None:
        """A source's end of stream (``err`` None) or failure: record it, close its queue."""
        q = self._queues.get(sid) if q is None else q      # (a SourceQueue has len(): never `q or`)
        st, src = self.summary.sources.get(sid), self._sources.get(sid)
        if q is None or st is None:
            return
        try:
            with self._stats_lock:
                if err is not None:
                    if not q.closed and not self._draining:   # (removed or stopped meanwhile: no failure)
                        if not isinstance(err, SourceError):
                            err = DecodeError(f"{type(err).__name__}: {err}", source_id=sid,
                                              uri=getattr(src, "uri", None))
                        st.error = err
                        st.errors += 1
                        st.state = "failed"
                        log.error("%s", err)
                elif st.state != "removed":
                    st.state = "stopped" if q.closed or self._draining else "ended"
        finally:
            st.ended = time.monotonic()
            q.finish()

    def _produce(self, sid: int | str) -> None:
        src, q = self._sources[sid], self._queues[sid]
        # on CUDA, whatever the source does on the device (uploads, copies) goes to a stream of its
        # own thread, so it never waits for the stages' work queued on the pipeline's stream
        side = contextlib.nullcontext()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            side = torch.cuda.stream(torch.cuda.Stream(self.device))
        err: BaseException | None = None
        try:
            with side:
                frames = src.frames(device=self.device, source_id=sid)
                for frame in frames:
                    if not self._deliver(sid, frame):
                        break
        except Exception as e:  # noqa: BLE001 - a source fails alone; reported, never swallowed
            err = e
        self._source_ended(sid, err, q)

    def _retire(self, sid: int | str) -> None:
        """A source has ended and all its frames went through: release it everywhere."""
        with self._lock:
            q = self._queues.pop(sid, None)
            src = self._sources.pop(sid, None)
            t = self._threads.pop(sid, None)
        st = self.summary.sources.get(sid)
        self._pooled.discard(sid)
        handle = self._handles.pop(sid, None)
        if q is not None and st is not None:
            with self._stats_lock:
                st.dropped = q.dropped
                _copy_source_counters(handle if handle is not None else src, st)
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
        if src is not None:
            try:
                src.close()
            except Exception as e:  # noqa: BLE001
                log.warning("source %s: close failed: %s", sid, redact_uri(e))
        if self._tail is not None and self._tail.running:
            self._reset_stages(sid, self._head)
            self._tail.put(("reset", sid))      # after the source's last batch went through the tail
        else:
            self._reset_stages(sid, self.stages)
            self._end_sinks(sid)

    @staticmethod
    def _reset_stages(sid: int | str, stages: Sequence[Any]) -> None:
        for stage in stages:                    # per-source state (tracks, secondary caches)
            if callable(getattr(stage, "reset", None)):
                stage.reset(sid)

    def _end_sinks(self, sid: int | str) -> None:
        for sink in self.sinks:                 # per-source files / end-of-stream messages
            if callable(getattr(sink, "end_source", None)):
                sink.end_source(sid)

    # -- running -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        return self._batches()

    def run(self) -> RunSummary:
        """Run until every source has ended; returns the summary (also ``self.summary``)."""
        for _ in self._batches():
            pass
        return self.summary

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Ask the pipeline to finish; returns at once (safe from another thread, a callback or a
        signal handler), ``run()`` returns when it is done.

        ``drain=True``: the sources stop (no new frames are taken), the frames already queued go
        through the stages and sinks as batches, then the sinks are closed; if that takes longer
        than ``timeout`` s (default: ``stop_timeout``), it stops as with ``drain=False``.
        ``drain=False``: stop now; queued frames and batches are dropped, the sinks are still
        closed (files stay valid). Sources stopped this way end in state ``"stopped"``."""
        if timeout is not None and float(timeout) < 0:
            raise ValueError(f"stop: timeout must be >= 0, got {timeout}")
        if not drain:
            self._stop_now()
            return
        if self._draining:
            return
        self._draining = True
        limit = self.stop_timeout if timeout is None else float(timeout)
        threading.Thread(target=self._drain, args=(limit,), name="vidflow-stop", daemon=True).start()

    def _drain(self, limit: float) -> None:
        """stop(drain=True), on a thread of its own: stop the sources, wait for the run to end."""
        with self._lock:
            items = [(sid, self._sources.get(sid), self._queues.get(sid)) for sid in list(self._sources)]
        for sid, src, _q in items:
            if sid in self._pooled and self._pool is not None:
                self._pool.close(sid)
            if src is not None:
                try:
                    src.close()
                except Exception as e:  # noqa: BLE001 - stopping must go on
                    log.warning("source %s: close failed: %s", sid, redact_uri(e))
        if not self._done.wait(limit):
            log.warning("stop: the queued batches did not finish within %.1f s; stopping now", limit)
            self._stop_now()

    def _stop_now(self) -> None:
        self._abort = True
        self._stop.set()
        with self._cond:
            for q in list(self._queues.values()):
                q.close()

    def snapshot(self) -> RunSummary:
        """A consistent copy of the run summary (``self.summary``) with every source's stats,
        live counters refreshed (drops, a live source's own state and counters). Safe to call
        from any thread, while the pipeline runs or after."""
        self._refresh()
        with self._stats_lock:
            return self.summary.copy()

    def _batches(self) -> Iterator[Batch]:
        if self._used:
            raise VidflowError("a Pipeline runs once; build a new one to run again")
        self._used = True
        self._running = True
        if self.torch_threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.torch_threads))
        self.summary.started = time.monotonic()
        last_progress = time.monotonic()
        ok = False
        try:
            if self.warmup:                     # before the sources start: live ones would drop meanwhile
                self._warm()
                if os.environ.get("VIDFLOW_NO_GC_FREEZE", "") in ("", "0"):
                    # also when something froze objects before (the GPU machine's Python had 375
                    # frozen at start-up; skipping then brought back 110-130 ms full collections).
                    # Undone at the end (gc.unfreeze, which thaws those too), so nothing stays
                    # out of the collector's reach after the run.
                    gc.collect()
                    gc.freeze()
                    self._froze = True
            with self._lock:
                for sid in list(self._sources):
                    self._start_source(sid)
            if self.overlap and (self._tail_stages or self.sinks):
                self._tail = _Tail(self)
            while True:
                col = self.muxer.collect(lambda: list(self._queues.values()), self._cond, stop=self._stop)
                if col is None:
                    break
                if col.frames:
                    batch = self.muxer.assemble(col.frames, self.device)
                    if self._tail is not None:
                        self._tail.put(("batch", self._run_stages(batch, self._head), self._event()))
                        yield from self._tail.done()
                    else:
                        batch = self._run_stages(batch, self.stages)
                        self._write(batch)
                        yield batch
                for sid in col.ended:
                    self._retire(sid)
                if self.progress is not None and time.monotonic() - last_progress >= self.progress_every:
                    last_progress = time.monotonic()
                    self._refresh()
                    self.progress(self.summary)
            if self._tail is not None:
                if self._abort:
                    self._tail.abort()
                else:
                    yield from self._tail.finish(lambda: self._abort)
            ok = True
        except KeyboardInterrupt:
            self.summary.interrupted = True
            raise
        finally:
            if self._tail is not None:
                self._tail.abort()
            self._shutdown(raise_errors=ok)

    def _event(self) -> Any:
        """A CUDA event after the head stages' work (the tail thread's stream waits for it)."""
        if self.device.type != "cuda":
            return None
        ev = torch.cuda.Event()
        ev.record()
        return ev

    def _warm(self) -> None:
        warm_mux = getattr(self.muxer, "warmup", None)
        if callable(warm_mux):
            try:
                warm_mux(self.device)
            except Exception as e:  # noqa: BLE001 - only a head start: the first batch compiles instead
                log.warning("muxer warm-up failed (%s: %s); the first batch will compile the kernel",
                            type(e).__name__, e)
        for stage in self.stages:
            warm = getattr(stage, "warmup", None)
            if not callable(warm):
                continue
            t0 = time.monotonic()
            try:
                warm(self.muxer.batch_size, self.device)
            except VidflowError:
                raise
            except Exception as e:
                raise StageError(f"warm-up: {type(e).__name__}: {e}", stage=_name(stage)) from e
            log.info("stage %s warmed up for batches of up to %d in %.1f s", _name(stage), self.muxer.batch_size,
                     time.monotonic() - t0)

    def _refresh(self) -> None:
        """Copy live counters (drops, a reconnecting source's own state) into the summary."""
        with self._lock:
            items = [(sid, q, self._handles.get(sid) or self._sources.get(sid)) for sid, q in self._queues.items()]
        for sid, q, src in items:
            with self._stats_lock:
                st = self.summary.sources[sid]
                st.dropped = q.dropped
                state = getattr(src, "state", None)
                if isinstance(state, str) and st.state not in ("removed", "failed", "ended", "stopped"):
                    st.state = state
                _copy_source_counters(src, st)

    def _run_stages(self, batch: Batch, stages: Sequence[Any]) -> Batch:
        for stage in stages:
            try:
                out = stage(batch)
            except VidflowError:
                raise
            except Exception as e:
                raise StageError(f"{type(e).__name__}: {e}", stage=_name(stage), frames=batch.frames) from e
            if not isinstance(out, Batch):
                raise StageError(f"returned {type(out).__name__}, expected a Batch", stage=_name(stage),
                                 frames=batch.frames)
            batch = out
        return batch

    def _write(self, batch: Batch) -> None:
        for sink in self.sinks:
            try:
                sink.write(batch)
            except VidflowError:
                raise
            except Exception as e:
                raise SinkError(f"sink {_name(sink)!r}: {type(e).__name__}: {e}") from e
        now = time.time_ns()
        with self._stats_lock:
            self.summary.batches += 1
            for f in batch.frames:
                st = self.summary.sources.get(f.source_id)
                if st is not None:
                    st.frames += 1
                if f.ntp_ns:
                    self.summary.latencies_ms.append((now - f.ntp_ns) / 1e6)

    def _shutdown(self, *, raise_errors: bool) -> None:
        self._stop.set()
        with self._cond:
            for q in self._queues.values():
                q.close()
        self._tail = None                       # (stopped by now) resets go straight to the stages
        for sid in list(self._sources):
            if sid in self._pooled and self._pool is not None:
                self._pool.close(sid)
            self._retire(sid)
        if self._pool is not None:
            self._pool.shutdown()
        errors: list[BaseException] = []
        for obj in (*self.sinks, *self.stages):
            close = getattr(obj, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # noqa: BLE001 - close everything, report the first
                    errors.append(SinkError(f"closing {_name(obj)!r}: {type(e).__name__}: {e}"))
        self.summary.wall_s = time.monotonic() - self.summary.started
        self._running = False
        self._done.set()
        if self._froze:
            gc.unfreeze()
            self._froze = False
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
        if not raise_errors:
            return
        if errors:
            raise errors[0]
        failed = [st.error for st in self.summary.sources.values() if st.error is not None]
        if failed and self.strict:
            raise failed[0]


def _split(stages: list) -> tuple[list, list]:
    """Which stages run on the main thread and which on the tail thread of an overlapping pipeline.

    A stage with ``launch(batch)`` and ``finish(pending)`` (the detector) is cut in two: ``launch``
    ends the main thread's part, ``finish`` and every later stage run on the tail. Otherwise the
    trailing ``host_stage`` stages (the tracker) form the tail."""
    for i, st in enumerate(stages):
        if callable(getattr(st, "launch", None)) and callable(getattr(st, "finish", None)):
            fifo: deque = deque()
            return [*stages[:i], _Half(st, "launch", fifo)], [_Half(st, "finish", fifo), *stages[i + 1:]]
    k = len(stages)
    while k > 0 and getattr(stages[k - 1], "host_stage", False):
        k -= 1
    return stages[:k], stages[k:]


class _Half:
    """One half of a split stage. ``launch``'s result waits in a FIFO shared with ``finish`` (batches
    reach the tail in order), and the batch itself travels on, so the pipeline sees Batches only."""

    def __init__(self, stage: Any, half: str, fifo: deque) -> None:
        self.stage, self.half, self.fifo = stage, half, fifo
        self.name = _name(stage)

    def __call__(self, batch: Batch) -> Batch:
        if self.half == "launch":
            self.fifo.append(self.stage.launch(batch))
            return batch
        return self.stage.finish(self.fifo.popleft())

    def reset(self, source_id: Any) -> None:
        if self.half == "finish" and callable(getattr(self.stage, "reset", None)):
            self.stage.reset(source_id)


class _Tail:
    """The second thread of an overlapping pipeline (``Pipeline(overlap=True)``): the tail stages
    (see :func:`_split`) and the sinks, in batch order, one batch behind the main thread."""

    DEPTH = 2          # batches waiting for the tail before the main thread waits

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.q: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.running = True
        self._abort = False
        self.stream = torch.cuda.Stream(pipe.device) if pipe.device.type == "cuda" else None
        self.thread = threading.Thread(target=self._loop, name="vidflow-tail", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        while True:
            self._raise()
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:                           # look at the tail's health again
                if not self.thread.is_alive():
                    self._raise()
                    raise VidflowError("the pipeline's tail thread stopped") from None

    def done(self) -> Iterator[Batch]:
        """Batches the tail has finished (without waiting)."""
        while True:
            try:
                yield self.out.get_nowait()
            except queue.Empty:
                return

    def finish(self, abort: Callable[[], bool] = lambda: False) -> Iterator[Batch]:
        """Let the tail work off what is queued, then stop it; yields the last batches. Once
        ``abort()`` is true, what is left is dropped (:meth:`abort`)."""
        self.put(None)                                   # type: ignore[arg-type]
        while self.thread.is_alive():
            if abort():
                self.abort()
                return
            self.thread.join(0.1)
            yield from self.done()
        self.running = False
        yield from self.done()
        self._raise()

    def abort(self) -> None:
        """Stop at once (an error or an early break in the main thread): queued work is dropped."""
        if self.running:
            self._abort = True
            self.running = False
            while True:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    break
            with contextlib.suppress(queue.Full):
                self.q.put_nowait(None)
            self.thread.join(timeout=30)
        for st in self.pipe._head:                        # noqa: SLF001 - launched, never finished
            if isinstance(st, _Half):
                st.fifo.clear()

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            self.running = False
            raise err

    def _loop(self) -> None:
        side = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        if self.stream is not None:
            torch.cuda.set_device(self.pipe.device)
        with side:
            while True:
                item = self.q.get()
                if item is None or self._abort:
                    return
                if self.error is not None:
                    continue                             # failed: drain until told to stop
                try:
                    if item[0] == "batch":
                        _, batch, ev = item
                        if ev is not None:
                            self.stream.wait_event(ev)
                        batch = self.pipe._run_stages(batch, self.pipe._tail_stages)   # noqa: SLF001
                        self.pipe._write(batch)                                         # noqa: SLF001
                        if self.stream is not None:
                            # the batch's pooled images may be refilled once it is dropped
                            self.stream.synchronize()
                        self.out.put(batch)
                    else:
                        sid = item[1]
                        self.pipe._reset_stages(sid, self.pipe._tail_stages)           # noqa: SLF001
                        self.pipe._end_sinks(sid)                                       # noqa: SLF001
                except BaseException as e:  # noqa: BLE001 - raised from the main thread
                    self.error = e
