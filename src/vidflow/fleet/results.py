"""Reading a fleet's JSONL outputs back, each frame once.

Every worker writes its own files (``out/frames.w0.jsonl``, ``out/frames.w1.jsonl`` ...). After a
worker is lost, a file camera restarts from the last frame the sinks acknowledged, so the
frames written after that acknowledgement and before the loss appear twice (bounded: about
one status poll's worth of frames per camera). :func:`read_records` merges the files and keeps
the first record of each ``(source_id, frame_num)``; a line cut short by a killed process is
skipped and counted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Records", "read_records", "worker_files"]


@dataclass
class Records:
    """The de-duplicated records (``by_camera``: source_id -> frame_num -> record) and what was
    dropped on the way."""

    by_camera: dict[Any, dict[int, dict[str, Any]]] = field(default_factory=dict)
    duplicates: int = 0
    damaged_lines: int = 0
    files: list[str] = field(default_factory=list)

    def frames(self, source_id: Any) -> list[int]:
        """The frame numbers of one camera, sorted."""
        return sorted(self.by_camera.get(source_id, {}))

    def missing(self, source_id: Any, total: int) -> list[int]:
        """Frame numbers in ``0..total-1`` that no file holds for this camera."""
        have = self.by_camera.get(source_id, {})
        return [i for i in range(total) if i not in have]

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_camera.values())


def worker_files(path: str) -> list[str]:
    """The per-worker files of a template sink path (``out/frames.jsonl`` ->
    ``out/frames.w*.jsonl``; a path with ``{worker}`` -> that pattern)."""
    if "{worker}" in path:
        pattern = path.replace("{worker}", "*")
    else:
        stem, ext = os.path.splitext(path)
        pattern = f"{stem}.*{ext}"
    return sorted(glob.glob(pattern))


def read_records(paths: str | Iterable[str]) -> Records:
    """Merge JSONL files (a template sink path, see :func:`worker_files`, or a list of files),
    one record per ``(source_id, frame_num)``; lines without those keys (event records) are
    skipped."""
    files = worker_files(paths) if isinstance(paths, str) else list(paths)
    out = Records(files=files)
    for p in files:
        with open(p, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    out.damaged_lines += 1
                    continue
                if not isinstance(rec, dict) or "source_id" not in rec or "frame_num" not in rec:
                    continue
                cam = out.by_camera.setdefault(rec["source_id"], {})
                fn = int(rec["frame_num"])
                if fn in cam:
                    out.duplicates += 1
                else:
                    cam[fn] = rec
    return out
