"""Every message between the pipeline and a decode process, as a frozen dataclass.

Worker -> pipeline (sent in lists, one ``Connection.send`` per burst): :class:`FrameMsg` (a frame
is in ring slot ``slot`` of generation ``gen``), :class:`RingMsg` (a new ring: a CUDA tensor that
torch rebuilds from its IPC handle, or a :class:`ShmRing` file), :class:`StatsMsg` (the source's
:class:`~vidflow.stats.SourceCounters`), :class:`EndMsg` (the source ended, with its error).
Pipeline -> worker (one message per send): :class:`OpenMsg`, :class:`CloseMsg`, :class:`StopMsg`,
:class:`FreeMsg` (ring slots given back).

``counters_of(source)`` is the one adapter from what a source's ``stats()`` returns to
``SourceCounters``: wave-2 sources return one already; older ones return a dict (until every
source is converted), read here and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import torch

from ...batch import FrameInfo
from ...errors import SourceError
from ...stats import SourceCounters
from ..base import ColorMatrix, PixelFormat

__all__ = ["FrameMsg", "RingMsg", "ShmRing", "StatsMsg", "SourceAttrs", "EndMsg", "OpenMsg", "CloseMsg",
           "StopMsg", "SlotRef", "FreeMsg", "STATS_EVERY", "COUNTER_FIELDS", "counters_of", "attrs_of"]

log = logging.getLogger(__name__)

#: seconds between a worker's counter reports of a running source (a state change goes at once)
STATS_EVERY = 1.0
COUNTER_FIELDS = tuple(f.name for f in fields(SourceCounters))

# a dict-returning source's own state names -> SOURCE_STATES (UriSource before wave 2)
_LEGACY_STATES = {"connecting": "starting", "backoff": "reconnecting", "running": "running",
                  "failed": "failed", "ended": "ended", "stalled": "stalled", "reconnecting": "reconnecting",
                  "starting": "starting"}


def _check_sid(sid: Any) -> None:
    if not isinstance(sid, (int, str)):
        raise TypeError(f"source id: expected int or str, got {type(sid).__name__}")


@dataclass(frozen=True)
class ShmRing:
    """A CPU ring in shared memory: the file ``path`` holds ``shape`` uint8 (slots first)."""

    path: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FrameMsg:
    """Source ``sid``'s next frame is in slot ``slot`` of its ring generation ``gen``."""

    sid: int | str
    gen: int
    slot: int
    info: FrameInfo
    format: PixelFormat
    matrix: ColorMatrix
    full_range: bool

    def __post_init__(self) -> None:
        if self.slot < 0 or self.gen < 1:
            raise ValueError(f"FrameMsg: expected gen >= 1 and slot >= 0, got gen={self.gen} slot={self.slot}")

    def __reduce__(self) -> tuple:
        # one flat tuple on the wire (a frame message crosses per frame: ~10x cheaper to pickle
        # than the dataclasses' default state dicts); rebuilt, and checked again, on arrival
        i = self.info
        return (_frame_msg, (self.sid, self.gen, self.slot, i.frame_num, i.pts, i.ntp_ns, i.width, i.height,
                             self.format, self.matrix, self.full_range))


def _frame_msg(sid: int | str, gen: int, slot: int, num: int, pts: float, ntp: int, w: int, h: int,
               fmt: PixelFormat, matrix: ColorMatrix, full: bool) -> FrameMsg:
    return FrameMsg(sid, gen, slot, FrameInfo(sid, num, pts, ntp, w, h), fmt, matrix, full)


@dataclass(frozen=True)
class RingMsg:
    """Source ``sid``'s ring generation ``gen``: a CUDA tensor (IPC) or a shared-memory file."""

    sid: int | str
    gen: int
    ring: torch.Tensor | ShmRing

    def __post_init__(self) -> None:
        _check_sid(self.sid)


@dataclass(frozen=True)
class SourceAttrs:
    """The few plain attributes that describe a source beyond its counters, as the decode
    process's copy has them: ``backend`` (``FileSource``: "nvdec" / "ffmpeg" once frames() opened
    it), ``state`` (the source's own ``state`` attribute, in its own words), ``connects``
    (``UriSource``: successful opens)."""

    backend: str | None = None
    state: str | None = None
    connects: int | None = None


@dataclass(frozen=True)
class StatsMsg:
    """Source ``sid``'s counters now."""

    sid: int | str
    counters: SourceCounters
    attrs: SourceAttrs = SourceAttrs()

    def __post_init__(self) -> None:
        _check_sid(self.sid)
        if not isinstance(self.counters, SourceCounters):
            raise TypeError(f"StatsMsg.counters: expected SourceCounters, got {type(self.counters).__name__}")


@dataclass(frozen=True)
class EndMsg:
    """Source ``sid`` ended (``error`` None) or failed; its last counters."""

    sid: int | str
    stats: StatsMsg | None            # None when the source's stats() failed at the end
    error: SourceError | None = None


@dataclass(frozen=True)
class OpenMsg:
    """Run ``source`` as ``sid`` in this process."""

    sid: int | str
    source: Any

    def __post_init__(self) -> None:
        _check_sid(self.sid)


@dataclass(frozen=True)
class CloseMsg:
    sid: int | str


@dataclass(frozen=True)
class StopMsg:
    """Close every source and exit."""


@dataclass(frozen=True)
class SlotRef:
    """Slot ``slot`` of source ``sid``'s ring generation ``gen``."""

    sid: int | str
    gen: int
    slot: int

    def __reduce__(self) -> tuple:
        return (SlotRef, (self.sid, self.gen, self.slot))       # one per frame too: a flat tuple


@dataclass(frozen=True)
class FreeMsg:
    """These ring slots may be written again."""

    slots: tuple[SlotRef, ...]


def counters_of(src: Any, *, decoded: int, ended: bool = False, failed: bool = False) -> SourceCounters | None:
    """``src.stats()`` as :class:`SourceCounters` (``decoded``: frames the runner sent, used when the
    source does not count them itself); None when ``stats()`` raised (logged)."""
    fn = getattr(src, "stats", None)
    raw: Any = None
    if callable(fn):
        try:
            raw = fn()
        except Exception as e:  # noqa: BLE001 - a source's counters never stop its frames
            log.warning("%s: stats() failed: %s: %s", getattr(src, "uri", type(src).__name__), type(e).__name__, e)
            return None
    if isinstance(raw, SourceCounters):
        c = raw
    else:                                  # TRANSITIONAL: a source whose stats() is still a dict
        d = dict(raw or {})
        state = _LEGACY_STATES.get(str(d.get("state") or getattr(src, "state", "") or ""), "running")
        c = SourceCounters(state=state, state_since=float(d.get("state_since") or getattr(src, "state_since", 0.0) or 0.0),
                           decoded=int(d.get("frames", d.get("decoded", decoded)) or 0),
                           decode_errors=int(d.get("decode_errors") or 0),
                           corrupt_frames=int(d.get("corrupt_frames") or 0),
                           reconnects=int(d.get("reconnects") or 0), stalls=int(d.get("stalls") or 0),
                           missed_s=float(d.get("missed_s") or 0.0), last_error=str(d.get("last_error") or ""))
    if (failed or ended) and c.state not in ("ended", "failed"):   # the runner knows the end
        c = SourceCounters(**{**{k: getattr(c, k) for k in COUNTER_FIELDS}, "state": "failed" if failed else "ended"})
    return c


def attrs_of(src: Any) -> SourceAttrs:
    backend, state, connects = (getattr(src, k, None) for k in ("backend", "state", "connects"))
    return SourceAttrs(backend=backend if isinstance(backend, str) else None,
                       state=state if isinstance(state, str) else None,
                       connects=connects if isinstance(connects, int) else None)
