"""Fakes for tests and examples, one per boundary, so everything runs offline on a CPU.

- :class:`FakeSource`: a source of numbered solid frames, optionally live, slow or failing.
- :class:`MemorySink`: keeps what it is given.
- ``FakeEngine`` (``vidflow.engines.fake``): a model with deterministic outputs.
- Scenes with ground truth: ``Scene``, ``make_clip``, ``load_ground_truth`` (``vidflow.scenes``).
- :func:`wait_until`: poll a condition instead of sleeping a guessed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .batch import Batch, FrameInfo
from .engines.fake import FakeEngine
from .errors import DecodeError
from .scenes import Scene, load_ground_truth, make_clip
from .sources.base import SourceFrame

__all__ = ["FakeSource", "MemorySink", "FakeEngine", "Scene", "make_clip", "load_ground_truth", "frame_value",
           "wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "", *,
               interval: float = 0.005) -> Any:
    """Poll ``predicate()`` until it returns something true and return that; ``TimeoutError``
    (naming ``what``) after ``timeout`` s. For tests: waits exactly as long as needed, and the
    timeout is a generous bound for a stuck condition, never a measurement."""
    end = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= end:
            raise TimeoutError(f"not true within {timeout:g} s: {what or predicate!r}")
        time.sleep(interval)


def frame_value(source_id: int, frame_num: int) -> int:
    """The grey level of frame ``frame_num`` of a ``FakeSource`` (so tests can tell frames apart)."""
    return (int(source_id) * 37 + int(frame_num) * 3) % 251


class FakeSource:
    """Yields ``frames`` solid RGB frames of ``width x height``; frame ``i`` has grey level
    ``frame_value(source_id, i)`` and ``pts = i / fps``.

    ``delay``: seconds slept before each frame (a slow camera); ``open_delay``: seconds the
    constructor takes (a camera slow to open, as a decoder being created); ``fail_after``: raise
    ``DecodeError`` after that many frames; ``live``: drop-oldest queueing in the pipeline;
    ``frames=None``: never ends (until closed).
    """

    def __init__(self, frames: int | None = 10, *, width: int = 64, height: int = 48, fps: float = 30.0,
                 live: bool = False, delay: float = 0.0, fail_after: int | None = None,
                 uri: str = "fake://source", open_delay: float = 0.0) -> None:
        if open_delay > 0:
            time.sleep(float(open_delay))
        self.n = frames
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.live = live
        self.delay = float(delay)
        self.fail_after = fail_after
        self.uri = uri
        self._closed = threading.Event()
        self.closed_calls = 0

    poolable = True           # picklable: runs in a decode process too (tests of vidflow.sources.pool)

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_closed"] = None
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._closed = threading.Event()

    def frames(self, *, device: torch.device, source_id: int | str) -> Iterator[SourceFrame]:
        i = 0
        sid = source_id if isinstance(source_id, int) else abs(hash(source_id)) % 1000
        while (self.n is None or i < self.n) and not self._closed.is_set():
            if self.fail_after is not None and i >= self.fail_after:
                raise DecodeError(f"fake failure after {i} frames", source_id=source_id, uri=self.uri)
            if self.delay:
                self._closed.wait(self.delay)
            data = torch.full((3, self.height, self.width), frame_value(sid, i), dtype=torch.uint8, device=device)
            info = FrameInfo(source_id, i, i / self.fps, time.time_ns(), self.width, self.height)
            yield SourceFrame(info=info, data=data, format="rgb")
            i += 1

    def close(self) -> None:
        self.closed_calls += 1
        self._closed.set()


class MemorySink:
    """Keeps every batch written (``batches``); ``keep_images=False`` drops the images (keeps a
    0-size placeholder) so long runs do not pin the muxer's buffers."""

    def __init__(self, *, keep_images: bool = True) -> None:
        self.batches: list[Batch] = []
        self.keep_images = keep_images
        self.closed = False

    def write(self, batch: Batch) -> None:
        if not self.keep_images:
            batch = batch.replace(images=torch.empty((len(batch), 3, 0, 0), dtype=torch.uint8, device=batch.device))
        self.batches.append(batch)

    @property
    def frames(self) -> list[FrameInfo]:
        return [f for b in self.batches for f in b.frames]

    def frames_of(self, source_id: int | str) -> list[FrameInfo]:
        return [f for f in self.frames if f.source_id == source_id]

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> MemorySink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
