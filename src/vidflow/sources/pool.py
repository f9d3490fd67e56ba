"""Decode processes: sources decode in worker processes, frames reach the pipeline zero-copy.

One Python process decoding 64 cameras in 64 threads spends much of its time fighting for the
GIL: each decoded frame costs some Python (demux, bitstream filter, decoder call, a copy, the
queue), and the pipeline's main thread must win the GIL back after every torch call. With
``Pipeline(decode_processes=K)`` the sources that can be moved (``poolable = True``: ``FileSource``,
``UriSource``/``RtspSource``, the test ``FakeSource``) run in K worker processes instead, so decoding has K GILs of its own and
the main process keeps its GIL for the stages.

How a frame travels::

    worker process (one thread per source)                 pipeline process
    source.frames() -> frame ------- copy into ------> ring[slot]  (same memory: CUDA IPC or
                                     free slot                       POSIX shared memory)
                    -- ("frame", sid, slot, info) over a socket -->  SourceFrame(ring[slot], release=...)
                                                                     -> SourceQueue -> muxer
                    <-------------- ("free", slot) ---------------  after the muxer's conversion
                                                                     kernel finished (CUDA event)

Each source has a ring of ``queue_size + 2`` frame slots allocated by its worker on the pipeline
device (NV12 ``[H*3//2, W]`` from NVDEC, RGB ``[3, H, W]`` from FFmpeg), shared with the pipeline
once (CUDA: ``torch.multiprocessing``'s IPC handles; CPU: a memory-mapped file in ``/dev/shm``), and
re-sent only when the frame size changes. Per frame only a small tuple crosses the socket; no
pixel is copied between processes. A worker waits for a free slot before it decodes on, so a file
source loses no frame and memory stays bounded; a live queue that drops its oldest frame gives the
slot back at once.

Failures: a source's error (``SourceError``, pickled whole) ends that source alone, as in a
thread. A worker process that dies (killed, crashed driver) fails the sources it carried, each
with a ``DecodeError`` naming the process and its exit code; the other workers go on.

Workers are started with ``python -m vidflow.sources.pool`` (not ``multiprocessing``'s spawn),
so a user's script is never re-imported and needs no ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch

from ..batch import FrameInfo
from ..errors import DecodeError, SourceError
from .base import SourceFrame

__all__ = ["DecodePool", "poolable"]

log = logging.getLogger("vidflow.pool")
_STATS_EVERY = 1.0          # s between a worker's counter updates (decode errors, live state)


def poolable(source: Any) -> bool:
    """Whether ``source`` can run in a decode process (it says ``poolable = True``)."""
    return bool(getattr(source, "poolable", False))


def _source_stats(src: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fn = getattr(src, "stats", None)
    if callable(fn):
        with contextlib.suppress(Exception):
            out.update(fn())
    for k in ("state", "backend"):
        v = getattr(src, k, None)
        if isinstance(v, str):
            out[k] = v
    return out


# =========================================================================== pipeline side
@dataclass
class _Route:
    """Where a pooled source's frames go in the pipeline (callbacks) and its rings by generation."""

    source: Any
    deliver: Callable[[SourceFrame], bool]      # False: the pipeline no longer wants frames
    finish: Callable[[BaseException | None], None]
    rings: dict[int, Any]
    closed: bool = False
    ended: bool = False


class _Release:
    """``SourceFrame.release`` of a pooled frame: give its slot back to the worker (once)."""

    __slots__ = ("worker", "sid", "gen", "slot", "done")

    def __init__(self, worker: _Worker, sid: Any, gen: int, slot: int) -> None:
        self.worker, self.sid, self.gen, self.slot, self.done = worker, sid, gen, slot, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.worker.outbox.put((self.sid, self.gen, self.slot))


class _Worker:
    """The pipeline's end of one worker process: a receiver thread and a sender thread."""

    def __init__(self, index: int, device: torch.device, slots: int) -> None:
        self.index = index
        self.routes: dict[Any, _Route] = {}
        self.lock = threading.Lock()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()   # (sid, gen, slot) | ("ctl", msg) | None
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidflow.sources.pool", str(fd), str(device), str(slots),
             str(logging.getLogger("vidflow").getEffectiveLevel())],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.alive = True
        self._rx = threading.Thread(target=self._receive, name=f"vidflow-pool-rx-{index}", daemon=True)
        self._tx = threading.Thread(target=self._send_loop, name=f"vidflow-pool-tx-{index}", daemon=True)
        self._rx.start()
        self._tx.start()

    # -- to the worker ---------------------------------------------------------------------
    def control(self, msg: tuple) -> None:
        self.outbox.put(("ctl", msg))

    def _send_loop(self) -> None:
        while True:
            item = self.outbox.get()
            frees: list = []
            ctl: list = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif item[0] == "ctl":
                    ctl.append(item[1])
                else:
                    frees.append(item)
                try:
                    item = self.outbox.get_nowait()
                except queue.Empty:
                    break
            try:
                if frees:
                    self.conn.send(("free", frees))
                for m in ctl:
                    try:
                        self.conn.send(m)          # pickles first: a failure sends nothing
                    except OSError:
                        raise
                    except Exception as e:  # noqa: BLE001 - e.g. a source that cannot be pickled
                        if m[0] == "open":
                            self._end(m[1], DecodeError(
                                f"cannot move the source to a decode process: {type(e).__name__}: {e}",
                                source_id=m[1], uri=getattr(m[2], "uri", None)))
            except OSError:                     # the worker is gone: the receiver reports it
                return
            if stop:
                return

    # -- from the worker -------------------------------------------------------------------
    def _receive(self) -> None:
        while True:
            try:
                msgs = self.conn.recv()
            except (EOFError, OSError):                  # the worker is gone (or stopping)
                break
            try:
                for m in msgs:
                    self._handle(m)
            except Exception as e:  # noqa: BLE001 - a message we cannot act on: this worker is unusable
                log.error("decode process %d: bad message (%s: %s); stopping it", self.index, type(e).__name__, e)
                self.proc.kill()
                break
        self.alive = False
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:             # never leave its sources hanging
            self.proc.kill()
            code = self.proc.wait()
        with self.lock:
            left = [sid for sid, r in self.routes.items() if not r.ended]
        for sid in left:
            r = self.routes.get(sid)
            if r is not None and not r.closed:
                self._end(sid, DecodeError(f"decode process {self.index} (pid {self.proc.pid}) exited with "
                                           f"code {code}", source_id=sid, uri=getattr(r.source, "uri", None)))
            else:
                self._end(sid, None)

    def _handle(self, m: tuple) -> None:
        kind = m[0]
        if kind == "frame":
            _, sid, gen, slot, num, pts, ntp, w, h, fmt, matrix, full = m
            r = self.routes.get(sid)
            rel = _Release(self, sid, gen, slot)
            ring = r.rings.get(gen) if r is not None else None
            if r is None or r.closed or ring is None:
                rel()
                return
            info = FrameInfo(sid, num, pts, ntp, w, h)
            if not r.deliver(SourceFrame(info, ring[slot], fmt, matrix, full, release=rel)):
                rel()
        elif kind == "ring":
            _, sid, gen, payload = m
            r = self.routes.get(sid)
            if r is not None:                  # keep the previous ring too: frames decoded into it
                r.rings = {g: v for g, v in r.rings.items() if g == gen - 1}   # may still be on the way
                r.rings[gen] = _open_ring(payload)
        elif kind == "stats":
            r = self.routes.get(m[1])
            if r is not None:
                _apply_stats(r.source, m[2])
        elif kind == "end":
            _, sid, stats, err = m
            r = self.routes.get(sid)
            if r is not None:
                _apply_stats(r.source, stats)
            self._end(sid, err)

    def _end(self, sid: Any, err: BaseException | None) -> None:
        with self.lock:
            r = self.routes.get(sid)
            if r is None or r.ended:
                return
            r.ended = True
            self.routes.pop(sid, None)
        if err is not None and not isinstance(err, SourceError):
            err = DecodeError(f"{type(err).__name__}: {err}", source_id=sid, uri=getattr(r.source, "uri", None))
        r.rings = {}
        r.finish(err)

    # -- lifetime --------------------------------------------------------------------------
    def open(self, sid: Any, route: _Route) -> None:
        with self.lock:
            self.routes[sid] = route
        if not self.alive:
            self._end(sid, DecodeError(f"decode process {self.index} is not running", source_id=sid,
                                       uri=getattr(route.source, "uri", None)))
            return
        self.control(("open", sid, route.source))

    def close(self, sid: Any) -> None:
        r = self.routes.get(sid)
        if r is not None:
            r.closed = True
        self.control(("close", sid))

    def load(self) -> int:
        return len(self.routes)

    def stop(self, timeout: float) -> None:
        self.control(("stop",))
        self.outbox.put(None)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("decode process %d did not stop in %.0f s; killing it", self.index, timeout)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._rx.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime
        except (OSError, ValueError, IndexError):
            return 0.0


def _apply_stats(src: Any, stats: dict[str, Any]) -> None:
    """Copy a worker's counters onto the pipeline's copy of the source (what ``stats()`` and
    ``state`` read there)."""
    for k, v in stats.items():
        if k == "uri" or callable(getattr(src, k, None)):   # never a method (UriSource's "frames" count)
            continue
        with contextlib.suppress(AttributeError):
            setattr(src, k, v)


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else __import__("tempfile").gettempdir()


def _map_file(path: str, shape: tuple, *, create: bool) -> torch.Tensor:
    """A uint8 tensor of ``shape`` over a memory-mapped file (the mapping lives as long as any
    tensor viewing it does)."""
    import mmap
    size = max(1, math.prod(shape))
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return torch.frombuffer(mm, dtype=torch.uint8, count=math.prod(shape)).view(shape)


def _open_ring(payload: Any) -> torch.Tensor:
    if isinstance(payload, torch.Tensor):      # CUDA: torch rebuilt it from its IPC handle
        return payload
    path, shape = payload                      # CPU: a file in shared memory; mapped, then unlinked
    ring = _map_file(path, shape, create=False)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return ring


class DecodePool:
    """K decode processes shared by the pooled sources of a pipeline (see the module text).

    ``open(sid, source, deliver, finish)`` moves a source to the least loaded process;
    ``deliver(frame) -> bool`` is called on a receiver thread for each frame (it must not block;
    return False to refuse it), ``finish(error_or_None)`` once at the end. ``close(sid)`` stops a
    source, ``shutdown()`` all processes. ``cpu_seconds()``: CPU time the processes used.
    """

    def __init__(self, processes: int, device: torch.device | str, *, slots: int = 10) -> None:
        if int(processes) < 1:
            raise ValueError(f"decode_processes must be >= 1, got {processes}")
        if int(slots) < 2:
            raise ValueError(f"slots must be >= 2, got {slots}")
        self.processes, self.device, self.slots = int(processes), torch.device(device), int(slots)
        self._workers: list[_Worker] = []
        self._where: dict[Any, _Worker] = {}

    def start(self) -> None:
        if not self._workers:
            self._workers = [_Worker(i, self.device, self.slots) for i in range(self.processes)]

    def open(self, sid: Any, source: Any, deliver: Callable[[SourceFrame], bool],
             finish: Callable[[BaseException | None], None]) -> None:
        self.start()
        alive = [w for w in self._workers if w.alive] or self._workers
        w = min(alive, key=_Worker.load)
        self._where[sid] = w
        w.open(sid, _Route(source, deliver, finish, {}))

    def close(self, sid: Any) -> None:
        w = self._where.get(sid)
        if w is not None:
            w.close(sid)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self._workers)

    def shutdown(self, timeout: float = 20.0) -> None:
        for w in self._workers:                 # let go of the rings before their owners exit
            with w.lock:
                for r in w.routes.values():
                    r.rings = {}
        for w in self._workers:
            with contextlib.suppress(Exception):
                w.stop(timeout)
        self._workers, self._where = [], {}


# =========================================================================== worker side
class _Runner:
    """One source in a worker process: its thread, its ring and its free slots."""

    def __init__(self, sid: Any, source: Any, device: torch.device, slots: int, out: queue.SimpleQueue) -> None:
        self.sid, self.source, self.device, self.slots, self.out = sid, source, device, slots, out
        self.cond = threading.Condition()
        self.free: deque[int] = deque()
        self.gen = 0
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
        with contextlib.suppress(Exception):
            self.source.close()

    def _new_ring(self, shape1: tuple) -> None:
        shape = (self.slots, *shape1)
        if self.device.type == "cuda":
            self.ring = torch.empty(shape, dtype=torch.uint8, device=self.device)
            payload: Any = self.ring
        else:
            path = os.path.join(_shm_dir(), f"vidflow-{os.getpid()}-{id(self):x}-{self.gen + 1}")
            self.ring = _map_file(path, shape, create=True)
            self._files.append(path)     # not unlinked here: the pipeline may not have mapped it yet
            payload = (path, shape)
        with self.cond:
            self.gen += 1
            self.free = deque(range(self.slots))
        self.out.put(("ring", self.sid, self.gen, payload))

    def _alloc(self, shape: tuple) -> torch.Tensor | None:
        """The source's decoder writes its next picture straight into a free ring slot (called on
        this runner's thread, before the frame is yielded); None when closed."""
        if self.ring is None or tuple(self.ring.shape[1:]) != tuple(shape):
            self._new_ring(tuple(shape))
        slot = self._slot()
        if slot is None:
            return None
        view = self.ring[slot]
        self._direct[view.data_ptr()] = (self.gen, slot)
        return view

    def _forget_files(self) -> None:
        """At the end: unlink the ring files the pipeline did not (it unlinks each once mapped)."""
        for path in self._files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._files = []

    def _slot(self) -> int | None:
        with self.cond:
            while not self.free and not self.closed:
                self.cond.wait(0.5)
            return None if self.closed else self.free.popleft()

    def _run(self) -> None:
        err: BaseException | None = None
        side = contextlib.nullcontext()
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
                        if self.ring is None or self.ring.shape[1:] != f.data.shape:
                            self._new_ring(tuple(f.data.shape))
                        slot = self._slot()
                        if slot is None:
                            break
                        gen = self.gen
                        self.ring[slot].copy_(f.data)
                        if stream is not None:
                            stream.synchronize()
                    i = f.info
                    self.out.put(("frame", self.sid, gen, slot, i.frame_num, i.pts, i.ntp_ns, i.width,
                                  i.height, f.format, f.matrix, f.full_range))
                    state = getattr(self.source, "state", None)
                    if state != self._state:         # a live source's state change: tell at once
                        self._state = state
                        self.out.put(("stats", self.sid, _source_stats(self.source)))
                    if self.closed:
                        break
        except BaseException as e:  # noqa: BLE001 - the source fails alone; the pipeline reports it
            if not self.closed:
                err = e if isinstance(e, SourceError) else DecodeError(
                    f"{type(e).__name__}: {e}", source_id=self.sid, uri=getattr(self.source, "uri", None))
        finally:
            self.out.put(("end", self.sid, _source_stats(self.source), err))


def _blocking_sync(index: int) -> None:
    """Make this process's CUDA waits sleep instead of spin (``CU_CTX_SCHED_BLOCKING_SYNC`` on the
    primary context, before torch creates it): a worker waits for NVDEC and its copies once or
    twice per frame, and 16 spinning decoder threads would burn a core each for nothing."""
    import ctypes
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        dev = ctypes.c_int()
        if lib.cuInit(0) == 0 and lib.cuDeviceGet(ctypes.byref(dev), index) == 0:
            lib.cuDevicePrimaryCtxSetFlags(dev, 0x04)
    except (OSError, AttributeError):
        pass


def _worker_main(fd: int, device: str, slots: int, level: int) -> None:
    import faulthandler

    import torch.multiprocessing  # noqa: F401 - registers torch's reductions (CUDA IPC) with the pickler

    faulthandler.enable(all_threads=True)     # a crash in NVDEC or FFmpeg shows its Python stacks

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
        while not done.wait(_STATS_EVERY):
            for sid, r in list(runners.items()):
                if r.thread.is_alive():
                    out.put(("stats", sid, _source_stats(r.source)))

    tx = threading.Thread(target=send_loop, daemon=True)
    tx.start()
    threading.Thread(target=stats_loop, daemon=True).start()
    try:
        while True:
            try:
                m = conn.recv()
            except (EOFError, OSError):
                break
            kind = m[0]
            if kind == "free":
                for sid, gen, slot in m[1]:
                    r = runners.get(sid)
                    if r is not None:
                        r.give_back(gen, slot)
            elif kind == "open":
                _, sid, source = m
                r = _Runner(sid, source, dev, slots, out)
                runners[sid] = r
                r.thread.start()
            elif kind == "close":
                r = runners.get(m[1])
                if r is not None:
                    r.close()
            elif kind == "stop":
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
            r._forget_files()                    # noqa: SLF001


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
