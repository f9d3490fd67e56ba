"""What a sink can do, declared (``runtime_checkable`` protocols, checked once at build).

- :class:`Sink`: ``write(batch)`` and ``close()``. With ``overlap`` on (the default on CUDA),
  ``write`` is called on the pipeline's tail thread, not the thread that called ``run()``; calls
  are never concurrent and keep batch order.
- :class:`SupportsEndSource`: ``end_source(source_id)`` is called once after the last batch
  holding that source's frames was written (the source ended, failed or was removed).
- :class:`SupportsStats`: ``stats() -> dict`` of counters for snapshots and metrics (queue depth,
  lag, dropped, spool size...).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..batch import Batch

__all__ = ["Sink", "SupportsEndSource", "SupportsStats"]


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
