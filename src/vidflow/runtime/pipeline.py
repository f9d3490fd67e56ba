"""``Pipeline``: sources (a thread each) -> muxer -> stages -> sinks; its public API and main loop.

Run it to the end with ``run()``, or pull batches with ``for batch in pipeline``. A source that
fails stops alone: the others run to their end; then, with ``strict=True`` (the default),
``run()`` raises that source's ``SourceError``. An exception in a stage or sink stops everything
at once and is raised from ``run()`` as ``StageError`` / ``SinkError`` naming it. Sinks and
stages are closed in every case, Ctrl-C included. The parts: ``sourcing`` (source threads,
queues), ``steps`` (stages, sinks, errors), ``overlap`` (the tail thread), ``warm``,
``observing``, ``startup``; ``settings`` holds the process-wide context entered by the caller.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..batch import Batch
from ..device import resolve_device
from ..errors import PipelineStateError
from .._threads import resolve_threads
from ..mux import Muxer
from ..stats import RunSummary
from .observing import Observers
from .overlap import LoopWaits, Tail, split
from .settings import freeze_point, process_settings
from .sourcing import Sourcing
from .startup import StartupMeter
from .steps import Steps, bind_sink, bind_stage, plan_masks
from .warm import warm

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


class Pipeline:
    """Sources + muxer + stages + sinks.

    Args:
        sources: objects following the Source protocol (``vidflow.sources.base``): a sequence
            (the i-th gets ``source_id`` i) or a mapping ``{id: source}`` of stable ids (an int or
            a str: shards on several machines keep their own; YAML ``id:``).
        muxer: batching settings (default ``Muxer()``).
        stages: callables ``Batch -> Batch`` run in order (capabilities: ``vidflow.stages.base``).
        sinks: objects with ``write(batch)`` and ``close()`` (``vidflow.sinks.base``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        queue_size: frames queued per source before a file source waits / a live one drops.
        strict: raise a failed source's error from ``run()`` once the others have finished.
        progress: called with a :meth:`snapshot` about every ``progress_every`` s.
        torch_threads: torch's intra-op CPU threads for :meth:`process_settings` (the context
            ``vidflow run`` enters). ``None``: 1 on CUDA, where the CPU only runs small per-batch
            ops (tracking, NMS bookkeeping) and more threads only spin — measured on an H100 at
            64 streams: 10 cores -> 1.2 at the same fps; unchanged on the CPU.
        decode_processes: 0 (default): each source decodes in a thread of this process. K >= 1:
            the sources that can move (``poolable``: ``FileSource``, ``UriSource``) decode in K worker
            processes and hand frames over zero-copy (``vidflow.sources.pool``).
        overlap: run the later part of the stages and the sinks on a second thread, one batch
            behind. A stage with ``launch``/``finish`` (the detector) is cut there: the main thread
            assembles batch i+1 and queues its model on the GPU while batch i is decoded (NMS),
            tracked and written. Without such a stage, the trailing ``host_stage = True`` stages
            (the tracker) move. Order is kept and errors are raised from ``run()`` as before.
            ``None``: on for CUDA, off on the CPU.
        warmup: before the live sources start (files start first and open their decoders
            meanwhile, held by their queues), stages with ``warmup(batch_size, device)`` (the
            detector) prepare every batch size the muxer can send, and the muxer compiles its
            conversion kernel; then, inside a ``process_settings(freeze_gc=True)`` context, the
            objects alive are frozen out of the garbage collector (``vidflow.runtime.settings``).
            ``None``: on for CUDA.
        stop_timeout: seconds :meth:`stop` (``drain=True``) lets queued batches finish through
            the stages and sinks before it stops at once.
        observers: objects with any of ``on_stage``, ``on_write``, ``on_batch``,
            ``on_source_state`` (``vidflow.observe``); more with :meth:`add_observer`.
        strict_device: every stage call (both halves of a split stage too) runs under
            ``vidflow.strict.strict_device``: an image-sized tensor copied to the host raises
            ``StageError`` naming the stage and the tensor's shape.
        http: ``"host:port"`` or a port: ``vidflow.serve.start(self, http=...)`` when the run
            starts (metrics, probes, control API), stopped at its end (extra ``vidflow[serve]``).
    """

    def __init__(self, sources: Sequence[Any] | Mapping[int | str, Any] = (), muxer: Muxer | None = None,
                 stages: Sequence[Callable] = (), sinks: Sequence[Any] = (), *, device: str | torch.device = "auto",
                 queue_size: int = 8, strict: bool = True, progress: Callable[[RunSummary], None] | None = None,
                 progress_every: float = 1.0, torch_threads: int | None = None, decode_processes: int = 0,
                 overlap: bool | None = None, warmup: bool | None = None, stop_timeout: float = 10.0,
                 observers: Sequence[Any] = (), strict_device: bool = False, http: str | int | None = None) -> None:
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if float(stop_timeout) < 0:
            raise ValueError(f"stop_timeout must be >= 0, got {stop_timeout}")
        if torch_threads is not None and int(torch_threads) < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {torch_threads}")
        if int(decode_processes) < 0:
            raise ValueError(f"decode_processes must be >= 0, got {decode_processes}")
        if http is not None and not isinstance(http, (str, int)):
            raise ValueError(f"http: expected 'host:port' or a port, got {http!r}")
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        self.muxer = muxer if muxer is not None else Muxer()
        self.queue_size, self.strict = int(queue_size), bool(strict)
        self.progress, self.progress_every = progress, float(progress_every)
        # torch's CPU threads: given, else $VIDFLOW_TORCH_THREADS, else 1 on CUDA and the cores this
        # process may really use, less one, on the CPU (vidflow._threads; torch's own default
        # collapses when another process is busy)
        self.torch_threads = resolve_threads(torch_threads, str(self.device))
        self.decode_processes = int(decode_processes)
        self.overlap = cuda if overlap is None else bool(overlap)
        self.warmup = cuda if warmup is None else bool(warmup)
        self.stop_timeout = float(stop_timeout)
        self.strict_device, self.http = bool(strict_device), http
        self.summary = RunSummary()
        self.summary.note_outputs(sinks)
        self._lock = threading.RLock()                       # every write to self.summary, and snapshot()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = threading.Event()                       # set when a run has shut down
        self._abort = False                                  # stop(drain=False) or a drain past its timeout
        self._observers = Observers(observers)
        self._stage_slots = [bind_stage(s) for s in stages]
        self._steps = Steps(self._stage_slots, [bind_sink(s) for s in sinks], observers=self._observers,
                            summary=self.summary, lock=self._lock, device=self.device,
                            strict_device=self.strict_device)
        self._reader = False                                 # the caller iterates the batches (reads masks)
        plan_masks(self._stage_slots, self._steps.sinks, reader=False, owner=self)
        self._head, self._tail_stages, self._clear_launched = split(self._stage_slots)
        self._tail: Tail | None = None
        self._waits = LoopWaits()            # this run's waits (snapshot().loop_s)
        self._startup: StartupMeter | None = None
        self._server: Any = None
        self._used = False
        self._sourcing = Sourcing(device=self.device, queue_size=self.queue_size,
                                  decode_processes=self.decode_processes, summary=self.summary, lock=self._lock,
                                  cond=self._cond, observers=self._observers, on_retired=self._retired)
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
        from ..config import build_parts, load_config

        parts = build_parts(load_config(path, overrides), allow_code=allow_code)
        kwargs = parts.kwargs(inspect.signature(cls).parameters)
        return cls(**{**kwargs, **kw})          # sources by YAML id (`id:`), else the positions 0, 1, ...

    # -- parts ---------------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[Any, ...]:
        return tuple(s.obj for s in self._stage_slots)

    @property
    def sinks(self) -> tuple[Any, ...]:
        """The sinks (add more with :meth:`add_sink`)."""
        return tuple(s.obj for s in self._steps.sinks)

    def add_source(self, source: Any, source_id: int | str | None = None) -> int | str:
        """Register a source; on a running pipeline it starts at once. Returns its id."""
        return self._sourcing.add(source, source_id)

    def remove_source(self, source_id: int | str) -> None:
        """Stop a source of a running pipeline: its queued frames are discarded, its decoder
        closed, per-source stage state reset. Raises ``KeyError`` for an unknown id."""
        self._sourcing.remove(source_id)

    def add_sink(self, sink: Any) -> None:
        """Add a sink, before or while the pipeline runs (from the next batch on)."""
        self._steps.add_sink(bind_sink(sink))
        plan_masks(self._stage_slots, self._steps.sinks, reader=self._reader, owner=self)
        with self._lock:
            self.summary.note_outputs([sink])

    def add_observer(self, observer: Any) -> None:
        """Add an observer (``vidflow.observe``), before or while the pipeline runs."""
        self._observers.add(observer)

    # -- observing -----------------------------------------------------------------------------
    def snapshot(self) -> RunSummary:
        """A consistent copy of the run summary (``self.summary``) with every source's stats,
        live counters refreshed (drops, a live source's own state and counters), the decode
        processes' pids and CPU time, and before the first batch the start-up phases so far.
        Safe to call from any thread, while running or after."""
        self._sourcing.refresh()
        pids, cpu = self._sourcing.decode_processes_info()
        meter = self._startup
        loop = self._waits.as_dict()
        with self._lock:
            self.summary.decode_pids, self.summary.decode_cpu_s = pids, cpu
            self.summary.loop_s = loop
            if meter is not None and self.summary.first_batch_s is None:
                self.summary.startup_s = dict(meter.phases)      # the phases so far (warm-up done?)
            return self.summary.copy()

    @property
    def server(self) -> Any:
        """The HTTP server started for ``http=`` while the pipeline runs (``.url``), else None."""
        return self._server

    def process_settings(self) -> AbstractContextManager[None]:
        """The process-wide settings this pipeline was made for (``torch_threads``; freezing the
        collector after warm-up when ``warmup`` is on), as a context to enter around ``run()``:
        ``with pipe.process_settings(): pipe.run()`` (``vidflow run`` does)."""
        return process_settings(torch_threads=self.torch_threads, freeze_gc=self.warmup)

    # -- running -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """The batches, after the stages and sinks. The caller reads them: a detector with
        ``masks="auto"`` builds instance masks (``run()`` builds them only for a stage or sink
        that reads them)."""
        self._reader = True
        plan_masks(self._stage_slots, self._steps.sinks, reader=True, owner=self)
        return self._batches()

    def run(self) -> RunSummary:
        """Run until every source has ended; returns the summary (also ``self.summary``)."""
        for _ in self._batches():
            pass
        return self.summary

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Ask the pipeline to finish; returns at once (safe from another thread, a callback or a
        signal handler); ``run()`` returns when it is done.

        ``drain=True``: the sources stop (no new frames are taken), the frames already queued go
        through the stages and sinks as batches, then the sinks are closed; if that takes longer
        than ``timeout`` s (default: ``stop_timeout``), it stops as with ``drain=False``.
        ``drain=False``: stop now; queued frames and batches are dropped, the sinks are still
        closed (files stay valid). Sources stopped either way end in state ``"stopped"``."""
        if timeout is not None and float(timeout) < 0:
            raise ValueError(f"stop: timeout must be >= 0, got {timeout}")
        if not drain:
            self._stop_now()
            return
        if self._sourcing.draining:
            return
        self._sourcing.draining = True
        limit = self.stop_timeout if timeout is None else float(timeout)
        threading.Thread(target=self._drain, args=(limit,), name="vidflow-stop", daemon=True).start()

    def _drain(self, limit: float) -> None:
        self._sourcing.stop_sources()
        if not self._done.wait(limit):
            log.warning("stop: the queued batches did not finish within %.1f s; stopping now", limit)
            self._stop_now()

    def _stop_now(self) -> None:
        self._abort = True
        self._stop.set()
        self._sourcing.close_queues()

    def _finish(self, batch: Batch, wait_s: float) -> Batch:
        """The end of a batch: the tail stages (on the tail thread) or none, then the sinks."""
        self._steps.write(batch, wait_s)
        meter = self._startup
        if meter is not None and self.summary.steady_s is None:
            meter.batch()
            with self._lock:
                self.summary.first_batch_s, self.summary.steady_s = meter.first_batch_s, meter.steady_s
                self.summary.startup_s = dict(meter.phases)
        return batch

    def _batches(self) -> Iterator[Batch]:
        if self._used:
            raise PipelineStateError("a Pipeline runs once; build a new one to run again")
        self._used = True
        self.summary.started = time.monotonic()
        self._startup = meter = StartupMeter()
        last_progress = time.monotonic()
        steps, obs = self._steps, self._observers
        ok = False
        try:
            if self.http is not None:
                from ..serve import start

                self._server = start(self, http=self.http)
            if self.warmup:
                # files start now: their decoders open (decode processes, NVDEC sessions) while
                # the stages warm up, and their bounded queues hold them; live sources start
                # after the warm-up, since they would drop frames meanwhile
                self._sourcing.start_files()
                meter.mark("files_started")
                warm(self.muxer, self._stage_slots, self.device, self.muxer.batch_size)
                freeze_point()
                meter.mark("warm_up")
            self._sourcing.start_all()
            meter.mark("sources_started")
            self._waits = waits = LoopWaits()
            if self.overlap and (self._tail_stages or steps.sinks):
                tail_stages = self._tail_stages
                self._tail = Tail(lambda b, w: self._finish(steps.run(b, tail_stages), w), self._end_tail,
                                  self.device, self._clear_launched, waits)
            queues = lambda: list(self._sourcing.queues.values())   # noqa: E731
            while True:
                t0 = time.perf_counter()
                col = self.muxer.collect(queues, self._cond, stop=self._stop)
                waits.collect += time.perf_counter() - t0
                if col is None:
                    break
                if col.frames:
                    meter.mark("first_frame")
                    n = len(col.frames)
                    wait_s = time.monotonic() - col.arrivals[0]
                    if obs.stages:
                        obs.stage("muxer.collect", n, time.perf_counter() - t0)
                    batch = steps.timed("muxer.assemble", n, lambda fr: self.muxer.assemble(fr, self.device),
                                        col.frames)
                    if self._tail is not None:
                        self._tail.put_batch(steps.run(batch, self._head), wait_s)
                        yield from self._tail.done()
                    else:
                        yield self._finish(steps.run(batch, self._stage_slots), wait_s)
                for sid in col.ended:
                    self._sourcing.retire(sid)
                if self.progress is not None and time.monotonic() - last_progress >= self.progress_every:
                    last_progress = time.monotonic()
                    self.progress(self.snapshot())
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

    def _retired(self, sid: int | str) -> None:
        """A source has ended and all its frames went through the muxer."""
        if self._tail is not None and self._tail.running:
            self._steps.reset(sid, self._head)
            self._tail.put_end(sid)      # after the source's last batch went through the tail
        else:
            self._steps.reset(sid, self._stage_slots)
            self._steps.end_sinks(sid)

    def _end_tail(self, sid: int | str) -> None:
        self._steps.reset(sid, self._tail_stages)
        self._steps.end_sinks(sid)

    def _shutdown(self, *, raise_errors: bool) -> None:
        self._stop.set()
        self._sourcing.close_queues()
        self._tail = None                       # (stopped by now) resets go straight to the stages
        try:
            self._sourcing.shutdown()
            errors = self._steps.close_all()
            self.summary.wall_s = time.monotonic() - self.summary.started
            self.summary.loop_s = self._waits.as_dict()
            if self._server is not None:
                try:
                    self._server.stop()
                except Exception as e:  # noqa: BLE001 - the run's own result comes first
                    log.warning("http: stopping the server failed: %s", e)
        finally:
            self._done.set()
        if not raise_errors:
            return
        if errors:
            raise errors[0]
        failed = [st.error for st in self.summary.sources.values() if st.error is not None]
        if failed and self.strict:
            raise failed[0]
