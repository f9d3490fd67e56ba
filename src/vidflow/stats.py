"""Run statistics: per-source counters and the summary printed at the end of a run."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(repr=False)
class RunSummary:
    """What a run did: per-source stats, batches, wall time, latency from frame receipt to sink;
    objects per class and track ids per source (:meth:`note_batch`), and the files written
    (:meth:`note_outputs`). ``print(summary)`` gives a short report (percentiles, not the raw
    latencies); ``repr`` one line.

    ``first_batch_s`` / ``steady_s``: seconds from the start of ``run()`` to the first batch out
    of the sinks and to steady state (``vidflow.runtime.startup``; None while not reached);
    ``startup_s``: the phases of that start-up (files started, warm-up, sources started, first frame, first
    batch), seconds from the start of ``run()`` at the end of each.
    ``decode_pids`` / ``decode_cpu_s``: the decode processes and their CPU seconds (filled by
    ``Pipeline.snapshot()``). ``loop_s``: seconds the loop waited, cumulative, no device sync
    (filled by ``snapshot()`` and at the end of the run; ``runtime.overlap.LoopWaits``)."""

    sources: dict[int | str, SourceStats] = field(default_factory=dict)
    batches: int = 0
    started: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))
    first_batch_s: float | None = None
    steady_s: float | None = None
    startup_s: dict[str, float] = field(default_factory=dict)
    decode_pids: list[int] = field(default_factory=list)
    decode_cpu_s: float = 0.0
    loop_s: dict[str, float] = field(default_factory=dict)
    classes: dict[int | str, Counter] = field(default_factory=dict)
    tracks: dict[int | str, set] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def copy(self) -> RunSummary:
        """A copy that shares nothing mutable with this one (``Pipeline.snapshot()`` takes it
        under the pipeline's lock): every :class:`SourceStats` and the latencies are copied."""
        return dataclasses.replace(self, sources={sid: dataclasses.replace(st) for sid, st in self.sources.items()},
                                   latencies_ms=deque(self.latencies_ms, maxlen=self.latencies_ms.maxlen),
                                   decode_pids=list(self.decode_pids), startup_s=dict(self.startup_s),
                                   loop_s=dict(self.loop_s),
                                   classes={sid: Counter(c) for sid, c in self.classes.items()},
                                   tracks={sid: set(t) for sid, t in self.tracks.items()}, outputs=list(self.outputs))

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

    def latency_summary(self) -> dict[str, float]:
        """``{"p50", "p95", "p99", "max"}`` frame latency in ms (empty when none was measured)."""
        if not self.latencies_ms:
            return {}
        xs = sorted(self.latencies_ms)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
        return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": xs[-1]}

    @staticmethod
    def batch_counts(batch: Any, host: Any = None) -> tuple[list, Any, Any, Any] | None:
        """A batch's ``(source ids per frame, frame_idx, class_id, object_id)`` on the host, for
        :meth:`note_batch`; None without objects. Read from ``host`` (the batch's
        ``sinks.hostcopy.host_columns``, already copied for the sinks) when given, else one small
        stacked copy (``hostcopy.stack_to_host``). Taken outside any lock."""
        objs = batch.objects
        if objs is None or not len(objs):
            return None
        sids = [f.source_id for f in batch.frames]
        if host is not None:
            return sids, host.frame_idx, host.columns["class-id"], host.columns["object-id"]
        from .sinks.hostcopy import stack_to_host

        fi, ci, oi = stack_to_host([objs.frame_idx, objs.class_id, objs.object_id])
        return sids, fi, ci, oi

    def note_batch(self, batch: Any, counts: tuple[list, Any, Any, Any] | None = None) -> None:
        """Count a delivered batch's objects per class name and its track ids, per source
        (``counts``: :meth:`batch_counts`, else taken here)."""
        got = counts if counts is not None else self.batch_counts(batch)
        if got is None:
            return
        import numpy as np

        sids, fi, ci, oi = got
        names = batch.labels.get("objects", ())
        lo = min(int(ci.min()), 0)                 # class ids may be -1 (unknown)
        width = int(ci.max()) - lo + 1
        # (frame, class) pairs counted at once; then a few (frame, class) rows of Python
        pairs, n = np.unique(fi * width + (ci - lo), return_counts=True)
        for p, c in zip(pairs.tolist(), n.tolist()):
            f, k = divmod(p, width)
            k += lo
            self.classes.setdefault(sids[f], Counter())[names[k] if 0 <= k < len(names) else str(k)] += c
        tracked = oi >= 0                                     # track ids: one set update per frame
        order = np.argsort(fi[tracked], kind="stable")
        f_t, o_t = fi[tracked][order], oi[tracked][order]
        frames, starts = np.unique(f_t, return_index=True)
        for f, ids in zip(frames.tolist(), np.split(o_t, starts[1:])):
            self.tracks.setdefault(sids[f], set()).update(ids.tolist())

    def note_outputs(self, sinks: Iterable[Any]) -> None:
        """Remember where the sinks write: each sink's ``path`` / ``uri`` (credentials removed)."""
        from .errors import redact_uri

        for s in sinks:
            where = getattr(s, "path", None) or getattr(s, "uri", None)
            if where is not None and str(where) not in self.outputs:
                self.outputs.append(redact_uri(str(where)))

    def __repr__(self) -> str:
        lat = self.latency_summary()
        lat_s = ", ".join(f"{k}={v:.1f}" for k, v in lat.items() if k != "max")
        return (f"RunSummary(frames={self.frames}, sources={len(self.sources)}, batches={self.batches}, "
                f"wall_s={self.wall_s:.2f}, fps={self.fps:.1f}, latency_ms={{{lat_s}}}, "
                f"objects={sum(sum(c.values()) for c in self.classes.values())}, "
                f"tracks={sum(len(t) for t in self.tracks.values())}, outputs={self.outputs}"
                f"{', interrupted' if self.interrupted else ''})")

    def __str__(self) -> str:
        lines = [f"{self.frames} frames from {len(self.sources)} source(s) in {self.wall_s:.1f} s "
                 f"({self.fps:.1f} fps, {self.batches} batches)" + (", interrupted" if self.interrupted else "")]
        lat = self.latency_summary()
        if lat:
            lines.append("latency ms: " + ", ".join(f"{k} {v:.0f}" for k, v in lat.items())
                         + f" (last {len(self.latencies_ms)} frames)")
        for sid, st in self.sources.items():
            cls = self.classes.get(sid, Counter())
            objs = sum(cls.values())
            top = ", ".join(f"{k} {v}" for k, v in cls.most_common(6)) + (", ..." if len(cls) > 6 else "")
            line = (f"  {sid}: {st.state}, {st.frames} frames, {st.fps:.1f} fps, {objs} objects"
                    + (f" ({top})" if top else "") + f", {len(self.tracks.get(sid, ()))} tracks")
            if st.dropped or st.errors or st.reconnects:
                line += f", dropped {st.dropped}, errors {st.errors}, reconnects {st.reconnects}"
            if st.uri:
                line += f"  [{st.uri}]"
            if st.error is not None:
                line += f"  error: {st.error}"
            lines.append(line)
        if self.outputs:
            lines.append("outputs: " + ", ".join(self.outputs))
        return "\n".join(lines)

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
        if self.first_batch_s is not None:
            steady = f"{self.steady_s:.2f} s" if self.steady_s is not None else "not reached"
            phases = "".join(f", {k.replace('_', ' ')} {v:.2f} s" for k, v in self.startup_s.items()
                             if k != "first_batch")
            lines.append(f"start-up: first batch {self.first_batch_s:.2f} s, steady state {steady} (after run()"
                         f"{phases})")
        if "tail_full" in self.loop_s:       # overlap: which half waited for the other
            w = self.loop_s
            lines.append(f"loop: waited {w['collect']:.2f} s for frames; the main thread {w['tail_full']:.2f} s "
                         f"for the tail, the tail {w['tail_idle']:.2f} s for the main thread")
        for sid, cls in self.classes.items():
            lines.append(f"objects {sid}: " + ", ".join(f"{k} {v}" for k, v in cls.most_common())
                         + f"; {len(self.tracks.get(sid, ()))} tracks")
        if self.outputs:
            lines.append("outputs: " + ", ".join(self.outputs))
        return "\n".join(lines)
