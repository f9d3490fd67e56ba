"""Running a pipeline's stages and writing its sinks: the contracts bound once, timings to the
observers, errors named (``StageError`` for a stage, also when its ``close`` fails; ``SinkError``
for a sink)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..batch import Batch
from ..errors import SinkError, StageError, VidflowError
from ..sinks.base import Sink, SupportsEndSource
from ..sinks.hostcopy import host_columns, prepare_rle
from ..sinks.records import ReadsHostFrames
from ..stages.base import (HostStage, MasksOnDemand, SplitStage, SupportsClose, SupportsReset, SupportsWarmup,
                           reads_masks, stage_name)
from ..stats import RunSummary
from ..strict import strict_device
from .observing import Observers

log = logging.getLogger(__name__)

__all__ = ["StageSlot", "SinkSlot", "bind_stage", "bind_sink", "plan_masks", "Steps"]


@dataclass(frozen=True)
class StageSlot:
    """A stage with its capabilities found once (``vidflow.stages.base``). ``name``: what errors
    name; ``label``: what observers see (``"detect.launch"`` for half of a split stage)."""

    obj: Any
    name: str
    label: str
    call: Callable[[Batch], Any]
    reset: Callable[[Any], None] | None = None
    warmup: Callable[[int, torch.device], None] | None = None
    close: Callable[[], None] | None = None
    host: bool = False
    split: tuple[Callable[[Batch], Any], Callable[[Any], Batch]] | None = None


@dataclass(frozen=True)
class SinkSlot:
    obj: Any
    name: str
    write: Callable[[Batch], None]
    close: Callable[[], None] | None
    end_source: Callable[[Any], None] | None
    host: bool = False            # reads the batch's host table (``sinks.records.ReadsHostFrames``)
    rle: bool = False             # ... and its masks as RLE


def bind_stage(obj: Any) -> StageSlot:
    if not callable(obj):
        raise ValueError(f"stages: expected callables Batch -> Batch, got {type(obj).__name__}")
    name = stage_name(obj)
    return StageSlot(obj, name, name, obj,
                     reset=obj.reset if isinstance(obj, SupportsReset) else None,
                     warmup=obj.warmup if isinstance(obj, SupportsWarmup) else None,
                     close=obj.close if isinstance(obj, SupportsClose) else None,
                     host=isinstance(obj, HostStage) and bool(obj.host_stage),
                     split=(obj.launch, obj.finish) if isinstance(obj, SplitStage) else None)


def bind_sink(obj: Any) -> SinkSlot:
    if not callable(getattr(obj, "write", None)):
        raise ValueError(f"sinks: expected objects with write(batch), got {type(obj).__name__}")
    host = isinstance(obj, ReadsHostFrames)
    return SinkSlot(obj, stage_name(obj), obj.write, obj.close if isinstance(obj, Sink) else None,
                    obj.end_source if isinstance(obj, SupportsEndSource) else None,
                    host=host, rle=host and bool(obj.host_masks))


def plan_masks(stages: Sequence[StageSlot], sinks: Sequence[SinkSlot], *, reader: bool, owner: object = None) -> None:
    """Tell each stage that builds masks on demand (``stages.base.MasksOnDemand``: the
    detector) whether a later stage, a sink or the caller (``reader``: iterating the batches)
    reads them (``stages.base.reads_masks``). Called when the pipeline is built, when a sink is
    added and when its batches are iterated."""
    later_sinks = any(reads_masks(s.obj) for s in sinks)
    for i, st in enumerate(stages):
        if isinstance(st.obj, MasksOnDemand):
            st.obj.masks_needed(reader or later_sinks or any(reads_masks(s.obj) for s in stages[i + 1:]), owner)


class Steps:
    """Stages and sinks of one pipeline. ``run`` may be called on the main and the tail thread
    (each with its own stages); ``write`` on one of them at a time."""

    def __init__(self, stages: Sequence[StageSlot], sinks: Sequence[SinkSlot], *, observers: Observers,
                 summary: RunSummary, lock: threading.RLock, device: torch.device,
                 strict_device: bool = False) -> None:
        self.stages = tuple(stages)
        self.sinks: tuple[SinkSlot, ...] = tuple(sinks)
        self.observers, self.summary, self.lock = observers, summary, lock
        self.device, self.strict = device, bool(strict_device)
        self._sync = device.type == "cuda"

    def add_sink(self, slot: SinkSlot) -> None:
        self.sinks = (*self.sinks, slot)          # replaced, not changed: a running write loop is unaffected

    def _clock(self) -> float:
        if self._sync and self.observers.sync:
            # this thread's stream only: a device-wide sync would also wait for the other thread's
            # queued work (the overlap's head and tail), and charge it to this part
            torch.cuda.current_stream(self.device).synchronize()
        return time.perf_counter()

    def timed(self, label: str, n: int, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)``, its wall time reported to the stage observers as ``label``."""
        if not self.observers.stages:
            return fn(arg)
        t0 = self._clock()
        out = fn(arg)
        self.observers.stage(label, n, self._clock() - t0)
        return out

    def run(self, batch: Batch, stages: Sequence[StageSlot]) -> Batch:
        for st in stages:
            try:
                if self.strict:
                    with strict_device(st.label):
                        out = self.timed(st.label, len(batch), st.call, batch)
                else:
                    out = self.timed(st.label, len(batch), st.call, batch)
            except VidflowError:
                raise
            except Exception as e:
                raise StageError(f"{type(e).__name__}: {e}", stage=st.name, frames=batch.frames) from e
            if not isinstance(out, Batch):
                raise StageError(f"returned {type(out).__name__}, expected a Batch", stage=st.name,
                                 frames=batch.frames)
            batch = out
        return batch

    def _host(self, batch: Batch) -> Any:
        """The batch's one host copy (``hostcopy.host_columns``; and the masks' run starts when a
        sink reads their RLE: ``hostcopy.prepare_rle``), or None if it can't be made: then each
        sink meets the error on its own worker, where its ``on_error`` applies."""
        try:
            cols = host_columns(batch)
            if any(s.rle for s in self.sinks):
                prepare_rle(batch)          # the run starts; the strings on the sink's thread
        except Exception:  # noqa: BLE001 - the sinks report it, each by its own policy
            log.debug("host copy of a batch failed; left to the sinks", exc_info=True)
            return None
        return cols

    def write(self, batch: Batch, wait_s: float = float("nan")) -> None:
        """Every sink's ``write``, then the run's counters and the batch observers. Before the
        first sink that reads host frames (``sinks.records.ReadsHostFrames``; its write time
        includes this) the batch's object table is copied to the host, once
        (``hostcopy.host_columns``, and the masks' run starts if a sink reads their RLE): here, where the batch
        is finished (on the tail's stream). The sinks' workers pad it into their tables (once,
        shared) and the summary counts read it."""
        timed = bool(self.observers.writes)
        host, tried = None, False
        for sink in self.sinks:
            t0 = self._clock() if timed else 0.0
            if sink.host and not tried:
                host, tried = self._host(batch), True
            try:
                sink.write(batch)
            except VidflowError:
                raise
            except Exception as e:
                raise SinkError(f"sink {sink.name!r}: {type(e).__name__}: {e}") from e
            if timed:
                self.observers.write(sink.name, len(batch), self._clock() - t0)
        now = time.time_ns()
        lat = [(now - f.ntp_ns) / 1e9 for f in batch.frames if f.ntp_ns]
        counts = self.summary.batch_counts(batch, host)    # no copy of its own after the sinks'; outside the lock
        with self.lock:
            self.summary.batches += 1
            for f in batch.frames:
                st = self.summary.sources.get(f.source_id)
                if st is not None:
                    st.frames += 1
            self.summary.latencies_ms.extend(x * 1e3 for x in lat)
            self.summary.note_batch(batch, counts)  # objects per class and track ids per source
        if self.observers.batches:
            self.observers.batch(len(batch), wait_s, lat)

    @staticmethod
    def reset(sid: int | str, stages: Sequence[StageSlot]) -> None:
        for st in stages:                    # per-source state (tracks, secondary caches)
            if st.reset is not None:
                st.reset(sid)

    def end_sinks(self, sid: int | str) -> None:
        for sink in self.sinks:              # per-source files / end-of-stream messages
            if sink.end_source is not None:
                sink.end_source(sid)

    def close_all(self) -> list[BaseException]:
        """Close every sink, then every stage; returns what failed (a ``SinkError`` /
        ``StageError`` each), never raises."""
        errors: list[BaseException] = []
        for sink in self.sinks:
            if sink.close is not None:
                try:
                    sink.close()
                except Exception as e:  # noqa: BLE001 - close everything, report the first
                    errors.append(e if isinstance(e, SinkError) else
                                  SinkError(f"closing {sink.name!r}: {type(e).__name__}: {e}"))
        seen: set[int] = set()
        for st in self.stages:
            if st.close is not None and id(st.obj) not in seen:
                seen.add(id(st.obj))
                try:
                    st.close()
                except Exception as e:  # noqa: BLE001
                    errors.append(e if isinstance(e, StageError) else
                                  StageError(f"close: {type(e).__name__}: {e}", stage=st.name))
        return errors
