"""The pieces a fleet worker adds around its pipeline (no Ray here; tested in-process).

- :class:`KeepAlive`: a source that yields nothing until closed, so a worker's pipeline keeps
  running with no camera on it (a ``Pipeline`` ends when its last source has ended).
- :class:`Resume`: wraps a camera's source. A file camera (``live=False``) restarting after a
  move skips the frames before ``start`` (they were acknowledged by the sinks already), so its
  ``frame_num`` goes on where it was and nothing is lost; a live camera cannot replay, so its
  frame numbers jump by ``offset`` (the frames the camera produced during the gap) and stay
  unique per camera.
- :class:`AckSink`: the last sink of a worker's pipeline. It records, per batch, the newest
  frame of each camera, and :meth:`AckSink.acked` says which frames every sink has finished
  with (a threaded sink: processed on its worker thread, i.e. the JSONL line is in the file).
  These acknowledgements are what the driver resumes a file camera from after a worker dies.
  It can also keep per-frame records for ``Fleet.records()``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..batch import Batch

__all__ = ["KeepAlive", "Resume", "AckSink", "KEEPALIVE_ID"]

KEEPALIVE_ID = "__fleet_keepalive__"


class KeepAlive:
    """Yields no frame; ``frames()`` returns once :meth:`close` is called."""

    live = True
    uri = "fleet://keepalive"

    def __init__(self) -> None:
        self._closed = threading.Event()

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = KEEPALIVE_ID) -> Iterator[Any]:
        self._closed.wait()
        yield from ()

    def close(self) -> None:
        self._closed.set()


class Resume:
    """``source`` restarted after a move: frames with ``frame_num < start`` are skipped (file
    cameras), every ``frame_num`` is raised by ``offset`` (live cameras). Picklable when the
    source is (decode processes take it whole); the skipping then happens in that process."""

    def __init__(self, source: Any, *, start: int = 0, offset: int = 0) -> None:
        if start < 0 or offset < 0:
            raise ValueError(f"Resume: start and offset must be >= 0, got {start}, {offset}")
        self.source, self.start, self.offset = source, int(start), int(offset)
        self.skipped = 0

    # what the pipeline and the decode pool look at, forwarded (``frame_alloc`` deliberately not:
    # a skipped frame written straight into a decode ring slot would never give the slot back)
    @property
    def live(self) -> bool:
        return bool(getattr(self.source, "live", False))

    @property
    def poolable(self) -> bool:
        return bool(getattr(self.source, "poolable", False))

    @property
    def uri(self) -> str:
        return str(getattr(self.source, "uri", ""))

    @property
    def state(self) -> Any:
        return getattr(self.source, "state", None)

    def stats(self) -> dict[str, Any]:
        fn = getattr(self.source, "stats", None)
        return dict(fn()) if callable(fn) else {}

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = 0) -> Iterator[Any]:
        for f in self.source.frames(device=device, source_id=source_id):
            if f.info.frame_num < self.start:
                self.skipped += 1
                if f.release is not None:
                    f.release()
                continue
            if self.offset:
                f = dataclasses.replace(f, info=dataclasses.replace(f.info, frame_num=f.info.frame_num + self.offset))
            yield f

    def close(self) -> None:
        self.source.close()


def _processed(sink: Any) -> int | None:
    """Items a threaded sink has finished (written, or dropped by its declared policy); None for a
    sink that writes in ``write()`` itself."""
    stats = getattr(sink, "stats", None)
    if not callable(stats) or not hasattr(sink, "queue_size"):
        return None
    s = stats()
    if "written" not in s:
        return None
    return int(s["written"]) + int(s.get("dropped", 0))


class AckSink:
    """Put last in the pipeline's sinks (``sinks=[*others, AckSink(others)]``): the other sinks'
    ``write`` has returned for every batch it sees. ``keep_records``: per-frame records kept
    (the newest ones) for :meth:`take_records`."""

    name = "fleet-ack"

    def __init__(self, sinks: Sequence[Any], *, keep_records: int = 0) -> None:
        self.sinks = list(sinks)
        self._lock = threading.Lock()
        self._batches = 0
        self._pending: deque[tuple[int, dict[Any, int], int]] = deque()   # (batch no., newest frames, ns)
        self._acked: dict[Any, int] = {}
        self._acked_ns: dict[Any, int] = {}
        self.keep_records = int(keep_records)
        self._records: deque[dict[str, Any]] = deque(maxlen=max(1, self.keep_records))
        self.records_dropped = 0

    @property
    def reads_masks(self) -> bool:
        """The records it keeps carry the masks' RLE (``stages.base.ReadsMasks``)."""
        return self.keep_records > 0

    def write(self, batch: Batch) -> None:
        newest: dict[Any, int] = {}
        for f in batch.frames:
            newest[f.source_id] = max(newest.get(f.source_id, -1), f.frame_num)
        ns = max((f.ntp_ns for f in batch.frames), default=0)
        recs = None
        if self.keep_records:
            from ..sinks.jsonl import frame_records

            recs = frame_records(batch, attrs=False)
        with self._lock:
            self._batches += 1
            self._pending.append((self._batches, newest, ns))
            if recs is not None:
                over = len(self._records) + len(recs) - self.keep_records
                self.records_dropped += max(0, over)
                self._records.extend(recs)

    def acked(self) -> dict[Any, tuple[int, int]]:
        """Per camera: (newest frame_num every sink has finished with, its receipt time in ns)."""
        done = [p for p in (_processed(s) for s in self.sinks) if p is not None]
        with self._lock:
            limit = min(done, default=self._batches)
            while self._pending and self._pending[0][0] <= limit:
                _, newest, ns = self._pending.popleft()
                for sid, fn in newest.items():
                    if fn > self._acked.get(sid, -1):
                        self._acked[sid] = fn
                        self._acked_ns[sid] = ns
            return {sid: (fn, self._acked_ns.get(sid, 0)) for sid, fn in self._acked.items()}

    def take_records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The kept per-frame records (oldest first), removed from the buffer."""
        with self._lock:
            n = len(self._records) if limit is None else min(limit, len(self._records))
            return [self._records.popleft() for _ in range(n)]

    def forget(self, source_id: Any) -> None:
        """Drop a camera's acknowledgements (it starts again), pending ones included."""
        with self._lock:
            self._acked.pop(source_id, None)
            self._acked_ns.pop(source_id, None)
            for _, newest, _ in self._pending:
                newest.pop(source_id, None)

    def close(self) -> None:
        return None
