"""Overlap (``Pipeline(overlap=True)``): where the stages are cut, and the tail thread that runs
the later part and the sinks one batch behind the main thread.

The tail is handed callables (run a batch through the tail stages and the sinks; end a source),
never the pipeline, so this module imports nothing of it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..batch import Batch
from ..errors import PipelineStateError
from .steps import StageSlot

__all__ = ["split", "Tail", "LoopWaits"]


def split(stages: Sequence[StageSlot]) -> tuple[list[StageSlot], list[StageSlot], Callable[[], None]]:
    """``(head, tail, clear)``: the stages of the main thread, those of the tail thread, and a
    function that forgets launched work that will never be finished (after an abort).

    A stage with ``launch(batch)`` and ``finish(pending)`` (the detector) is cut in two: ``launch``
    ends the main thread's part, ``finish`` and every later stage run on the tail. ``launch``'s
    result waits in a FIFO shared with ``finish`` (batches reach the tail in order), and the batch
    itself travels on, so the pipeline sees Batches only. Otherwise the trailing ``host_stage``
    stages (the tracker) form the tail."""
    stages = list(stages)
    for i, st in enumerate(stages):
        if st.split is not None:
            launch, finish = st.split
            fifo: deque = deque()

            def first(batch: Batch, launch: Callable = launch, fifo: deque = fifo) -> Batch:
                fifo.append(launch(batch))
                return batch

            def second(batch: Batch, finish: Callable = finish, fifo: deque = fifo) -> Batch:
                return finish(fifo.popleft())

            head = dataclasses.replace(st, label=f"{st.name}.launch", call=first, reset=None, split=None)
            tail = dataclasses.replace(st, label=f"{st.name}.finish", call=second, split=None)
            return [*stages[:i], head], [tail, *stages[i + 1:]], fifo.clear
    k = len(stages)
    while k > 0 and stages[k - 1].host:
        k -= 1
    return stages[:k], stages[k:], lambda: None


def tail_priority() -> int:
    """The CUDA priority of the tail's stream: ``VIDFLOW_TAIL_PRIORITY`` (an experiment's knob,
    default 0; lower is higher, -1 asks for the device's highest). A high priority lets the tail's
    small kernels (the detector's finish, masks) take SMs ahead of the next batch's model, which
    the main thread has queued meanwhile; whether that raises throughput is measured by ``vidflow
    bench --variants tailprio``."""
    text = os.environ.get("VIDFLOW_TAIL_PRIORITY", "").strip()
    try:
        return int(text) if text else 0
    except ValueError:
        raise ValueError(f"VIDFLOW_TAIL_PRIORITY: expected an integer (0, or -1 for high), got {text!r}") from None


@dataclasses.dataclass
class LoopWaits:
    """Seconds a pipeline's loop waited, cumulative, without a device sync (``snapshot().loop_s``):
    ``collect`` the main thread in the muxer (waiting for frames, taking them); with overlap,
    ``tail_full`` the main thread holding a batch for the tail's full queue (the tail is the slower
    half) and ``tail_idle`` the tail waiting for a batch (the main thread is)."""

    overlap: bool = False
    collect: float = 0.0
    tail_full: float = 0.0
    tail_idle: float = 0.0

    def as_dict(self) -> dict[str, float]:
        out = {"collect": round(self.collect, 4)}
        if self.overlap:
            out.update(tail_full=round(self.tail_full, 4), tail_idle=round(self.tail_idle, 4))
        return out


class Tail:
    """The second thread of an overlapping pipeline: ``run(batch, wait_s)`` (the tail stages and
    the sinks) and ``end(sid)`` (a source's resets and end-of-source calls) in queue order."""

    DEPTH = 2          # batches waiting for the tail before the main thread waits

    def __init__(self, run: Callable[[Batch, float], Batch], end: Callable[[Any], None],
                 device: torch.device, clear: Callable[[], None] = lambda: None,
                 waits: LoopWaits | None = None) -> None:
        self._run, self._end, self._clear, self.device = run, end, clear, device
        self.q: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.running = True
        self._abort = False
        self.waits = waits if waits is not None else LoopWaits()
        self.waits.overlap = True
        self.stream = (torch.cuda.Stream(device, priority=tail_priority()) if device.type == "cuda" else None)
        self.thread = threading.Thread(target=self._loop, name="vidflow-tail", daemon=True)
        self.thread.start()

    def put_batch(self, batch: Batch, wait_s: float) -> None:
        ev = None
        if self.stream is not None:            # the tail's stream waits for the head stages' work
            ev = torch.cuda.Event()
            ev.record()
        self._put(("batch", batch, ev, wait_s))

    def put_end(self, sid: Any) -> None:
        """After the source's last batch went through the tail."""
        self._put(("end", sid))

    def _put(self, item: tuple | None) -> None:
        try:
            self.q.put_nowait(item)
            return
        except queue.Full:
            pass
        t0 = time.perf_counter()
        try:
            self._put_waiting(item)
        finally:
            self.waits.tail_full += time.perf_counter() - t0

    def _put_waiting(self, item: tuple | None) -> None:
        while True:
            self._raise()
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:                           # look at the tail's health again
                if not self.thread.is_alive():
                    self._raise()
                    raise PipelineStateError("the pipeline's tail thread stopped") from None

    def done(self) -> Iterator[Batch]:
        """Batches the tail has finished (without waiting)."""
        while True:
            try:
                yield self.out.get_nowait()
            except queue.Empty:
                return

    def finish(self, abort: Callable[[], bool] = lambda: False) -> Iterator[Batch]:
        """Let the tail work off what is queued, then stop it; yields the last batches. Once
        ``abort()`` is true, what is left is dropped (:meth:`abort`)."""
        self._put(None)
        while self.thread.is_alive():
            if abort():
                self.abort()
                return
            self.thread.join(0.1)
            yield from self.done()
        self.running = False
        yield from self.done()
        self._raise()

    def abort(self) -> None:
        """Stop at once (an error or an early break in the main thread): queued work is dropped."""
        if self.running:
            self._abort = True
            self.running = False
            while True:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    break
            with contextlib.suppress(queue.Full):
                self.q.put_nowait(None)
            self.thread.join(timeout=30)
        self._clear()                                    # launched, never finished

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            self.running = False
            raise err

    def _loop(self) -> None:
        side = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        if self.stream is not None:
            torch.cuda.set_device(self.device)
        with side:
            while True:
                t0 = time.perf_counter()
                item = self.q.get()
                self.waits.tail_idle += time.perf_counter() - t0
                if item is None or self._abort:
                    return
                if self.error is not None:
                    continue                             # failed: drain until told to stop
                try:
                    if item[0] == "batch":
                        _, batch, ev, wait_s = item
                        if ev is not None and self.stream is not None:
                            self.stream.wait_event(ev)
                        batch = self._run(batch, wait_s)
                        if self.stream is not None:
                            # the batch's pooled images may be refilled once it is dropped
                            self.stream.synchronize()
                        self.out.put(batch)
                    else:
                        self._end(item[1])
                except BaseException as e:  # noqa: BLE001 - raised from the main thread
                    self.error = e
