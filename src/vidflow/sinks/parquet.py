"""``ParquetSink``: one row per object (flat columns + the frame's columns, ``vidflow.tables``),
written with pyarrow (``pip install 'vidflow[parquet]'``) on a worker thread.

Rows are buffered and written as a row group every ``row_group_rows`` rows and at close. The
columns are fixed by the first batch that has objects: an attribute first seen later is left
out (logged once), a missing one is null. Parquet's footer is written at close: a file whose
writer was killed is not readable (use ``JsonlSink`` where that matters). With
``frames_without_objects=True`` every empty frame adds one row with null object columns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..batch import Batch
from ..errors import SinkError
from ..tables import FRAME_FIELDS, object_columns
from .base import ThreadedSink
from .records import host_frames
from .transports import import_client

__all__ = ["ParquetSink"]

log = logging.getLogger(__name__)


class ParquetSink(ThreadedSink):
    """One row per object (flat columns) plus the frame's columns, to a Parquet file (pyarrow).

    Args:
        path: output file (parent folders created).
        attrs: include per-object attributes as columns (embeddings as list columns).
        row_group_rows: rows buffered per Parquet row group.
        compression: Parquet codec (``"zstd"``, ``"snappy"``, ``"gzip"``, ``"none"``).
        frames_without_objects: also write one row (object columns null) for a frame without objects.
        name: the sink's name in the summary and logs.
        queue_size / when_full / on_error: see :class:`~vidflow.sinks.base.ThreadedSink`.
    """

    host_masks = False        # reads host_frames, not the masks' RLE (records.ReadsHostFrames)

    def __init__(self, path: str | os.PathLike, *, attrs: bool = True, row_group_rows: int = 65_536,
                 compression: str = "zstd", frames_without_objects: bool = False, queue_size: int = 8,
                 when_full: Literal["block", "drop_oldest"] = "block",
                 on_error: Literal["isolate", "stop"] = "isolate", name: str = "parquet") -> None:
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
        super().__init__(name=name, queue_size=queue_size, when_full=when_full, on_error=on_error)
        self._pa = import_client("pyarrow", "parquet", f"{name} sink")
        self._pq = import_client("pyarrow.parquet", "parquet", f"{name} sink")
        self.path, self.attrs, self.row_group_rows = Path(path), bool(attrs), int(row_group_rows)
        self.compression, self.frames_without_objects = compression, bool(frames_without_objects)
        self._writer: Any = None
        self._schema: Any = None
        self._buf: list[Any] = []
        self._buffered = 0
        self.rows = 0
        self._warned: set[str] = set()

    def _table(self, cols: dict[str, Any]) -> Any:
        pa = self._pa
        arrays = {}
        for k, v in cols.items():
            if isinstance(v, list) and any(isinstance(x, np.ndarray) for x in v):
                arrays[k] = pa.array([None if x is None else x.reshape(-1) for x in v])   # list<...> column
            else:
                arrays[k] = pa.array(v)
        t = pa.table(arrays)
        if self._schema is None:
            self._schema = t.schema
            return t
        extra = [n for n in t.schema.names if n not in self._schema.names]
        for n in extra:
            if n not in self._warned:
                self._warned.add(n)
                log.warning("%s: column %r appeared after the first batch; left out of %s", self.name, n, self.path)
        out = []
        for f in self._schema:
            out.append(t.column(f.name).cast(f.type) if f.name in t.schema.names else pa.nulls(t.num_rows, f.type))
        return pa.Table.from_arrays(out, schema=self._schema)

    def _process(self, batch: Batch) -> None:
        frames = host_frames(batch, attrs=self.attrs, masks=False)
        cols = object_columns(frames)
        if self.frames_without_objects and (frames.count == 0).any():
            empty = np.flatnonzero(frames.count == 0)
            sid = np.array(frames.source_id, dtype=object)
            for k in list(cols):
                if k == "source_id":
                    cols[k] = list(cols[k]) + sid[empty].tolist()
                elif k in FRAME_FIELDS:
                    cols[k] = np.concatenate([cols[k], getattr(frames, k)[empty]])
                else:
                    cols[k] = list(cols[k]) + [None] * len(empty)
        n = len(cols["frame_num"])
        if n == 0:
            return
        self._buf.append(self._table(cols))
        self._buffered += n
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        pa = self._pa
        t = pa.concat_tables(self._buf)
        self._buf, self._buffered = [], 0
        if self._writer is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = self._pq.ParquetWriter(str(self.path), t.schema, compression=self.compression)
            except OSError as e:
                raise SinkError(f"{self.name}: cannot open {self.path}: {e}") from e
        self._writer.write_table(t, row_group_size=self.row_group_rows)
        self.rows += t.num_rows

    def _finish(self) -> None:
        try:
            if self._error is None:
                self._flush()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(path=str(self.path), rows=self.rows)
        return s
