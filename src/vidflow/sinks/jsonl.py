"""``JsonlSink``: one JSON line per frame (or per event), written off the pipeline's thread.

Default schema (``format="jsonl"``, DESIGN.md)::

    {"source_id": 0, "frame_num": 12, "pts": 0.4, "width": 1920, "height": 1080,
     "objects": [{"bbox": [x1, y1, x2, y2], "class_id": 1, "label": "disc", "confidence": 0.93,
                  "object_id": 4, "attrs": {"color.label": "red", "embed.vector": [...]}}]}

Any encoder of ``sinks/encoders.py`` can be chosen instead (``format="vidflow.v1"``,
``"deepstream-minimal"``, ``"events"``...). Records are built from the batch's columns
(``records.host_frames``: a view of the batch's one host table, shared with the other sinks; its
one copy to the host also feeds the run summary), encoded with orjson (``format="jsonl"``: the
whole batch at once, ``sinks/jsonl_encoder.py``), and written by a
:class:`~vidflow.sinks.base.ThreadedSink` worker.

Faults: each batch's lines go out in one ``os.write`` loop on an ``O_APPEND`` descriptor; if a
write fails part-way (disk full, quota, I/O error) the file is truncated back to the end of the
last complete line, so it never ends in a partial record; the sink is then marked failed (its
``on_error`` policy decides whether the pipeline stops). A hard kill loses at most the batch being
written, never a line's integrity beyond the last one; ``append=True`` on a file a killed run
left ending in part of a line first cuts that part off. Free space is checked when the file is
opened: below ``warn_free_bytes`` a warning names the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from .._preflight import warn_low_space
from ..batch import Batch
from ..errors import SinkError
from .base import ThreadedSink
from .encoders import Encoder, JsonlEncoder, make_encoder
from .records import host_frames

__all__ = ["JsonlSink", "frame_records"]

log = logging.getLogger(__name__)


def frame_records(batch: Batch, *, attrs: bool = True, decimals: int = 2) -> list[dict[str, Any]]:
    """The JSON-ready DESIGN.md records of a batch, one per frame in batch order."""
    return JsonlEncoder(attrs=attrs, decimals=decimals).records(host_frames(batch, attrs=attrs))


class JsonlSink(ThreadedSink):
    """Writes one line per frame to ``path`` (parent folders created; an existing file is
    replaced unless ``append=True``). Lines of one source come in frame order.

    Args:
        path: output file.
        format: an encoder name or object (``sinks.encoders.ENCODERS``); ``"jsonl"`` is the
            DESIGN.md record.
        attrs: include per-object attributes (embeddings, classifier labels...).
        decimals: rounding of box coordinates (``format="jsonl"`` only).
        warn_free_bytes: warn when the disk holding ``path`` has less free space at start.
        name: the sink's name in the summary and logs.
        queue_size / when_full / on_error: see :class:`~vidflow.sinks.base.ThreadedSink`.
    """

    def __init__(self, path: str | os.PathLike, *, format: str | Encoder = "jsonl", attrs: bool = True,
                 decimals: int = 2, append: bool = False, warn_free_bytes: int = 1 << 30, queue_size: int = 8,
                 when_full: Literal["block", "drop_oldest"] = "block",
                 on_error: Literal["isolate", "stop"] = "isolate", name: str = "jsonl") -> None:
        super().__init__(name=name, queue_size=queue_size, when_full=when_full, on_error=on_error)
        self.path = Path(path)
        self.attrs, self.decimals, self.append = bool(attrs), int(decimals), bool(append)
        self.encoder = (JsonlEncoder(attrs=self.attrs, decimals=self.decimals) if format == "jsonl"
                        else make_encoder(format))
        self.warn_free_bytes = int(warn_free_bytes)
        self._fd: int | None = None
        self._lines = 0
        self._bytes = 0
        self._seqs: dict[Any, int] = {}

    @property
    def host_masks(self) -> bool:
        """Reads the masks' RLE (``records.ReadsHostFrames``): the ``jsonl`` format writes them."""
        return isinstance(self.encoder, JsonlEncoder)

    @property
    def lines(self) -> int:
        """Complete lines written so far."""
        return self._lines

    def _next_seq(self, sid: Any) -> int:
        n = self._seqs.get(sid, 0)
        self._seqs[sid] = n + 1
        return n

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self.append else os.O_TRUNC)
                self._fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise SinkError(f"{self.name}: cannot open {self.path}: {e}") from e
            self._bytes = os.fstat(self._fd).st_size
            if self._bytes:
                self._repair_tail()
            warn_low_space(self.path, self.warn_free_bytes)
        return self._fd

    def _repair_tail(self) -> None:
        """Appending to a file a killed run left ending in part of a line: cut that part off, so
        every line stays a complete record (a kill can cut a write short at a page boundary)."""
        assert self._fd is not None
        end = pos = self._bytes
        with open(self.path, "rb") as f:
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            while pos > 0:
                start = max(0, pos - (1 << 16))
                f.seek(start)
                i = f.read(pos - start).rfind(b"\n")
                if i >= 0:
                    pos = start + i + 1
                    break
                pos = start
        os.ftruncate(self._fd, pos)
        self._bytes = pos
        log.warning("%s: removed a partial last line (%d bytes) that an earlier run left in %s", self.name,
                    end - pos, self.path, extra={"sink": self.name, "path": str(self.path), "bytes": end - pos})

    def _write_lines(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        fd = self._open()
        data = memoryview(b"\n".join(payloads) + b"\n")
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as e:
            try:                      # cut the partial record: the file ends on a complete line
                os.ftruncate(fd, self._bytes)
            except OSError as e2:
                log.error("%s: could not remove a partial record from %s: %s", self.name, self.path, e2)
            raise SinkError(f"{self.name}: writing {self.path} failed: {e}") from e
        self._bytes += len(data)
        self._lines += len(payloads)

    def _process(self, batch: Batch) -> None:
        frames = host_frames(batch, attrs=self.attrs, masks=self.host_masks)
        self._write_lines([p for _, p in self.encoder.encode(frames, self._next_seq)])

    def _end_source(self, source_id: int | str) -> None:
        self._write_lines([p for _, p in self.encoder.end_source(source_id, self._next_seq)])

    def _finish(self) -> None:
        if self._fd is None and self._error is None:     # nothing written: still leave an empty file
            self._open()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(path=str(self.path), lines=self._lines, bytes=self._bytes)
        return s
