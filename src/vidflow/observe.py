"""Observers: how metrics, benchmarks and user code watch a running pipeline without private reads.

``Pipeline(observers=[...])`` calls each observer's methods that it has (all optional, declared
by the protocols below) on the thread that did the work; they must be quick and must not raise
(an observer that raises is logged once and dropped, never a reason to stop the pipeline).

- ``on_stage(stage: str, batch_size: int, seconds: float)``: a stage (or one half of a split
  stage, named ``"<name>.launch"`` / ``"<name>.finish"``) ran on a batch, wall time in seconds.
- ``on_write(sink: str, batch_size: int, seconds: float)``: a sink's ``write`` returned.
- ``on_batch(frames: int, wait_s: float, latencies_s: Sequence[float])``: a batch left the
  sinks: its frame count, how long the muxer waited to fill it, and per frame the time from
  receipt (``FrameInfo.ntp_ns``) to the end of the sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ObservesStages", "ObservesWrites", "ObservesBatches"]


@runtime_checkable
class ObservesStages(Protocol):
    def on_stage(self, stage: str, batch_size: int, seconds: float) -> None: ...


@runtime_checkable
class ObservesWrites(Protocol):
    def on_write(self, sink: str, batch_size: int, seconds: float) -> None: ...


@runtime_checkable
class ObservesBatches(Protocol):
    def on_batch(self, frames: int, wait_s: float, latencies_s: Sequence[float]) -> None: ...
