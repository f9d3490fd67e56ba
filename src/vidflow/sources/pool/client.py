"""The pipeline's side of the decode processes: workers, routes, releases and the public pool.

Each worker process has a receiver thread (frames, rings, counters and ends come in as
:mod:`._wire` messages) and a sender thread (slots given back, open / close / stop go out).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch

from ...errors import DecodeError, as_source_error
from ...stats import SourceCounters
from ..base import SourceFrame
from ._ring import open_ring
from ._handle import PooledSource
from ._wire import (
    CloseMsg,
    EndMsg,
    FrameMsg,
    FreeMsg,
    OpenMsg,
    RingMsg,
    SlotRef,
    SourceAttrs,
    StatsMsg,
    StopMsg,
)

__all__ = ["DecodePool", "PooledSource", "poolable"]

log = logging.getLogger(__name__)

# The worker runs ``main`` from the very vidflow this process imported: sys.path is passed whole
# (as multiprocessing's spawn does) because the package may have been found through a path the
# environment does not carry (a sys.path edit, a notebook's working directory). ``-c`` instead of
# spawn: the user's script is never re-run in the worker, so it needs no __main__ guard.
_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
         "from vidflow.sources.pool._worker import main; "
         "main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))")


def poolable(source: Any) -> bool:
    """Whether ``source`` can run in a decode process (it says ``poolable = True``)."""
    return bool(getattr(source, "poolable", False))


@dataclass
class _Route:
    """Where a pooled source's frames go in the pipeline (callbacks) and its rings by generation."""

    handle: PooledSource
    deliver: Callable[[SourceFrame], bool]      # False: the pipeline no longer wants frames
    finish: Callable[[BaseException | None], None]
    rings: dict[int, Any] = field(default_factory=dict)
    closed: bool = False
    ended: bool = False


class _Release:
    """``SourceFrame.release`` of a pooled frame: give its slot back to the worker (once)."""

    __slots__ = ("worker", "ref", "done")

    def __init__(self, worker: _Worker, ref: SlotRef) -> None:
        self.worker, self.ref, self.done = worker, ref, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.worker.outbox.put(self.ref)


class _Worker:
    """The pipeline's end of one worker process: a receiver thread and a sender thread."""

    def __init__(self, index: int, device: torch.device, slots: int) -> None:
        self.index = index
        self.routes: dict[Any, _Route] = {}
        self.lock = threading.Lock()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()   # SlotRef | OpenMsg | CloseMsg | StopMsg | None
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(fd), str(device), str(slots),
             str(logging.getLogger("vidflow").getEffectiveLevel())],
            pass_fds=(fd,), stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.alive = True
        self._rx = threading.Thread(target=self._receive, name=f"vidflow-pool-rx-{index}", daemon=True)
        self._tx = threading.Thread(target=self._send_loop, name=f"vidflow-pool-tx-{index}", daemon=True)
        self._rx.start()
        self._tx.start()

    # -- to the worker ---------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            item = self.outbox.get()
            frees: list[SlotRef] = []
            ctl: list[Any] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, SlotRef):
                    frees.append(item)
                else:
                    ctl.append(item)
                try:
                    item = self.outbox.get_nowait()
                except queue.Empty:
                    break
            try:
                if frees:
                    self.conn.send(FreeMsg(tuple(frees)))
                for m in ctl:
                    self._send_control(m)
            except OSError:                     # the worker is gone: the receiver reports it
                return
            if stop:
                return

    def _send_control(self, m: Any) -> None:
        try:
            self.conn.send(m)                   # pickles first: a failure sends nothing
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a source that cannot be pickled: that source fails
            if not isinstance(m, OpenMsg):
                raise
            r = self.routes.get(m.sid)
            self._end(m.sid, DecodeError(f"cannot move the source to a decode process: {type(e).__name__}: {e}",
                                         source_id=m.sid, uri=None if r is None else r.handle.uri))

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
            left = [(sid, r) for sid, r in self.routes.items() if not r.ended]
        for sid, r in left:
            if not r.closed:
                self._end(sid, DecodeError(f"decode process {self.index} (pid {self.proc.pid}) exited with "
                                           f"code {code}", source_id=sid, uri=r.handle.uri))
            else:
                self._end(sid, None)

    def _handle(self, m: Any) -> None:
        if isinstance(m, FrameMsg):
            r = self.routes.get(m.sid)
            rel = _Release(self, SlotRef(m.sid, m.gen, m.slot))
            ring = r.rings.get(m.gen) if r is not None else None
            if r is None or r.closed or ring is None:
                rel()
                return
            if not r.deliver(SourceFrame(m.info, ring[m.slot], m.format, m.matrix, m.full_range, release=rel)):
                rel()
        elif isinstance(m, RingMsg):
            r = self.routes.get(m.sid)
            if r is not None:                  # keep the previous ring too: frames decoded into it
                r.rings = {g: v for g, v in r.rings.items() if g == m.gen - 1}   # may still be on the way
                r.rings[m.gen] = open_ring(m.ring)
        elif isinstance(m, StatsMsg):
            r = self.routes.get(m.sid)
            if r is not None:
                r.handle._report(m)  # noqa: SLF001 - the pool's own handle
        elif isinstance(m, EndMsg):
            r = self.routes.get(m.sid)
            if r is not None and m.stats is not None:
                r.handle._report(m.stats)  # noqa: SLF001
            self._end(m.sid, m.error)
        else:
            raise TypeError(f"unknown message {type(m).__name__}")

    def _end(self, sid: Any, err: BaseException | None) -> None:
        with self.lock:
            r = self.routes.get(sid)
            if r is None or r.ended:
                return
            r.ended = True
            self.routes.pop(sid, None)
        if err is not None:
            err = as_source_error(err, source_id=sid, uri=r.handle.uri)
        r.rings = {}
        r.finish(err)

    # -- lifetime --------------------------------------------------------------------------
    def open(self, sid: Any, route: _Route) -> None:
        with self.lock:
            self.routes[sid] = route
        if not self.alive:
            self._end(sid, DecodeError(f"decode process {self.index} is not running", source_id=sid,
                                       uri=route.handle.uri))
            return
        self.outbox.put(OpenMsg(sid, route.handle.source))

    def close(self, sid: Any) -> None:
        r = self.routes.get(sid)
        if r is not None:
            r.closed = True
        self.outbox.put(CloseMsg(sid))

    def load(self) -> int:
        return len(self.routes)

    def stop(self, timeout: float) -> None:
        self.outbox.put(StopMsg())
        self.outbox.put(None)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("decode process %d did not stop in %.0f s; killing it", self.index, timeout)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._rx.join(timeout=10)
        try:
            self.conn.close()
        except OSError as e:
            log.debug("decode process %d: closing its socket: %s", self.index, e)

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime
        except (OSError, ValueError, IndexError):
            return 0.0


class DecodePool:
    """K decode processes shared by the pooled sources of a pipeline (see the package text).

    ``open(sid, source, deliver, finish) -> PooledSource`` moves a source to the least loaded
    process; ``deliver(frame) -> bool`` is called on a receiver thread for each frame (it must not
    block; return False to refuse it), ``finish(error_or_None)`` once at the end. ``close(sid)``
    stops a source, ``shutdown()`` all processes. ``where(sid)``: the index of the process running
    a source (None once it ended); ``stats(sid)``: its last counters; ``pids()``, ``alive()``,
    ``cpu_seconds()``: the processes, whether each still runs, the CPU time they used.
    """

    def __init__(self, processes: int, device: torch.device | str, *, slots: int = 10) -> None:
        if int(processes) < 1:
            raise ValueError(f"decode_processes must be >= 1, got {processes}")
        if int(slots) < 2:
            raise ValueError(f"slots must be >= 2, got {slots}")
        self.processes, self.device, self.slots = int(processes), torch.device(device), int(slots)
        self._workers: list[_Worker] = []
        self._where: dict[Any, _Worker] = {}
        self._handles: dict[Any, PooledSource] = {}

    def start(self) -> None:
        if not self._workers:
            self._workers = [_Worker(i, self.device, self.slots) for i in range(self.processes)]

    def open(self, sid: int | str, source: Any, deliver: Callable[[SourceFrame], bool],
             finish: Callable[[BaseException | None], None]) -> PooledSource:
        self.start()
        alive = [w for w in self._workers if w.alive] or self._workers
        w = min(alive, key=_Worker.load)
        self._where[sid] = w
        handle = PooledSource(source, sid, lambda: self.close(sid))
        self._handles[sid] = handle

        def ended(err: BaseException | None) -> None:
            if self._handles.get(sid) is handle:        # (bounded: ended sources are forgotten;
                del self._handles[sid]                  #  their handle keeps the last counters)
                self._where.pop(sid, None)
            finish(err)

        w.open(sid, _Route(handle, deliver, ended))
        return handle

    def close(self, sid: int | str) -> None:
        w = self._where.get(sid)
        if w is not None:
            w.close(sid)

    def where(self, sid: int | str) -> int | None:
        """Index (into ``pids()``) of the decode process running ``sid``; None when it runs nowhere."""
        w = self._where.get(sid)
        return w.index if w is not None and sid in w.routes else None

    def stats(self, sid: int | str) -> SourceCounters | None:
        """The last counters the decode process reported for ``sid`` while it runs (None: not
        running here; the ``PooledSource`` that ``open`` returned keeps them after the end)."""
        h = self._handles.get(sid)
        return None if h is None else h.stats()

    def attrs(self, sid: int | str) -> SourceAttrs | None:
        h = self._handles.get(sid)
        return None if h is None else h._last.attrs  # noqa: SLF001 - the pool's own handle

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def alive(self) -> list[bool]:
        return [w.alive for w in self._workers]

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self._workers)

    def shutdown(self, timeout: float = 20.0) -> None:
        for w in self._workers:                 # let go of the rings before their owners exit
            with w.lock:
                for r in w.routes.values():
                    r.rings = {}
        for w in self._workers:
            try:
                w.stop(timeout)
            except (OSError, subprocess.SubprocessError) as e:
                log.warning("decode process %d: stopping it failed: %s: %s", w.index, type(e).__name__, e)
        self._workers, self._where, self._handles = [], {}, {}
