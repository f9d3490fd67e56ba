"""Results as flat tables: one row per object, frame columns repeated (pandas / Arrow friendly).

Columns: ``source_id``, ``frame_num``, ``pts``, ``ntp``, ``width``, ``height``, ``x1``, ``y1``,
``x2``, ``y2``, ``class_id``, ``label``, ``confidence``, ``object_id``, ``tracker_confidence``;
classifier results as ``<stage>.label`` (name when known, else id) and ``<stage>.confidence``;
identities (``identify``) as ``<stage>.identity`` names (None when unknown);
other attributes as ``<stage>.<name>``: a number when there is one value per object, else a
NumPy array per row (embeddings, masks).

- :func:`object_columns` (NumPy, no pandas needed) and :func:`batch_to_frame` from a ``Batch``;
- :func:`read_jsonl` reads a JSONL written by ``JsonlSink`` (``format="jsonl"`` or
  ``"vidflow.v1"``) into that DataFrame; ``frames_without_objects=True`` keeps one row per empty
  frame (object columns null), so frame counts survive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from .sinks.records import OBJECT_PREFIX, HostFrames, decode_array, host_frames, identity_names, label_names

__all__ = ["object_columns", "batch_to_frame", "read_jsonl", "FRAME_FIELDS", "OBJECT_FIELDS"]

FRAME_FIELDS = ("source_id", "frame_num", "pts", "ntp", "width", "height")
OBJECT_FIELDS = ("x1", "y1", "x2", "y2", "class_id", "label", "confidence", "object_id", "tracker_confidence")


def object_columns(frames: HostFrames) -> dict[str, Any]:
    """Flat columns (one entry per object) of a batch's host columns."""
    cols = frames.columns
    k = cols["bbox"].shape[1]
    valid = np.arange(k)[None, :] < frames.count[:, None]
    rows = np.repeat(np.arange(len(frames)), frames.count)
    sid = np.array(frames.source_id, dtype=object)
    out: dict[str, Any] = {"source_id": sid[rows].tolist(), "frame_num": frames.frame_num[rows],
                           "pts": frames.pts[rows], "ntp": frames.ntp[rows], "width": frames.width[rows],
                           "height": frames.height[rows]}
    box = cols["bbox"][valid]
    out.update(x1=box[:, 0], y1=box[:, 1], x2=box[:, 2], y2=box[:, 3], class_id=cols["class-id"][valid],
               label=label_names(cols["class-id"][valid], frames.labels.get("objects", ())),
               confidence=cols["confidence"][valid], object_id=cols["object-id"][valid],
               tracker_confidence=cols["tracker-confidence"][valid])
    for name, v in cols.items():
        if name.startswith("classification-confidence-"):
            key, val = f"{name[len('classification-confidence-'):]}.confidence", v[valid]
        elif name.startswith("classification-"):
            stage = name[len("classification-"):]
            key, val = f"{stage}.label", v[valid]
            if stage in frames.labels:
                val = np.asarray(label_names(val, frames.labels[stage]), dtype=object)
        elif name.startswith(OBJECT_PREFIX):
            key, val = name[len(OBJECT_PREFIX):], v[valid]
        else:
            continue
        if val.ndim == 2 and val.shape[1] == 1:
            val = val[:, 0]
        named = identity_names(key, val, frames.labels) if name.startswith(OBJECT_PREFIX) else None
        if named is not None:                  # identify's ids -> the gallery's names
            val = named
        out[key] = val if val.ndim == 1 else list(val)
    return out


def _pandas() -> Any:
    try:
        import pandas
    except ModuleNotFoundError:
        raise ModuleNotFoundError("DataFrames need pandas: pip install 'vidflow[pandas]'", name="pandas") from None
    return pandas


def batch_to_frame(batch: Any) -> Any:
    """A ``Batch`` as a flat pandas DataFrame (one row per object)."""
    pd = _pandas()

    return pd.DataFrame(object_columns(host_frames(batch, dense_masks=True)))


def _v1_rows(rec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    n = rec["num-objects"]
    base = {"source_id": rec["source-id"], "frame_num": rec["frame-num"], "pts": rec["pts"], "ntp": rec["ntp"],
            "width": rec["source-frame-width"], "height": rec["source-frame-height"]}
    extra = {}
    for k, v in rec.items():
        if k.startswith(OBJECT_PREFIX):
            a = decode_array(v)
            extra[k[len(OBJECT_PREFIX):]] = [x if x.size > 1 else x.reshape(()).item() for x in a]
        elif k.startswith("classification-label-"):
            extra[f"{k[len('classification-label-'):]}.label"] = [x[0] if len(x) == 1 else x for x in v]
        elif k.startswith("classification-confidence-"):
            extra[f"{k[len('classification-confidence-'):]}.confidence"] = [x[0] if len(x) == 1 else x for x in v]
    for j in range(n):
        b = rec["bbox"][j]
        row = {**base, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "class_id": rec["class-id"][j],
               "label": rec["object-label"][j], "confidence": rec["confidence"][j], "object_id": rec["object-id"][j],
               "tracker_confidence": rec["tracker-confidence"][j]}
        for k, v in extra.items():
            row[k] = v[j]
        yield row


def _jsonl_rows(rec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    base = {k: rec.get(k) for k in FRAME_FIELDS}
    for o in rec["objects"]:
        b = o["bbox"]
        row = {**base, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "class_id": o["class_id"], "label": o["label"],
               "confidence": o["confidence"], "object_id": o["object_id"], "tracker_confidence": None}
        for k, v in o.get("attrs", {}).items():
            row[k] = decode_array(v)[0] if isinstance(v, dict) and "encoding" in v else (
                np.asarray(v) if isinstance(v, list) else v)
        yield row


def read_jsonl(path: str | os.PathLike, *, frames_without_objects: bool = False) -> Any:
    """A JSONL file of ``JsonlSink`` (``jsonl`` or ``vidflow.v1`` records) as a flat pandas
    DataFrame, one row per object; end-of-stream and event lines are skipped."""
    pd = _pandas()

    rows: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = orjson.loads(line)
            if rec.get("end-of-stream") or "event" in rec:
                continue
            v1 = "num-objects" in rec
            got = list(_v1_rows(rec) if v1 else _jsonl_rows(rec))
            if not got and frames_without_objects:
                got = [{"source_id": rec["source-id"], "frame_num": rec["frame-num"], "pts": rec["pts"],
                        "ntp": rec["ntp"], "width": rec["source-frame-width"], "height": rec["source-frame-height"]}
                       if v1 else {k: rec.get(k) for k in FRAME_FIELDS}]
            rows.extend(got)
    df = pd.DataFrame(rows, columns=None if rows else [*FRAME_FIELDS, *OBJECT_FIELDS])
    for c in (*FRAME_FIELDS, *OBJECT_FIELDS):
        if c not in df.columns:
            df[c] = None
    return df
