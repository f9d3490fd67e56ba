"""``PooledSource``: the pipeline's handle of a source that decodes in a decode process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...stats import SourceCounters
from ._wire import COUNTER_FIELDS, StatsMsg

__all__ = ["PooledSource"]


class PooledSource:
    """The pipeline's handle of a source that decodes in a decode process (what
    :meth:`DecodePool.open` returns): ``stats()`` is the last :class:`SourceCounters` the process
    reported, ``backend`` / ``state`` what its copy of the source says; ``uri`` and ``live`` are
    the source's; ``close()`` stops it there. Its frames arrive through ``open``'s ``deliver``."""

    poolable = True

    def __init__(self, source: Any, source_id: int | str, close: Callable[[], None]) -> None:
        self.source, self.source_id, self._close = source, source_id, close
        self._last = StatsMsg(source_id, SourceCounters())

    @property
    def uri(self) -> str:
        return str(getattr(self.source, "uri", ""))

    @property
    def live(self) -> bool:
        return bool(getattr(self.source, "live", False))

    @property
    def backend(self) -> str | None:
        return self._last.attrs.backend

    @property
    def state(self) -> str:
        return self._last.counters.state

    def stats(self) -> SourceCounters:
        return self._last.counters

    def frames(self, *, device: torch.device, source_id: int | str) -> Any:
        raise TypeError(f"source {self.source_id} decodes in a decode process; its frames arrive through "
                        "DecodePool.open's deliver callback")

    def close(self) -> None:
        self._close()

    def _report(self, msg: StatsMsg) -> None:
        self._last = msg
        _mirror_onto(self.source, msg)

    def __repr__(self) -> str:
        return f"PooledSource({self.source!r}, source_id={self.source_id!r}, state={self.state!r})"


def _mirror_onto(src: Any, msg: StatsMsg) -> None:
    """TRANSITIONAL, until the pipeline keeps the :class:`PooledSource` that ``open`` returns:
    today's pipeline reads ``stats()``, ``state`` and ``backend`` off its own copy of the source.
    So the counters (the ``SourceCounters`` fields), ``state``, ``backend`` and ``connects`` are
    copied onto that copy — only these declared names, and only where the source already has
    them as plain attributes (its own ``stats()`` then reports the process's numbers)."""
    c, a = msg.counters, msg.attrs
    values: dict[str, Any] = {k: getattr(c, k) for k in COUNTER_FIELDS if k != "state"}
    values.update({k: v for k, v in (("state", a.state), ("backend", a.backend), ("connects", a.connects))
                   if v is not None})
    for k, v in values.items():
        if k in getattr(src, "__dict__", {}):
            setattr(src, k, v)
