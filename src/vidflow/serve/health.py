"""Health of a running pipeline: per-source rates and states, and the three probes.

:class:`Monitor` is fed run summaries (``Pipeline.snapshot()``) by the server, twice a second
and on every probe or scrape, and keeps only a few numbers per source. From them it tells:

- **fps**: frames delivered per second over the last ``window_s`` seconds (not since start);
- **stalled** from **blocked** (Savant's states): a source in state ``running`` that delivered no
  frame for ``stall_after_s`` is *blocked* when it has frames waiting (decoded, neither
  delivered nor dropped) or is dropping them - the pipeline downstream is full, the camera is
  fine, nothing is restarted for it - and *stalled* when it has nothing waiting: the camera
  itself went quiet. A source that says it is stalled (its own ``stats().state``) is stalled.

The probes (Kubernetes style; each returns ``(ok, details)``):

- ``livez``: the loop is ticking: fails only when frames are waiting and no batch has gone
  through for ``hang_after_s`` (a wedged pipeline: restarting the process is the cure).
- ``startupz``: the first batch went through (models loaded and warm).
- ``readyz``: running, started, and at least one source *running* (not stalled, not blocked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import redact_uri
from ..stats import RunSummary

log = logging.getLogger(__name__)

__all__ = ["Monitor", "SourceHealth", "STATES", "canonical_state"]

#: every state a source is reported in (metrics, API, page)
STATES = ("starting", "running", "blocked", "stalled", "reconnecting", "ended", "failed", "removed")
_CANON = {"pending": "starting", "connecting": "starting", "backoff": "reconnecting", "stopped": "ended"}


def canonical_state(state: str) -> str:
    """The pipeline's and the sources' state names mapped onto :data:`STATES`."""
    s = _CANON.get(state, state)
    return s if s in STATES else "starting"


@dataclass(frozen=True)
class SourceHealth:
    """One source as the monitor sees it. ``since_frame_s``: seconds since its decoded count last
    grew (None before its first frame); ``backlog``: frames decoded but neither delivered nor
    dropped yet (queued or in flight)."""

    source_id: int | str
    state: str
    fps: float
    since_frame_s: float | None
    backlog: int

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"SourceHealth.state: expected one of {STATES}, got {self.state!r}")


@dataclass
class _Track:
    first: float
    rate: deque = field(default_factory=lambda: deque(maxlen=256))     # (t, frames delivered)
    decoded: int = -1
    decoded_t: float | None = None
    frames: int = -1
    frames_t: float = 0.0
    dropped: int = -1
    dropped_t: float = float("-inf")


class Monitor:
    """Rates, stall/blocked detection and probes from successive run summaries (thread-safe)."""

    def __init__(self, *, window_s: float = 5.0, stall_after_s: float = 10.0, hang_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, v in (("window_s", window_s), ("stall_after_s", stall_after_s), ("hang_after_s", hang_after_s)):
            if not v > 0:
                raise ValueError(f"Monitor: {name} must be > 0 seconds, got {v!r}")
        self.window_s, self.stall_after_s, self.hang_after_s = float(window_s), float(stall_after_s), float(hang_after_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._tracks: dict[Any, _Track] = {}
        self._health: dict[Any, SourceHealth] = {}
        self._batches, self._batches_t = -1, 0.0
        self._summary: RunSummary | None = None

    # -- feeding -------------------------------------------------------------------------------
    def sample(self, summary: RunSummary) -> None:
        now = self.clock()
        with self._lock:
            self._summary = summary
            if summary.batches != self._batches:
                self._batches, self._batches_t = summary.batches, now
            health = {}
            for sid, st in summary.sources.items():
                tr = self._tracks.get(sid)
                if tr is None:
                    tr = self._tracks[sid] = _Track(first=now, frames_t=now)
                if st.decoded != tr.decoded:
                    tr.decoded, tr.decoded_t = st.decoded, (now if tr.decoded >= 0 or st.decoded > 0 else None)
                if st.frames != tr.frames:
                    tr.frames, tr.frames_t = st.frames, now
                if st.dropped != tr.dropped:
                    if tr.dropped >= 0:
                        tr.dropped_t = now
                    tr.dropped = st.dropped
                tr.rate.append((now, st.frames))
                while len(tr.rate) > 2 and now - tr.rate[1][0] >= self.window_s:
                    tr.rate.popleft()
                health[sid] = self._judge(sid, st, tr, now)
            for sid in [s for s in self._tracks if s not in summary.sources]:
                del self._tracks[sid]
            old, self._health = self._health, health
        for sid, h in health.items():                   # report changes of judgement once each
            before = old.get(sid)
            if before is not None and before.state != h.state and {"blocked", "stalled"} & {h.state, before.state}:
                level = logging.WARNING if h.state in ("blocked", "stalled") else logging.INFO
                log.log(level, "source %s: %s -> %s (%d frames waiting, %s)", redact_uri(sid), before.state, h.state,
                        h.backlog, "downstream is full, not restarted for" if h.state == "blocked"
                        else "no frames from the source" if h.state == "stalled" else "frames flow again")

    def _judge(self, sid: Any, st: Any, tr: _Track, now: float) -> SourceHealth:
        state = canonical_state(st.state)
        backlog = max(0, st.decoded - st.frames - st.dropped)
        if state == "running" and now - tr.frames_t >= self.stall_after_s and now - tr.first >= self.stall_after_s:
            dropping = now - tr.dropped_t < self.stall_after_s
            state = "blocked" if backlog > 0 or dropping else "stalled"
        fps = 0.0
        if state in ("running", "blocked", "stalled") and len(tr.rate) >= 2:
            (t0, f0), (t1, f1) = tr.rate[0], tr.rate[-1]
            fps = (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0
        since = None if tr.decoded_t is None else now - tr.decoded_t
        return SourceHealth(sid, state, fps, since, backlog)

    # -- reading -------------------------------------------------------------------------------
    def sources(self) -> dict[Any, SourceHealth]:
        with self._lock:
            return dict(self._health)

    def _base(self) -> tuple[RunSummary | None, dict]:
        with self._lock:
            s, health = self._summary, dict(self._health)
        if s is None or not s.started:
            return s, {"pipeline": "not started"}
        details = {"pipeline": "finished" if s.wall_s else "running", "batches": s.batches,
                   "sources": {str(k): h.state for k, h in health.items()}}
        return s, details

    def livez(self) -> tuple[bool, dict]:
        s, details = self._base()
        if s is None or not s.started or s.wall_s:
            return True, details
        with self._lock:
            quiet = self.clock() - self._batches_t
            waiting = sum(h.backlog for h in self._health.values())
        if waiting and quiet >= self.hang_after_s:
            details["reason"] = f"{waiting} frames waiting and no batch for {quiet:.0f} s"
            return False, details
        return True, details

    def startupz(self) -> tuple[bool, dict]:
        s, details = self._base()
        ok = s is not None and bool(s.started) and (s.batches >= 1 or bool(s.wall_s))
        if not ok:
            details["reason"] = "no batch has gone through yet (starting, warming up)"
        return ok, details

    def readyz(self) -> tuple[bool, dict]:
        s, details = self._base()
        if s is None or not s.started:
            return False, {**details, "reason": "the pipeline has not started"}
        if s.wall_s:
            return False, {**details, "reason": "the pipeline has finished"}
        if s.batches < 1:
            return False, {**details, "reason": "no batch has gone through yet (warming up)"}
        if "running" not in details["sources"].values():
            return False, {**details, "reason": "no source is running"}
        return True, details
