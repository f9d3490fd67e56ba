"""The muxer: frames of many sources become batches on the pipeline device.

Each source thread puts decoded frames into its own bounded ``SourceQueue``. ``Muxer.collect``
takes frames round-robin (one per source per round, the starting source rotating each batch, so
a busy source cannot starve a quiet one) and returns a batch's worth when it is full or
``max_wait_ms`` after the arrival of its first frame; a silent source never holds the others, and
a source whose queue is drained after its end of stream leaves. A live source that is not
delivering (no frame for ``live_idle_frames`` of its frame intervals: reconnecting, stalled, not
connected yet) is not waited for at all: the batch is due once the sources still delivering have
filled their share of it, so a down camera does not add ``max_wait_ms`` to every batch of the
others; its next frame makes it waited for again. ``Muxer.assemble`` converts each
frame to RGB and scales it into a pooled, reused ``[B,3,H,W]`` uint8 tensor on the device (one
kernel for all the NV12 frames already there, with Triton).
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .batch import Batch
from .sources.base import SourceFrame

__all__ = ["Muxer", "SourceQueue", "Collected", "DEFAULT_INTERVAL"]

#: a live queue's frame interval until two frames' pts tell it (seconds: 30 fps)
DEFAULT_INTERVAL = 1 / 30


class SourceQueue:
    """A bounded frame queue of one source.

    File sources (``live=False``) block in :meth:`put` while the queue is full (no frame lost);
    live sources drop the oldest queued frame instead and count it in ``dropped``.
    All queues of a pipeline share one condition variable, so the muxer wakes on any arrival.
    """

    def __init__(self, source_id: int | str, *, maxsize: int = 8, live: bool = False,
                 cond: threading.Condition | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError(f"queue maxsize must be >= 1, got {maxsize}")
        self.source_id = source_id
        self.maxsize = maxsize
        self.live = live
        self.cond = cond or threading.Condition()
        # producers wait for room on their own condition (same lock), so taking frames from one
        # queue wakes one producer, not all of them (64 cameras = 64 threads fighting for the GIL)
        self.space = threading.Condition(self.cond._lock)  # type: ignore[attr-defined]  # noqa: SLF001 - share the lock
        self.clock = clock
        self.items: deque[tuple[float, SourceFrame]] = deque()
        self.dropped = 0
        self.last_arrival: float | None = None   # clock() of the last put (None: nothing yet)
        self.interval = DEFAULT_INTERVAL          # the stream's frame interval, from its pts
        self._last_pts: float | None = None
        self.eos = False          # the producer has finished (or failed, or was removed)
        self.closed = False       # nobody will consume: put() returns False at once

    def put(self, frame: SourceFrame, timeout: float | None = None, *, block: bool = True) -> bool:
        """Queue ``frame``. Returns False when the queue was closed (stop producing).

        ``block=False`` (frames of a decode process, whose ring already bounds them): a file
        source's frame is queued even when the queue is full, never waited for."""
        with self.cond:
            if not self.live and block:
                end = None if timeout is None else self.clock() + timeout
                while len(self.items) >= self.maxsize and not self.closed:
                    left = None if end is None else end - self.clock()
                    if left is not None and left <= 0:
                        return not self.closed
                    self.space.wait(0.5 if left is None else min(left, 0.5))
            if self.closed:
                return False
            if self.live and len(self.items) >= self.maxsize:
                _, old = self.items.popleft()
                self.dropped += 1
                if old.release is not None:
                    old.release()
            now = self.clock()
            self._note_arrival(now, frame)
            self.items.append((now, frame))
            if len(self.items) == 1:
                # the muxer drains every queue it looks at, so only a queue going from empty to
                # non-empty is news to it
                self.cond.notify_all()
            return True

    def _note_arrival(self, now: float, frame: SourceFrame) -> None:
        """The arrival time, and the frame interval from successive pts (the stream's own clock:
        a burst after a reconnect does not shorten it; a gap over 1 s is not an interval)."""
        self.last_arrival = now
        pts = getattr(getattr(frame, "info", None), "pts", None)
        if isinstance(pts, (int, float)):
            if self._last_pts is not None and 0.0 < pts - self._last_pts <= 1.0:
                self.interval = float(pts - self._last_pts)
            self._last_pts = float(pts)

    def idle_at(self, frames: float) -> float:
        """When this queue stops being waited for: a live queue ``frames`` frame intervals after
        its last arrival (``-inf`` before its first frame); a file queue never (``inf``)."""
        if not self.live:
            return math.inf
        if self.last_arrival is None:
            return -math.inf
        return self.last_arrival + frames * self.interval

    def finish(self) -> None:
        """Mark the end of stream (after the last put)."""
        with self.cond:
            self.eos = True
            self.cond.notify_all()

    def take(self) -> tuple[float, SourceFrame]:
        """Pop the oldest frame (caller holds ``cond``) and wake this queue's producer."""
        item = self.items.popleft()
        self.space.notify()
        return item

    def close(self) -> None:
        """Stop the producer and discard what is queued."""
        with self.cond:
            self.closed = True
            self.eos = True
            for _, f in self.items:
                if f.release is not None:
                    f.release()
            self.items.clear()
            self.cond.notify_all()
            self.space.notify_all()

    @property
    def done(self) -> bool:
        return self.eos and not self.items

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Collected:
    """What :meth:`Muxer.collect` returns: the frames of one batch (possibly none) and the
    sources that ended since the last call (their last frame is in this or an earlier batch)."""

    frames: list[SourceFrame]
    ended: list[int | str]
    arrivals: list[float]


class Muxer:
    """Batches frames of many sources.

    Args:
        batch_size: frames per batch (a batch may be smaller at a timeout or at the end).
        max_wait_ms: a batch goes out at most this long after its first frame arrived.
        size: ``(width, height)`` of the batch images; ``None`` takes the first frame's size.
        keep_aspect: scale each frame to fit, centred, padding with black (``FrameInfo.region``
            records where it lies) instead of stretching it to ``size`` (the default, like
            DeepStream's nvstreammux ``enable-padding``; ``False`` stretches).
        pool: batch buffers kept for reuse. A buffer is reused only once no batch view of it is
            alive, so holding batches never sees them overwritten; more are allocated if needed.
        live_idle_frames: a live source with no frame for this many of its frame intervals (from
            its pts; 30 fps until known), or none yet, is not delivering (reconnecting, stalled,
            connecting) and is not waited for: a batch is due at ``batch_size`` x delivering /
            all sources (rounded up) frames instead of ``batch_size``, and a batch waiting for a
            source is let go as soon as that source turns idle. Its next frame makes it waited for
            again. ``None``: wait for every source (up to ``max_wait_ms``), as before.
        clock: monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, batch_size: int = 8, max_wait_ms: float = 30.0, size: Sequence[int] | None = None, *,
                 keep_aspect: bool = True, pool: int = 4, live_idle_frames: float | None = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if float(max_wait_ms) < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if size is not None:
            if len(size) != 2 or int(size[0]) < 2 or int(size[1]) < 2:
                raise ValueError(f"size must be [width, height] with both >= 2, got {list(size)}")
            size = (int(size[0]), int(size[1]))
        if live_idle_frames is not None and (isinstance(live_idle_frames, bool)
                                             or not isinstance(live_idle_frames, (int, float))
                                             or not live_idle_frames > 0):
            raise ValueError(f"live_idle_frames must be None or > 0, got {live_idle_frames!r}")
        self.live_idle_frames = None if live_idle_frames is None else float(live_idle_frames)
        self.batch_size = int(batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.size: tuple[int, int] | None = size
        self.keep_aspect = bool(keep_aspect)
        self.pool_size = max(1, int(pool))
        self.clock = clock
        self._rr = 0
        self._releaser: threading.Thread | None = None
        self._pool: list[list] = []      # [buffer [batch_size,3,H,W], weakref to the batch view or None]

    def __repr__(self) -> str:
        return (f"Muxer(batch_size={self.batch_size}, max_wait_ms={self.max_wait * 1000:g}, size={self.size}, "
                f"keep_aspect={self.keep_aspect}, live_idle_frames={self.live_idle_frames})")

    # -- selecting frames --------------------------------------------------------------------
    def collect(self, queues: Callable[[], Sequence[SourceQueue]], cond: threading.Condition, *,
                stop: threading.Event | None = None,
                wait: Callable[[threading.Condition, float], None] | None = None) -> Collected | None:
        """Block until a batch is due; ``None`` once every source has ended and nothing is left.

        ``queues`` returns the current queues (sources may be added or removed meanwhile).
        ``wait(cond, seconds)`` waits on the held condition (tests pass one that moves a fake
        clock); ``stop`` ends the wait early (returns what was gathered, or None).
        """
        pause: Callable[[threading.Condition, float], Any] = wait or (lambda c, t: c.wait(t))
        frames: list[SourceFrame] = []
        arrivals: list[float] = []
        ended: list[int | str] = []
        with cond:
            while True:
                qs = list(queues())
                if qs:
                    start = self._rr % len(qs)
                    order = qs[start:] + qs[:start]
                    took = True
                    while took and len(frames) < self.batch_size:
                        took = False
                        for q in order:
                            if q.items and len(frames) < self.batch_size:
                                t, f = q.take()
                                frames.append(f)
                                arrivals.append(t)
                                took = True
                for q in qs:
                    if q.done and q.source_id not in ended:
                        ended.append(q.source_id)
                all_done = all(q.done for q in qs)
                if len(frames) >= self.batch_size or (all_done and (frames or ended)):
                    break
                if ended and not frames:
                    # a source ended (or was removed) while the others are quiet: say so now, so
                    # that it is released (its id free again, its stages reset) without waiting
                    # for the next frame of another source, which may never come
                    break
                if all_done or (stop is not None and stop.is_set()):
                    if frames or ended:
                        break
                    return None
                now = self.clock()
                if frames:
                    due, changes = self._due(qs, now)
                    if len(frames) >= due:
                        break
                    left = min(arrivals[0] + self.max_wait, changes) - now
                    if left <= 0:
                        break
                    pause(cond, left)
                else:
                    pause(cond, 0.05)
        self._rr += 1
        return Collected(frames, ended, arrivals)

    def _due(self, qs: Sequence[SourceQueue], now: float) -> tuple[int, float]:
        """Frames that make the batch due now, and when that may next change (a delivering live
        source turning idle), per ``live_idle_frames``."""
        if self.live_idle_frames is None or not qs:
            return self.batch_size, math.inf
        idle, changes = 0, math.inf
        for q in qs:
            at = q.idle_at(self.live_idle_frames)
            if at <= now:
                idle += 1
            else:
                changes = min(changes, at)
        if not idle:
            return self.batch_size, changes
        return max(1, math.ceil(self.batch_size * (len(qs) - idle) / len(qs))), changes

    # -- building the batch ------------------------------------------------------------------
    def warmup(self, device: torch.device) -> None:
        """Compile the conversion kernel now (``Pipeline`` calls this on CUDA before the sources
        start), so the first batch does not wait for Triton: one NV12 frame converted into a
        throw-away batch of ``size`` (64x64 when the size comes from the first frame)."""
        device = torch.device(device)
        if device.type != "cuda":
            return
        from .batch import FrameInfo
        from .ops.color import convert_batch_into
        w, h = self.size or (64, 64)
        nv12 = torch.zeros((h + (h & 1)) * 3 // 2, w, dtype=torch.uint8, device=device)
        frame = SourceFrame(FrameInfo(source_id=-1, frame_num=0, pts=0.0, ntp_ns=0, width=w, height=h), nv12, "nv12")
        convert_batch_into([frame], torch.empty((1, 3, h, w), dtype=torch.uint8, device=device))
        torch.cuda.current_stream(device).synchronize()

    def _buffer(self, h: int, w: int, device: torch.device) -> list:
        """A free pooled entry ``[buffer, weakref-to-last-batch-view]`` of the right size."""
        free = [e for e in self._pool if e[1] is None or e[1]() is None]
        for e in free:
            if e[0].shape[2:] == (h, w) and e[0].device == device:
                return e
        # none fits: drop free buffers beyond the pool size (their memory is released), add one
        for e in free[: max(0, len(self._pool) + 1 - self.pool_size)]:
            self._pool.remove(e)
        entry = [torch.empty((self.batch_size, 3, h, w), dtype=torch.uint8, device=device), None]
        self._pool.append(entry)
        return entry

    def _region(self, w: int, h: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
        if not self.keep_aspect:
            return 0, 0, out_w, out_h
        s = min(out_w / w, out_h / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        x0, y0 = (out_w - nw) // 2, (out_h - nh) // 2
        return x0, y0, x0 + nw, y0 + nh

    def assemble(self, frames: Sequence[SourceFrame], device: torch.device) -> Batch:
        """Convert and scale ``frames`` into a pooled batch tensor on ``device``."""
        from .ops.color import convert_batch_into

        if not frames:
            raise ValueError("Muxer.assemble: expected at least one frame")
        if self.size is None:
            self.size = (frames[0].info.width, frames[0].info.height)
        out_w, out_h = self.size
        entry = self._buffer(out_h, out_w, device)
        images = entry[0][: len(frames)]
        regions = [self._region(f.info.width, f.info.height, out_w, out_h) for f in frames]
        padded = [i for i, (x0, y0, x1, y1) in enumerate(regions) if (x1 - x0, y1 - y0) != (out_w, out_h)]
        if len(padded) == len(frames):
            images.zero_()
        else:
            for i in padded:
                images[i].zero_()
        # NV12 frames on the device: one kernel for the whole batch; others move themselves
        convert_batch_into(frames, images, regions)
        infos = [f.info.replace(region=(float(x0), float(y0), float(x1), float(y1)))
                 for f, (x0, y0, x1, y1) in zip(frames, regions)]
        entry[1] = weakref.ref(images)
        self._give_back([f.release for f in frames if f.release is not None], images.device)
        return Batch(images=images, frames=tuple(infos))

    def _give_back(self, releases: list, device: torch.device) -> None:
        """Hand borrowed frame buffers (decode-process ring slots) back once the conversion that
        reads them has run: at once on the CPU; on CUDA when an event recorded after the
        conversion kernels completes, waited for on a thread of its own (never the main one)."""
        if not releases:
            return
        if device.type != "cuda":
            for r in releases:
                r()
            return
        ev = torch.cuda.Event(blocking=True)     # the waiting thread sleeps instead of spinning
        ev.record()
        if self._releaser is None:
            self._releases: queue.SimpleQueue = queue.SimpleQueue()
            self._releaser = threading.Thread(target=self._release_loop, args=(self._releases,),
                                              name="vidflow-mux-release", daemon=True)
            self._releaser.start()
        self._releases.put((ev, releases))

    @staticmethod
    def _release_loop(q: queue.SimpleQueue) -> None:
        while True:
            ev, releases = q.get()
            ev.synchronize()
            for r in releases:
                r()

