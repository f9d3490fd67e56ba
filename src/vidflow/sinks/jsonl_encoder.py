"""The ``jsonl`` encoder: the DESIGN.md JSONL record, one line per frame.

:meth:`JsonlEncoder.records` builds the per-frame dicts (the reference form, also behind
``jsonl.frame_records``); :meth:`JsonlEncoder.encode` writes the same bytes as
``orjson.dumps`` of each of them, built for the whole batch at once (``sinks/_jsonfmt.py``:
every number of the batch formatted by one vectorised pass, no Python loop per object).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from ._jsonfmt import Pieces, separators, texts
from .records import OBJECT_PREFIX, HostFrames, encode_array, identity_names, label_names

__all__ = ["JsonlEncoder"]

Seq = Callable[[Any], int]
Out = list[tuple[Any, bytes]]


class JsonlEncoder:
    """The DESIGN.md JSONL record (``source_id``, ``frame_num``, ``pts``, ``width``, ``height``,
    ``objects: [{bbox, class_id, label, confidence, object_id, attrs?, mask?, keypoints?}]``;
    ``mask``: the instance mask as COCO RLE in source pixels (pycocotools reads it),
    ``keypoints``: ``[[x, y, score], ...]`` in source pixels). Attributes with at
    most ``max_list`` values per object are lists (classifier labels as names), bigger ones are
    compact (``records.encode_array``). No ``seq`` (kept byte-compatible with earlier files)."""

    name = "jsonl"
    content_type = "application/x-ndjson"

    def __init__(self, *, attrs: bool = True, decimals: int = 2, max_list: int = 32) -> None:
        self.attrs, self.decimals, self.max_list = bool(attrs), int(decimals), int(max_list)
        self._sid_text: dict[Any, bytes] = {}

    def records(self, frames: HostFrames) -> list[dict[str, Any]]:
        cols, nd = frames.columns, self.decimals
        names = frames.labels.get("objects", ())
        bbox = np.round(cols["bbox"].astype(np.float64), nd).tolist()
        conf = np.round(cols["confidence"].astype(np.float64), 4).tolist()
        cid, oid = cols["class-id"].tolist(), cols["object-id"].tolist()
        labels = label_names(cols["class-id"], names)
        extra = self._attrs(frames) if self.attrs else {}
        out = []
        keys, vals = tuple(extra), tuple(extra.values())
        cnt, fnum, w, h = frames.count.tolist(), frames.frame_num.tolist(), frames.width.tolist(), frames.height.tolist()
        pts = np.round(frames.pts, 6).tolist()
        kp = cols.get("keypoints")
        kpts = None if kp is None else np.round(kp.astype(np.float64), nd).tolist()
        for i, sid in enumerate(frames.source_id):
            n = cnt[i]
            objs = [{"bbox": b, "class_id": c, "label": lb, "confidence": cf, "object_id": o}
                    for b, c, lb, cf, o in zip(bbox[i][:n], cid[i][:n], labels[i][:n], conf[i][:n], oid[i][:n])]
            if keys:
                for ob, *av in zip(objs, *[v[i] for v in vals]):
                    ob["attrs"] = dict(zip(keys, av))
            if frames.rle is not None:
                for ob, r in zip(objs, frames.rle[i]):
                    ob["mask"] = r
            if kpts is not None:
                for ob, k in zip(objs, kpts[i][:n]):
                    ob["keypoints"] = k
            out.append({"source_id": sid, "frame_num": fnum[i], "pts": pts[i], "width": w[i], "height": h[i],
                        "objects": objs})
        return out

    def _attrs(self, frames: HostFrames) -> dict[str, list]:
        """Per attribute key (``"<stage>.<name>"``): ``[B][K]`` values."""
        extra: dict[str, list] = {}
        for k, v in frames.columns.items():
            if k.startswith("classification-confidence-"):
                key, vals = f"{k[len('classification-confidence-'):]}.confidence", v
            elif k.startswith("classification-"):
                stage = k[len("classification-"):]
                key = f"{stage}.label"
                vals = np.asarray(label_names(v, frames.labels[stage]), dtype=object) if stage in frames.labels else v
            elif k.startswith(OBJECT_PREFIX):
                key, vals = k[len(OBJECT_PREFIX):], v
                named = identity_names(key, vals[..., 0] if vals.ndim == 3 and vals.shape[2] == 1 else vals,
                                       frames.labels)
                if named is not None:          # identify's ids -> the gallery's names
                    extra[key] = named.tolist()
                    continue
            else:
                continue
            per = int(np.prod(vals.shape[2:])) if vals.ndim > 2 else 1
            if vals.ndim == 3 and vals.shape[2] == 1:
                vals = vals[..., 0]
            if per <= self.max_list:
                if vals.dtype.kind == "f":
                    vals = np.round(vals.astype(np.float64), 4)
                extra[key] = vals.tolist()
            else:
                extra[key] = [[encode_array(vals[i, j][None]) for j in range(vals.shape[1])] for i in range(len(vals))]
        return extra

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        """One line per frame: the bytes of ``orjson.dumps(r) for r in records(frames)``, built
        column by column for the whole batch (``sinks/_jsonfmt.py``)."""
        return list(zip(frames.source_id, self.lines(frames)))

    def lines(self, frames: HostFrames) -> list[bytes]:
        cols, nd = frames.columns, self.decimals
        cnt = frames.count.tolist()
        dumps = orjson.dumps
        sid_text = self._sid_text
        for sid in frames.source_id:
            if sid not in sid_text:
                sid_text[sid] = dumps(sid)
        heads = [b'{"source_id":%b,"frame_num":%d,"pts":%b,"width":%d,"height":%d,"objects":[' % (sid_text[sid], *rest)
                 for sid, *rest in zip(frames.source_id, frames.frame_num.tolist(), texts(np.round(frames.pts, 6).tolist()),
                                       frames.width.tolist(), frames.height.tolist())]
        n = sum(cnt)
        if n == 0:
            return [h + b"]}" for h in heads]
        valid = _Valid(frames.count, cols["bbox"].shape[1])
        has = frames.count > 0
        ends = np.cumsum(frames.count)[has]                     # rows after each frame's last object
        firsts = ends - frames.count[has]
        p = Pieces(n)
        p.patch(p.slot(b',{"bbox":'), firsts, 0, b"\0")        # no comma before a frame's first object
        p.array(valid(cols["bbox"]), "f", nd)
        cid = valid(cols["class-id"])
        p.const(b',"class_id":')
        p.ints(cid)
        p.const(b',"label":')
        names = frames.labels.get("objects", ())
        p.names(cid, _namer(names), names)
        p.const(b',"confidence":')
        p.floats(valid(cols["confidence"]), 4)
        p.const(b',"object_id":')
        p.ints(valid(cols["object-id"]))
        specs = self._attr_specs(frames, valid) if self.attrs else []
        for j, (key, emit) in enumerate(specs):
            p.const((b',"attrs":{' if j == 0 else b",") + dumps(key) + b":")
            emit(p)
        if specs:
            p.const(b"}")
        if frames.rle is not None:
            p.const(b',"mask":')
            p.objects([r for per in frames.rle for r in per])
        kp = cols.get("keypoints")
        if kp is not None:
            p.const(b',"keypoints":')
            p.array(valid(kp), "f", nd)
        p.patch(p.slot(b"}\0\0\0"), ends - 1, 1, b"]}\n")       # and the frame's end after its last
        body = iter(p.join().split(b"\n"))
        return [h + next(body) if c else h + b"]}" for h, c in zip(heads, cnt)]

    def _attr_specs(self, frames: HostFrames, valid: _Valid) -> list[tuple[str, Callable[[Pieces], None]]]:
        """Per attribute key (``"<stage>.<name>"``, in column order): how its values are
        written, the same values as :meth:`_attrs` (which ``records`` uses)."""
        out: list[tuple[str, Callable[[Pieces], None]]] = []
        for k, v in frames.columns.items():
            names: Any = None
            if k.startswith("classification-confidence-"):
                key = f"{k[len('classification-confidence-'):]}.confidence"
            elif k.startswith("classification-"):
                stage = k[len("classification-"):]
                key = f"{stage}.label"
                if stage in frames.labels:
                    names = _namer(frames.labels[stage])
            elif k.startswith(OBJECT_PREFIX):
                key = k[len(OBJECT_PREFIX):]
                stage, _, what = key.rpartition(".")
                ids = v[..., 0] if v.ndim == 3 and v.shape[2] == 1 else v
                if what == "identity" and stage in frames.labels and ids.dtype.kind in "iu":
                    out.append((key, _emit_names(valid(ids), _namer(frames.labels[stage], unknown=None))))
                    continue
            else:
                continue
            per = int(np.prod(v.shape[2:])) if v.ndim > 2 else 1
            if v.ndim == 3 and v.shape[2] == 1:
                v = v[..., 0]
            rows = valid(v)
            if names is not None and per <= self.max_list:
                out.append((key, _emit_names(rows, names)))
            elif per <= self.max_list and rows.dtype.kind in "fiub":
                out.append((key, _emit_array(rows, "f" if rows.dtype.kind == "f" else "i")))
            else:                               # the rare rest: exactly as records() builds them
                vals = self._attrs_of(frames, k)
                out.append((key, _emit_objects([x for i, r in enumerate(vals) for x in r[:frames.count[i]]])))
        return out

    def _attrs_of(self, frames: HostFrames, column: str) -> list:
        sub = dataclasses.replace(frames, columns={column: frames.columns[column]})
        return next(iter(self._attrs(sub).values()))

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        return []


class _Valid:
    """The valid rows of padded ``[B, K, ...]`` columns, frame by frame: ``[N, ...]``."""

    def __init__(self, count: np.ndarray, k: int) -> None:
        self.k, self.full = k, bool((count == k).all())
        self.idx = None if self.full else np.flatnonzero(np.arange(k)[None, :] < count[:, None])

    def __call__(self, v: np.ndarray) -> np.ndarray:
        flat = v.reshape(v.shape[0] * self.k, *v.shape[2:])
        return flat if self.idx is None else flat[self.idx]


def _namer(names: tuple[str, ...], unknown: Any = "") -> Callable[[int], Any]:
    """id -> name as ``records.label_names`` gives it (``str(id)`` outside ``names``), or
    ``unknown`` for ids outside ``names`` when it is None (identities)."""
    def name(i: int) -> Any:
        if 0 <= i < len(names):
            return names[i]
        return None if unknown is None else str(i)
    return name


def _emit_names(ids: np.ndarray, name: Callable[[int], Any]) -> Callable[[Pieces], None]:
    def emit(p: Pieces) -> None:
        if ids.ndim == 1:
            p.names(ids, name)
            return
        for j, sep in enumerate(separators(tuple(ids.shape[1:]))):
            p.const(sep)
            if j < ids[0].size:
                p.names(ids.reshape(len(ids), -1)[:, j], name)
    return emit


def _emit_array(rows: np.ndarray, kind: str) -> Callable[[Pieces], None]:
    return lambda p: p.array(rows, kind, 4)


def _emit_objects(values: list) -> Callable[[Pieces], None]:
    return lambda p: p.objects(values)
