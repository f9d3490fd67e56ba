"""What ``vidflow bench --live`` reads off the pipeline: :class:`GlassClock`, the last sink, which
reads each frame's index from its barcode (:mod:`.live_serve`) and so knows when the camera sent
it (glass-to-result latency, frames delivered and lost per stream); and the CPU of a process
tree read from ``/proc`` (the pipeline's process and its decode processes, the cameras apart)."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import torch

__all__ = ["GlassClock", "StreamCount", "proc_table", "descendants", "tree_cpu_s", "host_busy_s", "quantile"]


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class StreamCount:
    """One stream's frames in the window: how many, the first and last absolute frame numbers
    (frame ``i`` of loop ``k`` is ``k * frames + i``): ``lost`` = the numbers never delivered."""

    __slots__ = ("seen", "first", "last")

    def __init__(self) -> None:
        self.seen, self.first, self.last = 0, -1, -1

    def add(self, n: int) -> None:
        self.seen += 1
        if self.first < 0:
            self.first = n
        self.last = max(self.last, n)

    @property
    def lost(self) -> int:
        return 0 if self.first < 0 else self.last - self.first + 1 - self.seen


class GlassClock:
    """A sink (the last one) timing every frame from the moment its camera sent it.

    ``epoch``, ``fps``, ``frames``: the cameras' shared clock and clip (``READY`` of
    :mod:`.live_serve`). Per frame: the barcode's cells are sampled from ``batch.images`` at the
    frame's ``region`` (one small device-to-host copy per batch), giving the clip frame ``i``;
    the send time is the latest ``epoch + k * D + i / fps`` not after the frame was decoded
    (``FrameInfo.ntp_ns``), and the latency runs to this sink's ``write``. Counts every frame
    (``ever``). The window counts by *send* time: :meth:`open` and :meth:`shut` mark its start
    and end, and every frame its cameras sent in between counts when it arrives, until
    :meth:`collect` (called a grace period after ``shut``) returns the latencies, a
    :class:`StreamCount` per source and ``decoded_ms`` (decoded -> this sink: the part of the
    latency after the decoder). So a backlog drained in the window is not counted as throughput,
    and frames still in flight at its end are not missed. ``last_sent[sid]``: the latest send
    time delivered (a stream's recovery)."""

    name = "glass"

    def __init__(self, *, epoch: float, fps: float, frames: int, source_height: int) -> None:
        from .live_serve import BITS, barcode_cells

        self.epoch, self.fps, self.frames = epoch, float(fps), int(frames)
        self.duration = self.frames / self.fps
        self.bits = BITS
        self.cx, self.cy = barcode_cells(source_height)
        self._weights: torch.Tensor | None = None
        self._lock = threading.Lock()
        self.measuring = False
        self.t_open, self.t_shut = math.inf, math.inf
        self.ever: dict[Any, int] = {}
        self.last_sent: dict[Any, float] = {}
        self.lat_ms: list[float] = []
        self.decoded_ms: list[float] = []      # from decoding (``ntp_ns``) to this sink
        self.streams: dict[Any, StreamCount] = {}
        self.unreadable = 0

    def open(self, at: float | None = None) -> None:
        """The window's start (``at``: a ``time.time()``, default now)."""
        with self._lock:
            self.lat_ms, self.decoded_ms, self.streams, self.unreadable = [], [], {}, 0
            self.t_open, self.t_shut, self.measuring = time.time() if at is None else at, math.inf, True

    def shut(self, at: float | None = None) -> None:
        """The window's end: frames sent from then on are not counted."""
        self.t_shut = time.time() if at is None else at

    def collect(self) -> tuple[list[float], dict[Any, StreamCount], int, float]:
        """Stop counting; ``(latencies ms, counts per source, unreadable frames, window s)``."""
        with self._lock:
            self.measuring = False
            return self.lat_ms, self.streams, self.unreadable, self.t_shut - self.t_open

    def read_indices(self, images: torch.Tensor, frames: tuple) -> list[int]:
        """The clip frame index in each image's barcode (``frames``: their ``FrameInfo``)."""
        b, _, h, w = images.shape
        bs, ys, xs = [], [], []
        for k, f in enumerate(frames):
            x0, y0, x1, y1 = f.region if f.region is not None else (0.0, 0.0, float(w), float(h))
            y = min(h - 1, int(y0 + self.cy * (y1 - y0)))
            for fx in self.cx:
                bs.append(k)
                ys.append(y)
                xs.append(min(w - 1, int(x0 + fx * (x1 - x0))))
        dev = images.device
        if self._weights is None or self._weights.device != dev:
            self._weights = torch.tensor([1 << (self.bits - 1 - j) for j in range(self.bits)], device=dev)
        where = torch.tensor([bs, ys, xs]).to(dev, non_blocking=True)     # one small upload
        px = images[where[0], :, where[1], where[2]]
        on = (px.float().mean(dim=1) > 127.5).view(b, self.bits).long()
        return (on * self._weights).sum(dim=1).tolist()          # the one copy to the host

    def write(self, batch: Any) -> None:
        if not batch.frames:
            return
        idx = self.read_indices(batch.images, batch.frames)
        now = time.time()
        with self._lock:
            for f, i in zip(batch.frames, idx):
                sid = f.source_id
                self.ever[sid] = self.ever.get(sid, 0) + 1
                if i >= self.frames:
                    if self.measuring:
                        self.unreadable += 1
                    continue
                t_ref = f.ntp_ns / 1e9 if f.ntp_ns else now
                k = math.floor((t_ref - self.epoch - i / self.fps) / self.duration + 1e-9)
                sent = self.epoch + k * self.duration + i / self.fps
                if sent > self.last_sent.get(sid, -1.0):
                    self.last_sent[sid] = sent
                if self.measuring and self.t_open <= sent < self.t_shut:
                    self.lat_ms.append((now - sent) * 1e3)
                    if f.ntp_ns:
                        self.decoded_ms.append(now * 1e3 - f.ntp_ns / 1e6)
                    self.streams.setdefault(sid, StreamCount()).add(k * self.frames + i)

    def close(self) -> None:
        pass


def proc_table() -> dict[int, tuple[int, float, float]]:
    """``{pid: (parent pid, CPU seconds user+system, RSS MB)}`` of every process (``/proc``)."""
    tck, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    out: dict[int, tuple[int, float, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            out[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tck, int(rest[21]) * page)
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(root: int, exclude: tuple[int, ...] = (), table: dict | None = None) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), without the subtrees of ``exclude``."""
    table = proc_table() if table is None else table
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        if p in exclude:
            continue
        out.append(p)
        todo += kids.get(p, [])
    return out


def host_busy_s() -> float:
    """CPU seconds the whole host has been busy (all cores, ``/proc/stat``: not idle, not iowait)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pids: list[int], table: dict | None = None) -> float:
    table = proc_table() if table is None else table
    return sum(table[p][1] for p in pids if p in table)
