"""Start-up timing of a run: time to the first batch and time to steady state.

``first_batch_s``: from the start of ``run()`` (warm-up included) until the first batch has left
the sinks. ``steady_s``: until the start of the first stretch of ``WINDOW`` batches in which no
interval between two batches leaving the sinks is longer than ``FACTOR`` times their median
(no compile, autotuning or allocation stall any more). ``None`` while not reached.

``phases``: where the time to the first batch went, seconds from the start of ``run()`` at the
end of each phase, in order (:meth:`mark`; with warm-up on, the pipeline marks
``files_started`` once the sources that are not live were asked to start, ``warm_up`` after the
stages' warm-up; then ``sources_started`` once every source was asked to start, ``first_frame`` when the
muxer took its first frames — decoders opened, decode processes up — and ``first_batch``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from collections.abc import Callable

__all__ = ["StartupMeter", "process_age_s"]


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``: its start time in clock ticks after
    boot against the uptime; 10 ms resolution), None elsewhere. ``vidflow run`` reports the time
    from the process's start to ``run()`` (interpreter, imports, YAML, models loaded) with it."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class StartupMeter:
    WINDOW = 8
    FACTOR = 2.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.t0 = clock()
        self.first_batch_s: float | None = None
        self.steady_s: float | None = None
        self._done: deque[float] = deque(maxlen=self.WINDOW + 1)
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """``phase`` ended now (only its first mark counts)."""
        if phase not in self.phases:
            self.phases[phase] = round(self.clock() - self.t0, 4)

    def batch(self) -> None:
        """A batch has left the sinks."""
        if self.steady_s is not None:
            return
        now = self.clock() - self.t0
        if self.first_batch_s is None:
            self.first_batch_s = now
            self.phases.setdefault("first_batch", round(now, 4))
        self._done.append(now)
        if len(self._done) == self._done.maxlen:
            ts = list(self._done)
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            if max(gaps) <= self.FACTOR * max(statistics.median(gaps), 1e-9):
                self.steady_s = ts[0]
