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
- :class:`ReadsMasks`: ``reads_masks: bool`` says whether a stage (or a sink) reads the objects'
  instance masks (``Objects.masks``). :func:`reads_masks` is the answer for any object: the
  declaration, else a host-frames sink's ``host_masks`` (``sinks.records.ReadsHostFrames``), else
  True (unknown code may read them).
- :class:`MasksOnDemand`: ``masks_needed(needed)`` is told, when the pipeline is built (and when
  a sink is added or the user iterates the batches), whether anything after it reads masks; the
  detector then skips building them when nothing does (``Detector(masks="auto")``). ``owner``:
  who tells (each pipeline); a stage shared by several pipelines builds them when any needs them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..batch import Batch

__all__ = ["Stage", "SupportsReset", "SupportsWarmup", "SplitStage", "HostStage", "SupportsClose",
           "ReadsMasks", "MasksOnDemand", "reads_masks", "stage_name"]


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


@runtime_checkable
class ReadsMasks(Protocol):
    reads_masks: bool


@runtime_checkable
class MasksOnDemand(Protocol):
    def masks_needed(self, needed: bool, owner: object = None) -> None: ...


def reads_masks(obj: Any) -> bool:
    """Whether ``obj`` (a stage or a sink) may read ``Objects.masks``: its ``reads_masks``, else
    its ``host_masks`` (a sink that reads only ``sinks.records.host_frames`` and says whether it
    reads the masks' RLE), else True: a stage or sink that does not say may read them."""
    for attr in ("reads_masks", "host_masks"):
        v = getattr(obj, attr, None)
        if v is not None:
            return bool(v)
    return True


def stage_name(obj: Any) -> str:
    """The name a stage is reported under: its ``name`` attribute, a function's ``__name__``, or
    its class name."""
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__)
