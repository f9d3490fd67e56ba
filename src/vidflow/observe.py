"""Observers: how metrics, benchmarks and user code watch a running pipeline without private reads.

``Pipeline(observers=[...])`` (or ``Pipeline.add_observer``) calls each observer's methods that
it has (all optional, declared by the protocols below, looked up once when the observer is
added) on the thread that did the work; they must be quick and must not raise (an observer that
raises is logged once and dropped, never a reason to stop the pipeline).

- ``on_stage(stage: str, batch_size: int, seconds: float)``: a stage (or one half of a split
  stage, named ``"<name>.launch"`` / ``"<name>.finish"``) ran on a batch, wall time in seconds.
  The muxer's two steps are reported the same way as ``"muxer.collect"`` (waiting for and
  taking the frames of a batch) and ``"muxer.assemble"`` (converting them into the batch).
- ``on_write(sink: str, batch_size: int, seconds: float)``: a sink's ``write`` returned.
- ``on_batch(frames: int, wait_s: float, latencies_s: Sequence[float])``: a batch left the
  sinks: its frame count, how long the muxer waited to fill it (from its first frame's arrival),
  and per frame the time from receipt (``FrameInfo.ntp_ns``) to the end of the sinks.
- ``on_source_state(source_id, state: str)``: a source changed state in the pipeline's summary
  (``"running"``, ``"ended"``, ``"failed"``, ``"stopped"``, ``"removed"``, or a live source's own
  state such as ``"reconnecting"``; see :class:`vidflow.stats.SourceStats`).

An observer whose ``sync`` attribute is true while a call is timed has the calling thread's CUDA
stream synchronised before and after each timed call, so ``seconds`` is the GPU work of that part
on its thread's stream (which shares the GPU with the other thread's), not only its launch
(benchmarks' per-part breakdown; it slows the pipeline down, so turn it on briefly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ObservesStages", "ObservesWrites", "ObservesBatches", "ObservesSources"]


@runtime_checkable
class ObservesStages(Protocol):
    def on_stage(self, stage: str, batch_size: int, seconds: float) -> None: ...


@runtime_checkable
class ObservesWrites(Protocol):
    def on_write(self, sink: str, batch_size: int, seconds: float) -> None: ...


@runtime_checkable
class ObservesBatches(Protocol):
    def on_batch(self, frames: int, wait_s: float, latencies_s: Sequence[float]) -> None: ...


@runtime_checkable
class ObservesSources(Protocol):
    def on_source_state(self, source_id: int | str, state: str) -> None: ...
