"""Per-track events: ``object.new`` / ``object.update`` / ``object.end`` (the ``events`` encoder).

A track is ``(source-id, object-id)`` with ``object-id >= 0`` (untracked objects make no events).
Every event carries the track's ``class-id``/``label`` (of its best detection), ``first-seen`` and
``last-seen`` (``frame-num``, ``pts``, ``ntp``), ``best-confidence``, ``best-bbox`` (the box of the
best-confidence detection: the best crop), the current ``bbox``, and ``identity`` (the name an
``Identify`` stage gave it, from ``attrs["<stage>.identity"]`` and ``labels["<stage>"]``, when
present; else null).

- ``object.new``: the first frame a track is seen.
- ``object.update``: at most once per ``update_interval_s`` of the source's pts per track
  (deterministic: stream time, not wall time); ``0`` = every frame, ``None`` = never.
- ``object.end``: when a track was not seen for ``end_after`` frames of its source, or at the
  source's end of stream (then the stream's end-of-stream message follows).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import orjson

from .encoders import SCHEMA, Out, Seq, _eos
from .records import OBJECT_PREFIX, HostFrames, label_names

__all__ = ["ObjectEvents"]


@dataclasses.dataclass
class _Track:
    class_id: int
    label: str
    first: dict[str, Any]
    last: dict[str, Any]
    best_conf: float
    best_bbox: list[float]
    bbox: list[float]
    identity: str | None
    updated_pts: float


class ObjectEvents:
    """Stateful encoder of per-track events (see the module docstring)."""

    name = "events"
    content_type = "application/json"

    def __init__(self, *, update_interval_s: float | None = 1.0, end_after: int = 30) -> None:
        if update_interval_s is not None and update_interval_s < 0:
            raise ValueError(f"update_interval_s must be >= 0 or None, got {update_interval_s}")
        if end_after < 1:
            raise ValueError(f"end_after must be >= 1, got {end_after}")
        self.update_interval_s, self.end_after = update_interval_s, int(end_after)
        self._tracks: dict[Any, dict[int, _Track]] = {}

    @property
    def open_tracks(self) -> int:
        return sum(len(t) for t in self._tracks.values())

    def _event(self, kind: str, sid: Any, oid: int, t: _Track, seq: Seq) -> tuple[Any, bytes]:
        msg = {"schema": SCHEMA, "event": kind, "source-id": sid, "seq": seq(sid), "object-id": oid,
               "class-id": t.class_id, "label": t.label, "first-seen": t.first, "last-seen": t.last,
               "best-confidence": t.best_conf, "best-bbox": t.best_bbox, "bbox": t.bbox, "identity": t.identity}
        return sid, orjson.dumps(msg)

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        cols = frames.columns
        names = frames.labels.get("objects", ())
        oid, cid = cols["object-id"].tolist(), cols["class-id"].tolist()
        conf = cols["confidence"].astype(np.float64).round(4).tolist()
        bbox = cols["bbox"].astype(np.float64).round(2).tolist()
        labels = label_names(cols["class-id"], names)
        ident = None
        for k, v in cols.items():
            stage = k[len(OBJECT_PREFIX):-len(".identity")] if k.startswith(OBJECT_PREFIX) and k.endswith(
                ".identity") else None
            if stage and stage in frames.labels:
                ident = label_names(v.reshape(v.shape[0], v.shape[1]), frames.labels[stage])
                idv = v.reshape(v.shape[0], v.shape[1])
                break
        out: Out = []
        for i, sid in enumerate(frames.source_id):
            tracks = self._tracks.setdefault(sid, {})
            fn, pts = int(frames.frame_num[i]), float(frames.pts[i])
            seen = {"frame-num": fn, "pts": round(pts, 6), "ntp": int(frames.ntp[i])}
            for j in range(int(frames.count[i])):
                o = oid[i][j]
                if o < 0:
                    continue
                who = ident[i][j] if ident is not None and idv[i, j] >= 0 else None
                t = tracks.get(o)
                if t is None:
                    t = tracks[o] = _Track(cid[i][j], labels[i][j], seen, seen, conf[i][j], bbox[i][j], bbox[i][j],
                                           who, pts)
                    out.append(self._event("object.new", sid, o, t, seq))
                    continue
                t.last, t.bbox = seen, bbox[i][j]
                if who is not None:
                    t.identity = who
                if conf[i][j] > t.best_conf:
                    t.best_conf, t.best_bbox, t.class_id, t.label = conf[i][j], bbox[i][j], cid[i][j], labels[i][j]
                if self.update_interval_s is not None and pts - t.updated_pts >= self.update_interval_s:
                    t.updated_pts = pts
                    out.append(self._event("object.update", sid, o, t, seq))
            gone = [o for o, t in tracks.items() if fn - t.last["frame-num"] >= self.end_after]
            for o in gone:
                out.append(self._event("object.end", sid, o, tracks.pop(o), seq))
        return out

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        tracks = self._tracks.pop(source_id, {})
        out = [self._event("object.end", source_id, o, t, seq) for o, t in tracks.items()]
        out.append((source_id, orjson.dumps(_eos(source_id, seq(source_id)))))
        return out
