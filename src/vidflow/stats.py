"""Run statistics: per-source counters and the summary printed at the end of a run."""

from __future__ import annotations

import time
import dataclasses
from collections import deque
from dataclasses import dataclass, field

__all__ = ["SourceCounters", "SourceStats", "RunSummary", "SOURCE_STATES"]


#: the states every source reports, on CPU and GPU, in threads and in decode processes:
#: starting (opening / first connect), running (frames arrive), stalled (connected but quiet for
#: longer than its stall timeout), reconnecting (lost; backing off and reconnecting), ended
#: (finished; with ``last_error`` set when it ended early, e.g. a damaged file), failed (gave up).
SOURCE_STATES = ("starting", "running", "stalled", "reconnecting", "ended", "failed")


@dataclass(frozen=True)
class SourceCounters:
    """What every source's ``stats()`` returns: the same keys with the same meaning everywhere.

    It crosses the decode-process boundary as is (a picklable frozen dataclass). ``decoded``:
    frames the decoder produced; ``decode_errors``: packets/frames the decoder reported as broken;
    ``corrupt_frames``: frames delivered but concealed/damaged; ``reconnects``: successful
    re-connections after a loss; ``stalls``: times the source went quiet past its stall timeout;
    ``last_error``: the latest error text, credentials removed (empty once the source has
    recovered and is running again); ``state_since``: ``time.monotonic()`` when ``state`` began;
    ``missed_s``: seconds of live stream lost to outages in all.
    """

    state: str = "starting"
    state_since: float = 0.0
    decoded: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    reconnects: int = 0
    stalls: int = 0
    missed_s: float = 0.0
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.state not in SOURCE_STATES:
            raise ValueError(f"SourceCounters.state: expected one of {SOURCE_STATES}, got {self.state!r}")


@dataclass
class SourceStats:
    """Counters of one source. ``frames``: frames delivered to the sinks; ``decoded``: frames the
    decoder produced; ``dropped``: frames a live source dropped because its queue was full."""

    source_id: int | str
    uri: str = ""
    live: bool = False
    state: str = "pending"
    frames: int = 0
    decoded: int = 0
    dropped: int = 0
    errors: int = 0
    error: BaseException | None = None
    reconnects: int = 0
    stalls: int = 0
    last_error: str = ""
    started: float | None = None
    ended: float | None = None

    @property
    def fps(self) -> float:
        if self.started is None:
            return 0.0
        dt = (self.ended if self.ended is not None else time.monotonic()) - self.started
        return self.frames / dt if dt > 0 else 0.0


@dataclass
class RunSummary:
    """What a run did: per-source stats, batches, wall time, latency from frame receipt to sink."""

    sources: dict[int | str, SourceStats] = field(default_factory=dict)
    batches: int = 0
    started: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def copy(self) -> RunSummary:
        """A copy that shares nothing mutable with this one (``Pipeline.snapshot()`` takes it
        under the pipeline's lock): every :class:`SourceStats` and the latencies are copied."""
        return dataclasses.replace(self, sources={sid: dataclasses.replace(st) for sid, st in self.sources.items()},
                                   latencies_ms=deque(self.latencies_ms, maxlen=self.latencies_ms.maxlen))

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sources.values())

    @property
    def fps(self) -> float:
        wall = self.wall_s or (time.monotonic() - self.started if self.started else 0.0)
        return self.frames / wall if wall > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1) of frame latency in ms (receipt -> sinks), NaN if none."""
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def progress_line(self) -> str:
        parts = [f"{sid}:{s.fps:.0f}fps" + (f"[{s.state}]" if s.state not in ("running",) else "")
                 for sid, s in self.sources.items()]
        return f"{self.frames} frames, {self.fps:.1f} fps | " + " ".join(parts)

    def table(self) -> str:
        rows = [("source", "state", "frames", "fps", "dropped", "errors", "reconnects", "uri / error")]
        for sid, s in self.sources.items():
            note = str(s.error) if s.error is not None else (f"{s.uri}  ({s.last_error})" if s.last_error else s.uri)
            rows.append((str(sid), s.state, str(s.frames), f"{s.fps:.1f}", str(s.dropped), str(s.errors),
                         str(s.reconnects), note))
        widths = [max(len(r[i]) for r in rows) for i in range(7)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:7], widths)) + "  " + r[7] for r in rows]
        lat = ""
        if self.latencies_ms:
            lat = f", latency p50 {self.latency_ms(0.5):.0f} ms p95 {self.latency_ms(0.95):.0f} ms"
        lines.append(f"total: {self.frames} frames in {self.batches} batches, {self.wall_s:.1f} s, "
                     f"{self.fps:.1f} fps{lat}" + (" (interrupted)" if self.interrupted else ""))
        return "\n".join(lines)
