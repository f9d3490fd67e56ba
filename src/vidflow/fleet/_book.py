"""The driver's bookkeeping: what it knows of each camera and worker, and the status it shows.

Pure data and small rules (no Ray): how a worker's status row updates a camera (progress,
acks, end, failure with backoff), what a loss does to a camera (resume point, gap), and the
aggregated status (``Fleet.status()``) with its printed form.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .spec import CameraSpec

__all__ = ["CameraState", "WorkerState", "format_status", "TERMINAL"]

#: driver-side camera states: pending (no room / not placed yet), starting (add sent), the
#: worker's own source states (running, connecting, reconnecting, stalled ...), backoff (failed,
#: retried at ``retry_at``), releasing (its worker still releases the camera's previous run
#: there: added again at ``retry_at``), and the terminal ones
TERMINAL = ("ended", "failed")


@dataclass
class CameraState:
    spec: CameraSpec
    worker: str | None = None
    state: str = "pending"
    incarnation: str | None = None      # the worker incarnation it was added to
    add_ref: Any = None                 # the pending add call
    failures: int = 0
    error: str | None = None
    retry_at: float = 0.0               # when a camera in backoff / releasing is added again
    busy_since: float = 0.0             # its worker still releases its previous run since then
    acked: int = -1                     # newest frame_num acknowledged by every sink
    acked_ns: int = 0
    frames: int = 0                     # frames written in its current run
    frames_total: int = 0               # ... in all its runs (duplicates after a move included)
    starts: int = 0
    live: bool = False
    fps: float = 0.0
    last_progress: float = 0.0          # driver wall time of the last increase of ``frames``
    running_since: float = 0.0
    lost: dict[str, Any] | None = None  # the open move after a loss: from, detected_at, last_progress
    moves: list[dict[str, Any]] = field(default_factory=list)
    last_worker: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    # -- where the next run starts ------------------------------------------------------------
    def resume_point(self, now: float) -> tuple[int, int]:
        """``(start, offset)`` for the next add: a file camera skips what the sinks acknowledged;
        a live camera's numbers jump past the frames it produced meanwhile (its gap)."""
        if self.acked < 0:
            return 0, 0
        if not self.live:
            return self.acked + 1, 0
        gap = max(0.0, now - self.acked_ns / 1e9) if self.acked_ns else 0.0
        return 0, self.acked + 1 + int(math.ceil(gap * self.fps))

    # -- updates ------------------------------------------------------------------------------
    def started(self, worker: str, incarnation: str | None, now: float) -> None:
        self.worker, self.last_worker, self.incarnation = worker, worker, incarnation
        self.state, self.frames, self.starts = "starting", 0, self.starts + 1
        self.running_since = now

    def seen(self, row: dict[str, Any], now: float, poll_s: float) -> None:
        """A status row of the worker the camera runs on."""
        frames = int(row["frames"])
        if frames > self.frames:
            dt = max(now - self.last_progress, 1e-3) if self.last_progress else poll_s
            rate = (frames - self.frames) / dt
            self.fps = rate if self.fps == 0 else 0.7 * self.fps + 0.3 * rate
            self.frames_total += frames - self.frames
            self.last_progress = now
            if self.lost is not None:
                self._resumed(now)
        self.frames = frames
        self.live = bool(row.get("live", self.live))
        if int(row.get("acked", -1)) > self.acked:
            self.acked, self.acked_ns = int(row["acked"]), int(row.get("acked_ns", 0))
        self.state = str(row["state"])
        if self.state == "pending":
            self.state = "starting"
        if self.failures and now - self.running_since > 60 and self.state == "running":
            self.failures, self.error = 0, None        # healthy for a minute: the count starts again

    def lose(self, reason: str, now: float) -> None:
        """Its worker died or restarted: it will be placed again (a move)."""
        if self.terminal:
            self.worker = None
            return
        if self.lost is None:
            self.lost = {"from": self.worker, "reason": reason, "detected_at": now,
                         "last_progress": self.last_progress or now, "acked": self.acked}
        self.worker, self.incarnation, self.add_ref = None, None, None
        self.state = "pending"

    def _resumed(self, now: float) -> None:
        assert self.lost is not None
        m = dict(self.lost, to=self.worker, resumed_at=now,
                 resume_s=round(now - self.lost["detected_at"], 3),
                 gap_s=round(now - self.lost["last_progress"], 3))
        if self.live:
            m["gap_frames"] = int(math.ceil(m["gap_s"] * self.fps))
        self.moves.append(m)
        self.lost = None

    def fail(self, error: str, now: float, *, max_failures: int, backoff_s: float, max_backoff_s: float) -> None:
        """The camera failed on its worker (or could not be added)."""
        self.failures += 1
        self.error = error
        if self.failures >= max_failures:
            self.state, self.retry_at = "failed", 0.0
        else:
            self.state = "backoff"
            self.retry_at = now + min(max_backoff_s, backoff_s * 2 ** (self.failures - 1))
        self.incarnation, self.add_ref = None, None

    def row(self) -> dict[str, Any]:
        out = {"id": self.spec.id, "worker": self.worker or self.last_worker, "state": self.state,
               "frames": self.frames_total, "fps": round(self.fps, 1), "acked": self.acked, "live": self.live,
               "failures": self.failures, "error": self.error, "starts": self.starts, "moves": list(self.moves)}
        if self.state == "backoff":
            out["retry_in_s"] = round(max(0.0, self.retry_at - time.time()), 1)
        if self.live and self.moves:
            out["gap_s"] = round(sum(m["gap_s"] for m in self.moves), 3)
            out["gap_frames"] = sum(m.get("gap_frames", 0) for m in self.moves)
        return out


@dataclass
class WorkerState:
    id: str
    handle: Any
    capacity: float
    state: str = "starting"            # starting | running | lost | dead
    incarnation: str | None = None
    restarts: int = 0                  # restarts seen by the driver
    pid: int | None = None
    host: str = ""
    gpus: list[str] = field(default_factory=list)
    device: str = ""
    http: str | None = None            # its metrics / probes endpoint (the template's ``http``)
    error: str | None = None
    status_ref: Any = None
    status_sent: float = 0.0
    last_ok: float = 0.0
    killed: str | None = None          # the incarnation the driver killed (hung or failed)
    startup: dict[str, float] = field(default_factory=dict)   # its pipeline's start-up phases so far

    @property
    def alive(self) -> bool:
        return self.state == "running"

    def row(self, load: float, cameras: int) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "pid": self.pid, "host": self.host, "gpus": self.gpus,
                "device": self.device, "http": self.http, "incarnation": self.incarnation, "restarts": self.restarts,
                "cameras": cameras, "load": load, "capacity": self.capacity, "error": self.error,
                "ready": "sources_started" in self.startup}


def format_status(status: dict[str, Any]) -> str:
    """``Fleet.status()`` as text: the workers, then every camera with its worker and state."""
    lines = [f"fleet {status.get('name', '')}: {len(status['workers'])} workers, {len(status['cameras'])} cameras, "
             f"{status.get('fps', 0.0):.1f} fps"]
    for w in status["workers"]:
        gpus = ",".join(w["gpus"]) or "-"
        lines.append(f"  worker {w['id']:<4} {w['state']:<8} pid {w['pid'] or '-':<7} host {w['host'] or '-'} "
                     f"gpus {gpus} load {w['load']:g}/{w['capacity']:g} restarts {w['restarts']}"
                     + (f" {w['http']}" if w.get("http") else "")
                     + (f"  error: {w['error']}" if w["error"] else ""))
    rows = [("camera", "worker", "state", "frames", "fps", "acked", "moves", "note")]
    for c in status["cameras"]:
        note = c["error"] or ""
        if c.get("gap_s") is not None:
            note = f"gap {c['gap_s']:.1f} s ~{c['gap_frames']} frames " + note
        rows.append((str(c["id"]), str(c["worker"] or "-"), c["state"], str(c["frames"]), f"{c['fps']:.1f}",
                     str(c["acked"]), str(len(c["moves"])), note))
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r[:7], widths)) + "  " + r[7] for r in rows]
    return "\n".join(lines)
