"""The pipeline's observers (``vidflow.observe``): sorted by what they observe when added, called
on the thread that did the work, dropped (logged once) when they raise."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from ..observe import ObservesBatches, ObservesSources, ObservesStages, ObservesWrites

__all__ = ["Observers"]

log = logging.getLogger(__name__)


class Observers:
    """Observers by hook. Lists are replaced, never changed in place, so the pipeline's threads
    read them without a lock while ``add`` runs on another thread."""

    def __init__(self, observers: Sequence[Any] = ()) -> None:
        self._lock = threading.Lock()
        self.stages: tuple[Any, ...] = ()
        self.writes: tuple[Any, ...] = ()
        self.batches: tuple[Any, ...] = ()
        self.sources: tuple[Any, ...] = ()
        self.all: tuple[Any, ...] = ()
        for o in observers:
            self.add(o)

    def add(self, obs: Any) -> None:
        hooks = (ObservesStages, ObservesWrites, ObservesBatches, ObservesSources)
        if not any(isinstance(obs, h) for h in hooks):
            raise ValueError(f"observers: {type(obs).__name__} has none of on_stage, on_write, on_batch, "
                             "on_source_state")
        with self._lock:
            self.all = (*self.all, obs)
            self._sort()

    def _sort(self) -> None:
        self.stages = tuple(o for o in self.all if isinstance(o, ObservesStages))
        self.writes = tuple(o for o in self.all if isinstance(o, ObservesWrites))
        self.batches = tuple(o for o in self.all if isinstance(o, ObservesBatches))
        self.sources = tuple(o for o in self.all if isinstance(o, ObservesSources))

    def _drop(self, obs: Any, e: BaseException) -> None:
        log.error("observer %r raised %s: %s; it is dropped", obs, type(e).__name__, e)
        with self._lock:
            self.all = tuple(o for o in self.all if o is not obs)
            self._sort()

    @property
    def timed(self) -> bool:
        """Somebody wants stage or sink timings."""
        return bool(self.stages or self.writes)

    @property
    def sync(self) -> bool:
        """An observer asks for device-synchronised timings now (its ``sync`` attribute)."""
        return any(getattr(o, "sync", False) for o in (*self.stages, *self.writes))

    def stage(self, name: str, n: int, seconds: float) -> None:
        for o in self.stages:
            try:
                o.on_stage(name, n, seconds)
            except Exception as e:  # noqa: BLE001 - an observer never stops the pipeline
                self._drop(o, e)

    def write(self, name: str, n: int, seconds: float) -> None:
        for o in self.writes:
            try:
                o.on_write(name, n, seconds)
            except Exception as e:  # noqa: BLE001
                self._drop(o, e)

    def batch(self, frames: int, wait_s: float, latencies_s: Sequence[float]) -> None:
        for o in self.batches:
            try:
                o.on_batch(frames, wait_s, latencies_s)
            except Exception as e:  # noqa: BLE001
                self._drop(o, e)

    def source_state(self, sid: int | str, state: str) -> None:
        for o in self.sources:
            try:
                o.on_source_state(sid, state)
            except Exception as e:  # noqa: BLE001
                self._drop(o, e)
