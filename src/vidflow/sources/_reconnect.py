"""Reconnecting: the backoff, the stall clock, and the outage bookkeeping of a live source.

* :class:`Backoff`: retry ``k`` waits ``min(cap, initial * 2**(k-1))``; ``reset()`` after a good
  connection (one that delivered frames), so a camera that comes back after a short outage is
  retried at ``initial`` again. Live cameras default to ``(0.5, 5.0)``: a camera that is back
  waits at most 5 s. A connection that delivered frames for ``HEALTHY_S`` s or more earns one
  quick first retry (``QUICK_RETRY`` s) before that schedule: a blip (a dropped TCP connection, a
  camera or relay restarting at once) is back in 0.1 s instead of 0.5 s, and the retries after it
  keep their usual times from the loss (0.1, 0.5, 1.5, 3.5 ... s), so a longer outage is not
  found later. A camera that drops each connection soon after it starts never earns it.
* :class:`StallClock`: no frame for ``stall_timeout`` s (``warmup`` s before the first frame of a
  connection, for long GOPs) is a stall; the time the consumer holds a frame is back-pressure and
  does not count.
* :class:`Outage`: from the loss to the first frame after it: how long, how many frames missed
  at the stream's rate; the ``back after N s, M frames missed`` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Backoff", "StallClock", "Outage", "backoff_delay", "check_backoff", "DEFAULT_BACKOFF", "HEALTHY_S",
           "QUICK_RETRY"]

#: live cameras: retry after 0.5 s, then 1, 2, 4, 5, 5 ... s
DEFAULT_BACKOFF = (0.5, 5.0)
#: seconds a connection must have delivered frames for its loss to get a quick first retry
HEALTHY_S = 10.0
#: the quick first retry's delay (seconds)
QUICK_RETRY = 0.1


def backoff_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number ``failures`` (1, 2, ...): ``min(cap, initial * 2**(failures-1))``."""
    return min(cap, initial * (2.0 ** max(0, failures - 1)))


def check_backoff(backoff: Any) -> tuple[float, float]:
    if (not isinstance(backoff, (list, tuple)) or len(backoff) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in backoff)
            or not 0 < backoff[0] <= backoff[1]):
        raise ValueError(f"backoff: expected (initial, cap) seconds with 0 < initial <= cap, got {backoff!r}")
    return float(backoff[0]), float(backoff[1])


class Backoff:
    """Consecutive failures and the delay before the next retry (see the module text)."""

    def __init__(self, backoff: Sequence[float]) -> None:
        self.initial, self.cap = check_backoff(backoff)
        self.failures = 0
        self._quick = False       # this outage began with the quick retry

    def next(self, *, healthy_for: float = 0.0) -> float:
        """The delay before the next retry (counted in ``failures``). ``healthy_for``: seconds the
        lost connection delivered frames; on the first retry, ``>= HEALTHY_S`` makes it quick."""
        self.failures += 1
        if self.failures == 1:
            self._quick = healthy_for >= HEALTHY_S and QUICK_RETRY < self.initial
            if self._quick:
                return QUICK_RETRY
        if self._quick and self.failures == 2:      # the usual first retry's time, counted from the loss
            return backoff_delay(1, self.initial, self.cap) - QUICK_RETRY
        return backoff_delay(self.failures - self._quick, self.initial, self.cap)

    def reset(self) -> None:
        self.failures = 0
        self._quick = False


class StallClock:
    """Decides when a connection has stalled (see the module text). ``resume()`` after the
    consumer gave control back restarts the silence count."""

    def __init__(self, *, stall_timeout: float, warmup: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_timeout, self.warmup, self.clock = stall_timeout, warmup, clock
        self.got_frame = False
        self.last = clock()

    def frame(self) -> None:
        self.got_frame = True
        self.last = self.clock()

    def resume(self) -> None:
        self.last = self.clock()

    def allowance(self) -> float:
        return self.stall_timeout if self.got_frame else self.warmup

    def silent_for(self) -> float:
        return self.clock() - self.last

    def stalled(self) -> bool:
        return self.silent_for() > self.allowance()


class Outage:
    """One loss of a live stream: ``started`` (monotonic) and the stream's ``fps``; ``end()`` at
    the first frame after it returns ``(seconds, frames missed)``."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.fps, self.clock = fps if fps > 0 else 30.0, clock
        self.started = clock()

    def end(self) -> tuple[float, int]:
        dt = max(0.0, self.clock() - self.started)
        return dt, int(round(dt * self.fps))
