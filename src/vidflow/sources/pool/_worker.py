"""The decode process: one runner thread per source, its ring slots, and the process's main loop.

Started by ``client._Worker`` as ``python -c BOOT SYS_PATH FD DEVICE SLOTS LEVEL`` (see
``client.py``); ``main`` reads :mod:`._wire` messages from the socket ``FD`` and answers with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import queue
import signal
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import torch

from ...batch import FrameInfo
from ...errors import SourceError, as_source_error
from ._ring import new_ring, unlink_quietly
from ._wire import (
    STATS_EVERY,
    CloseMsg,
    EndMsg,
    FrameMsg,
    FreeMsg,
    OpenMsg,
    RingMsg,
    ShmRing,
    StatsMsg,
    StopMsg,
    attrs_of,
    counters_of,
)

__all__ = ["main"]

log = logging.getLogger(__name__)


class _Runner:
    """One source in a worker process: its thread, its ring and its free slots."""

    def __init__(self, sid: Any, source: Any, device: torch.device, slots: int, out: queue.SimpleQueue) -> None:
        self.sid, self.source, self.device, self.slots, self.out = sid, source, device, slots, out
        self.cond = threading.Condition()
        self.free: deque[int] = deque()
        self.gen = 0
        self.sent = 0                     # frames handed to the pipeline
        self.ring: torch.Tensor | None = None
        self._files: list[str] = []      # CPU ring files made; the pipeline unlinks each once mapped
        self._direct: dict[int, tuple[int, int]] = {}     # data_ptr -> (gen, slot) written in place
        self._state: Any = None                            # the source's state last reported
        if self.device.type == "cuda" and hasattr(source, "frame_alloc"):
            source.frame_alloc = self._alloc
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"vidflow-decode-{sid}", daemon=True)

    def give_back(self, gen: int, slot: int) -> None:
        with self.cond:
            if gen == self.gen:
                self.free.append(slot)
                self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001 - closing one source must not stop the others
            log.warning("source %s: close failed: %s: %s", self.sid, type(e).__name__, e)

    def stats(self, *, ended: bool = False, failed: bool = False) -> StatsMsg | None:
        c = counters_of(self.source, decoded=self.sent, ended=ended, failed=failed)
        return None if c is None else StatsMsg(self.sid, c, attrs_of(self.source))

    def _new_ring(self, shape1: tuple) -> torch.Tensor:
        name = f"vidflow-{os.getpid()}-{id(self):x}-{self.gen + 1}"
        self.ring, payload = ring, payload = new_ring((self.slots, *shape1), self.device, name)
        if isinstance(payload, ShmRing):   # not unlinked here: the pipeline may not have mapped it yet
            self._files.append(payload.path)
        with self.cond:
            self.gen += 1
            self.free = deque(range(self.slots))
        self.out.put(RingMsg(self.sid, self.gen, payload))
        return ring

    def _ring_for(self, shape: tuple) -> torch.Tensor:
        """The ring, a new one when the frame size changed (the first frame: the first ring)."""
        if self.ring is None or tuple(self.ring.shape[1:]) != tuple(shape):
            return self._new_ring(tuple(shape))
        return self.ring

    def _alloc(self, shape: tuple) -> torch.Tensor | None:
        """The source's decoder writes its next picture straight into a free ring slot (called on
        this runner's thread, before the frame is yielded); None when closed."""
        ring = self._ring_for(tuple(shape))
        slot = self._slot()
        if slot is None:
            return None
        view = ring[slot]
        self._direct[view.data_ptr()] = (self.gen, slot)
        return view

    def forget_files(self) -> None:
        """At the end: unlink the ring files the pipeline did not (it unlinks each once mapped)."""
        for path in self._files:
            unlink_quietly(path)
        self._files = []

    def _slot(self) -> int | None:
        with self.cond:
            while not self.free and not self.closed:
                self.cond.wait(0.5)
            return None if self.closed else self.free.popleft()

    def _run(self) -> None:
        err: SourceError | None = None
        side: Any = contextlib.nullcontext()
        stream = None
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            stream = torch.cuda.Stream(self.device)
            side = torch.cuda.stream(stream)
        try:
            with side:
                for f in self.source.frames(device=self.device, source_id=self.sid):
                    placed = self._direct.pop(f.data.data_ptr(), None) if self._direct else None
                    if placed is not None:               # decoded into its slot, stream synced
                        gen, slot = placed
                    else:
                        ring = self._ring_for(tuple(f.data.shape))
                        free = self._slot()
                        if free is None:
                            break
                        gen, slot = self.gen, free
                        ring[slot].copy_(f.data)
                        if stream is not None:
                            stream.synchronize()
                    i = f.info
                    info = FrameInfo(self.sid, i.frame_num, i.pts, i.ntp_ns, i.width, i.height)
                    self.out.put(FrameMsg(self.sid, gen, slot, info, f.format, f.matrix, f.full_range))
                    self.sent += 1
                    state = getattr(self.source, "state", None)
                    if state != self._state:         # a live source's state change: tell at once
                        self._state = state
                        msg = self.stats()
                        if msg is not None:
                            self.out.put(msg)
                    if self.closed:
                        break
        except BaseException as e:  # noqa: BLE001 - the source fails alone; the pipeline reports it
            if not self.closed:
                err = as_source_error(e, source_id=self.sid, uri=getattr(self.source, "uri", None))
        finally:
            last = self.stats(ended=err is None, failed=err is not None)
            self.out.put(EndMsg(self.sid, last, err))


def _blocking_sync(index: int) -> None:
    """Make this process's CUDA waits sleep instead of spin (``CU_CTX_SCHED_BLOCKING_SYNC`` on the
    primary context, before torch creates it): a worker waits for NVDEC and its copies once or
    twice per frame, and 16 spinning decoder threads would burn a core each for nothing."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        dev = ctypes.c_int()
        if lib.cuInit(0) == 0 and lib.cuDeviceGet(ctypes.byref(dev), index) == 0:
            lib.cuDevicePrimaryCtxSetFlags(dev, 0x04)
    except (OSError, AttributeError) as e:     # no driver library: torch reports it next
        log.debug("CU_CTX_SCHED_BLOCKING_SYNC not set: %s", e)


def main(fd: int, device: str, slots: int, level: int) -> None:
    """The decode process: run sources until told to stop or the pipeline goes away."""
    import torch.multiprocessing  # noqa: F401 - registers torch's reductions (CUDA IPC) with the pickler

    faulthandler.enable(all_threads=True)     # a crash in NVDEC or FFmpeg shows its Python stacks
    # Ctrl-C reaches the whole process group: the pipeline stops its workers itself (messages, then kill)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("vidflow").setLevel(level)          # the pipeline's level for vidflow only
    conn = Connection(fd)
    dev = torch.device(device)
    if dev.type == "cuda":
        _blocking_sync(dev.index or 0)
        torch.cuda.set_device(dev)
        torch.cuda.init()
    torch.set_num_threads(1)
    out: queue.SimpleQueue = queue.SimpleQueue()
    runners: dict[Any, _Runner] = {}
    done = threading.Event()

    def send_loop() -> None:
        while True:
            item = out.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 256:
                try:
                    item = out.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    break
                batch.append(item)
            try:
                conn.send(batch)
            except (OSError, ValueError):
                os._exit(0)                      # the pipeline is gone
            if item is None:
                return

    def stats_loop() -> None:
        while not done.wait(STATS_EVERY):
            for r in list(runners.values()):
                if r.thread.is_alive():
                    msg = r.stats()
                    if msg is not None:
                        out.put(msg)

    tx = threading.Thread(target=send_loop, name="vidflow-pool-send", daemon=True)
    tx.start()
    threading.Thread(target=stats_loop, name="vidflow-pool-stats", daemon=True).start()
    try:
        while True:
            try:
                m = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(m, FreeMsg):
                for ref in m.slots:
                    r = runners.get(ref.sid)
                    if r is not None:
                        r.give_back(ref.gen, ref.slot)
            elif isinstance(m, OpenMsg):
                r = _Runner(m.sid, m.source, dev, slots, out)
                runners[m.sid] = r
                r.thread.start()
            elif isinstance(m, CloseMsg):
                r = runners.get(m.sid)
                if r is not None:
                    r.close()
            elif isinstance(m, StopMsg):
                break
            else:
                log.error("decode process: unknown message %r; stopping", type(m).__name__)
                break
    finally:
        for r in runners.values():
            r.close()
        for r in runners.values():
            r.thread.join(timeout=10)
        done.set()
        out.put(None)
        tx.join(timeout=10)
        for r in runners.values():
            r.forget_files()
