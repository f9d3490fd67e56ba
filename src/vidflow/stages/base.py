"""What a stage can do, declared: the pipeline sorts its stages by these once, when it is built.

A stage is any callable ``Batch -> Batch`` (:class:`Stage`). The optional capabilities are
separate protocols, checked with ``isinstance`` (all ``runtime_checkable``):

- :class:`SupportsReset`: ``reset(source_id)`` forgets per-source state (a source ended or was
  removed; the tracker drops that stream's tracks).
- :class:`SupportsWarmup`: ``warmup(batch_size, device)`` prepares a batch size before the
  sources start (cuDNN autotuning, CUDA graph capture).
- :class:`SplitStage`: ``launch(batch) -> pending`` queues the GPU work and returns at once;
  ``finish(pending) -> Batch`` waits for it. An overlapping pipeline calls ``launch`` on the main
  thread and ``finish`` on its tail thread.
- :class:`HostStage`: ``host_stage = True`` marks host (NumPy) work that may run on the tail thread.
- :class:`SupportsClose`: ``close()`` at the end of the run; an exception there is a ``StageError``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..batch import Batch

__all__ = ["Stage", "SupportsReset", "SupportsWarmup", "SplitStage", "HostStage", "SupportsClose",
           "stage_name"]


@runtime_checkable
class Stage(Protocol):
    def __call__(self, batch: Batch) -> Batch: ...


@runtime_checkable
class SupportsReset(Protocol):
    def reset(self, source_id: int | str | None = None) -> None: ...


@runtime_checkable
class SupportsWarmup(Protocol):
    def warmup(self, batch_size: int, device: torch.device) -> None: ...


@runtime_checkable
class SplitStage(Protocol):
    def launch(self, batch: Batch) -> Any: ...

    def finish(self, pending: Any) -> Batch: ...


@runtime_checkable
class HostStage(Protocol):
    host_stage: bool


@runtime_checkable
class SupportsClose(Protocol):
    def close(self) -> None: ...


def stage_name(obj: Any) -> str:
    """The name a stage is reported under: its ``name`` attribute, a function's ``__name__``, or
    its class name."""
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__)
