"""States and counters of a source, the same on CPU and GPU, in threads and in decode processes.

:class:`SourceStatus` is the base of ``FileSource`` and ``UriSource``: plain attributes (so a
decode process's reports can be mirrored onto the pipeline's copy), ``stats()`` returning
:class:`Counters` (a :class:`~vidflow.stats.SourceCounters` plus ``delivered``, ``dropped``,
``connects``, ``backend`` and ``time_in_state``), a log line on every state change, and damage
(decode errors, concealed frames) counted with a throttled warning naming the source and the frame.

States (``stats.SOURCE_STATES``): ``starting`` -> ``running`` -> ``stalled`` (quiet past its
stall timeout) / ``reconnecting`` (lost, backing off) -> ``running`` ... -> ``ended`` (with
``last_error`` set when it ended early or damaged) / ``failed`` (gave up). ``transitions`` keeps
the last 64 ``(time.monotonic(), state, why)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from ..errors import redact_uri
from ..stats import SOURCE_STATES, SourceCounters

__all__ = ["Counters", "SourceStatus", "WARN_EVERY", "bare_message"]

log = logging.getLogger("vidflow.sources")

#: seconds between two damage warnings of one source (the counts in between are summed up)
WARN_EVERY = 5.0


@dataclass(frozen=True)
class Counters(SourceCounters):
    """``SourceCounters`` plus: ``delivered`` (frames yielded), ``dropped`` (frames the source
    itself dropped: ``on_corrupt="skip"``; live queue drops are the pipeline's), ``connects``
    (successful opens), ``backend`` ("nvdec" / "ffmpeg" / "" before the first open),
    ``time_in_state`` (seconds, when ``stats()`` was called)."""

    delivered: int = 0
    dropped: int = 0
    connects: int = 0
    backend: str = ""
    time_in_state: float = 0.0

    def get(self, key: str, default: Any = None) -> Any:
        """TRANSITIONAL: readers that still take ``stats()`` as a dict (``Pipeline``'s summary copy)."""
        return getattr(self, key, default) if key in _FIELDS else default

    def __getitem__(self, key: str) -> Any:
        """TRANSITIONAL, as :meth:`get`."""
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)


_FIELDS = frozenset(f.name for f in fields(Counters))


def bare_message(e: BaseException, sid: Any) -> str:
    """An error's text without the ``source N (uri): `` prefix a ``SourceError`` carries (the
    log line and ``last_error`` name the source once), password removed."""
    from ..errors import SourceError
    text = str(e)
    if isinstance(e, SourceError):
        prefix = f"source {sid}" + (f" ({e.uri})" if e.uri else "") + ": "
        if text.startswith(prefix):
            text = text[len(prefix):]
    return redact_uri(text)


class SourceStatus:
    """State, counters and damage reporting of one source (a base class; see the module text)."""

    uri: str

    # picklable (a source moves to a decode process): its stop events are made anew there
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, threading.Event)}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        for name in self._EVENTS:
            setattr(self, name, threading.Event())

    _EVENTS: tuple[str, ...] = ()

    def _status_init(self) -> None:
        self.state = "starting"
        self.state_since = time.monotonic()
        self.decoded = self.delivered = self.dropped = 0
        self.decode_errors = self.corrupt_frames = 0
        self.connects = self.reconnects = self.stalls = 0
        self.missed_s = 0.0
        self.last_error = ""
        self.backend: str | None = None
        self.transitions: deque = deque(maxlen=64)
        self._warned_at = -1e9
        self._unwarned = 0

    # -- state ---------------------------------------------------------------------------------
    def _enter(self, state: str, sid: Any, why: str = "", *, level: int = logging.INFO) -> None:
        """Change state (logged once per change; ``why`` redacted)."""
        if state not in SOURCE_STATES:
            raise ValueError(f"unknown source state {state!r}")
        why = redact_uri(why)
        if state == self.state and state != "reconnecting":
            return
        now = time.monotonic()
        self.state, self.state_since = state, now
        self.transitions.append((now, state, why))
        if state in ("failed", "stalled") or (state == "ended" and why):
            level = max(level, logging.WARNING)
        # a failure's error is raised to the pipeline, which logs it once: the state line omits it
        shown = "" if state == "failed" else why
        log.log(level, "source %s (%s): %s%s", sid, self.uri, state, f": {shown}" if shown else "")

    def _error(self, text: str) -> None:
        self.last_error = redact_uri(text)

    # -- damage --------------------------------------------------------------------------------
    def _damage(self, kind: str, sid: Any, frame_num: int, text: str, *, now: float | None = None) -> None:
        """Count one ``decode_error`` (a packet the decoder rejected) or ``corrupt`` (a frame it
        concealed damage in) and warn, at most once per ``WARN_EVERY`` s per source."""
        if kind == "decode_error":
            self.decode_errors += 1
        else:
            self.corrupt_frames += 1
        self._error(f"{'decode error' if kind == 'decode_error' else 'corrupt frame'} at frame {frame_num}: {text}")
        now = time.monotonic() if now is None else now
        if now - self._warned_at >= WARN_EVERY:
            more = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
            log.warning("source %s (%s): %s%s; %d decode errors, %d corrupt frames so far", sid, self.uri,
                        self.last_error, more, self.decode_errors, self.corrupt_frames)
            self._warned_at, self._unwarned = now, 0
        else:
            self._unwarned += 1

    # -- report --------------------------------------------------------------------------------
    def stats(self) -> Counters:
        """Counters now (safe to log: no credentials)."""
        return Counters(state=self.state, state_since=self.state_since, decoded=self.decoded,
                        decode_errors=self.decode_errors, corrupt_frames=self.corrupt_frames,
                        reconnects=self.reconnects, stalls=self.stalls, missed_s=round(self.missed_s, 3),
                        last_error=self.last_error, delivered=self.delivered, dropped=self.dropped,
                        connects=self.connects, backend=self.backend or "",
                        time_in_state=max(0.0, time.monotonic() - self.state_since))
