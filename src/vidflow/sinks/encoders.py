"""Encoders: metadata -> bytes, one payload format each, usable with any transport or file.

================== ====================================================================== ==========
name               payload                                                                  per
================== ====================================================================== ==========
``vidflow.v1``     JSON, the bridge's column names (``schemas/vidflow.v1.json``)          frame
``vidflow.v1+msgpack`` the same record in MessagePack, numeric columns as raw LE bytes      frame
``jsonl``          the DESIGN.md JSONL record (``source_id``, ``objects: [{...}]``)       frame
``deepstream-minimal`` DeepStream nvmsgconv minimal schema (``"version": "4.0"``)          frame
``deepstream-full`` DeepStream nvmsgconv full schema (``"mdsversion": "1.0"``)             object
``events``         ``object.new`` / ``object.update`` / ``object.end`` (``sinks/events.py``) track
================== ====================================================================== ==========

An encoder has ``name``, ``content_type``, ``encode(frames, seq) -> [(source_id, bytes)]`` and
``end_source(source_id, seq) -> [(source_id, bytes)]`` (the end-of-stream message, and for
``events`` the ``object.end`` of every open track). ``seq(source_id)`` hands out the next
sequence number of that source; every message carries ``(source-id, seq)``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson

from .. import __version__
from ._jsonfmt import Pieces, separators
from .records import OBJECT_PREFIX, HostFrames, _is_mask, encode_array, identity_names, label_names

__all__ = ["Encoder", "V1Encoder", "MsgpackEncoder", "JsonlEncoder", "DeepStreamMinimalEncoder",
           "DeepStreamFullEncoder", "make_encoder", "ENCODERS", "SCHEMA"]

SCHEMA = "vidflow.v1"
Seq = Callable[[Any], int]
Out = list[tuple[Any, bytes]]
_NP = orjson.OPT_SERIALIZE_NUMPY


@runtime_checkable
class Encoder(Protocol):
    name: str
    content_type: str

    def encode(self, frames: HostFrames, seq: Seq) -> Out: ...

    def end_source(self, source_id: Any, seq: Seq) -> Out: ...


def _eos(source_id: Any, seq: int) -> dict[str, Any]:
    return {"schema": SCHEMA, "end-of-stream": True, "source-id": source_id, "seq": seq}


def _iso(ntp_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, as nvmsgconv writes ``@timestamp``."""
    ns = int(ntp_ns) if ntp_ns > 0 else _dt.datetime.now(_dt.timezone.utc).timestamp() * 1e9
    t = _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class V1Encoder:
    """``vidflow.v1``: one JSON object per frame keyed by the bridge's column names. Object
    columns are arrays of ``num-objects`` rows; ``infer-tensor-object-*`` columns are compact
    (``records.encode_array``). ``attrs``: keep attribute columns (True / False / list of keys)."""

    name = "vidflow.v1"
    content_type = "application/json"

    def __init__(self, *, attrs: bool | list[str] = True) -> None:
        self.attrs = attrs

    def records(self, frames: HostFrames, seq: Seq) -> list[dict[str, Any]]:
        cols = frames.columns
        names = frames.labels.get("objects", ())
        dense = [(k, v) for k, v in cols.items() if not k.startswith(OBJECT_PREFIX)]
        tensors = []
        for k, v in cols.items():
            if k.startswith(OBJECT_PREFIX):
                le = v.astype(v.dtype.newbyteorder("<"), copy=False)
                tensors.append((k, np.ascontiguousarray(le), le.dtype.str, _is_mask(v)))
        # label names for the whole batch at once, sliced per frame below
        labels = [("object-label", label_names(cols["class-id"], names))]
        for k, _ in dense:
            if k.startswith("classification-") and not k.startswith("classification-confidence-"):
                lab = frames.labels.get(k[len("classification-"):])
                if lab is not None:
                    labels.append(("classification-label-" + k[len("classification-"):], label_names(cols[k], lab)))
        out = []
        sids, fnum, pts, ntp = frames.source_id, frames.frame_num.tolist(), frames.pts.tolist(), frames.ntp.tolist()
        w, h, cnt = frames.width.tolist(), frames.height.tolist(), frames.count.tolist()
        b64 = base64.b64encode
        for i, sid in enumerate(sids):
            n = cnt[i]
            r: dict[str, Any] = {"schema": SCHEMA, "source-id": sid, "seq": seq(sid), "frame-num": fnum[i],
                                 "pts": pts[i], "ntp": ntp[i], "source-frame-width": w[i],
                                 "source-frame-height": h[i], "num-objects": n}
            for k, v in dense:
                r[k] = v[i, :n]
            for k, lab in labels:
                r[k] = lab[i][:n]
            for k, v, dt, mask in tensors:
                a = v[i, :n]
                r[k] = encode_array(a) if mask else {"encoding": "b64", "dtype": dt, "shape": [n, *a.shape[1:]],
                                                     "data": b64(a.tobytes()).decode("ascii")}
            out.append(r)
        return out

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        dumps = orjson.dumps
        return [(r["source-id"], dumps(r, option=_NP)) for r in self.records(frames, seq)]

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        return [(source_id, orjson.dumps(_eos(source_id, seq(source_id))))]


class MsgpackEncoder(V1Encoder):
    """``vidflow.v1+msgpack``: the ``vidflow.v1`` record in MessagePack; every numeric column is
    ``{"encoding": "raw", "dtype": "<f4", "shape": [...], "data": <bytes>}`` (no text numbers)."""

    name = "vidflow.v1+msgpack"
    content_type = "application/msgpack"

    def __init__(self, *, attrs: bool | list[str] = True) -> None:
        super().__init__(attrs=attrs)
        import msgpack

        self._pack = msgpack.packb

    @staticmethod
    def _raw(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            le = np.ascontiguousarray(v.astype(v.dtype.newbyteorder("<"), copy=False))
            return {"encoding": "raw", "dtype": le.dtype.str, "shape": list(v.shape), "data": le.tobytes()}
        return v

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        return [(r["source-id"], self._pack({k: self._raw(v) for k, v in r.items()}, use_bin_type=True))
                for r in self.records(frames, seq)]

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        return [(source_id, self._pack(_eos(source_id, seq(source_id)), use_bin_type=True))]


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
        pts = np.round(frames.pts, 6).tolist()
        heads = [dumps({"source_id": sid, "frame_num": f, "pts": t, "width": w, "height": h})[:-1] + b',"objects":['
                 for sid, f, t, w, h in zip(frames.source_id, frames.frame_num.tolist(), pts, frames.width.tolist(),
                                            frames.height.tolist())]
        n = sum(cnt)
        if n == 0:
            return [h + b"]}" for h in heads]
        valid = np.arange(cols["bbox"].shape[1])[None, :] < frames.count[:, None]
        ends = np.cumsum(frames.count)[frames.count > 0]        # rows after each frame's last object
        p = Pieces(n)
        p.patch(p.slot(b',{"bbox":'), ends - frames.count[frames.count > 0], 0, b"\0")  # no comma before a first
        p.array(cols["bbox"][valid], "f", nd)
        cid = cols["class-id"][valid]
        p.const(b',"class_id":')
        p.ints(cid)
        p.const(b',"label":')
        p.names(cid, _namer(frames.labels.get("objects", ())))
        p.const(b',"confidence":')
        p.floats(cols["confidence"][valid], 4)
        p.const(b',"object_id":')
        p.ints(cols["object-id"][valid])
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
            p.array(kp[valid], "f", nd)
        p.patch(p.slot(b"}\0\0\0"), ends - 1, 1, b"]}\n")       # and the frame's end after its last
        body = iter(p.join().split(b"\n"))
        return [h + (next(body) if c else b"]}") for h, c in zip(heads, cnt)]

    def _attr_specs(self, frames: HostFrames, valid: np.ndarray) -> list[tuple[str, Callable[[Pieces], None]]]:
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
                    out.append((key, _emit_names(ids[valid], _namer(frames.labels[stage], unknown=None))))
                    continue
            else:
                continue
            per = int(np.prod(v.shape[2:])) if v.ndim > 2 else 1
            if v.ndim == 3 and v.shape[2] == 1:
                v = v[..., 0]
            rows = v[valid]
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


class DeepStreamMinimalEncoder:
    """nvmsgconv's minimal schema (``payload-type=1``): one message per frame, ``{"version": "4.0",
    "id": <frame-num>, "@timestamp": ISO-8601, "sensorId": "<source>", "objects":
    ["<tracking-id>|<left>|<top>|<right>|<bottom>|<label>", ...]}``. ``sensors`` maps a source id
    to the sensor string (default: the source id as text). See docs/EVENTS.md for the reference."""

    name = "deepstream-minimal"
    content_type = "application/json"

    def __init__(self, *, sensors: dict[Any, str] | None = None) -> None:
        self.sensors = dict(sensors or {})

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        cols = frames.columns
        names = frames.labels.get("objects", ())
        bbox, oid = cols["bbox"].tolist(), cols["object-id"].tolist()
        labels = label_names(cols["class-id"], names)
        out = []
        for i, sid in enumerate(frames.source_id):
            seq(sid)
            objs = [f"{oid[i][j]}|{b[0]:g}|{b[1]:g}|{b[2]:g}|{b[3]:g}|{labels[i][j]}"
                    for j, b in enumerate(bbox[i][: int(frames.count[i])])]
            msg = {"version": "4.0", "id": int(frames.frame_num[i]), "@timestamp": _iso(int(frames.ntp[i])),
                   "sensorId": self.sensors.get(sid, str(sid)), "objects": objs}
            out.append((sid, orjson.dumps(msg)))
        return out

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        return []


class DeepStreamFullEncoder:
    """nvmsgconv's full schema (``payload-type=0``): one message per object, ``{"messageid",
    "mdsversion": "1.0", "@timestamp", "place", "sensor", "analyticsModule", "object", "event",
    "videoPath"}``; ``object`` holds ``id`` (tracking id as text), ``speed``/``direction``/
    ``orientation`` (0), ``{<label>: {}}``, ``bbox`` (``topleftx``, ``toplefty``,
    ``bottomrightx``, ``bottomrighty`` as integers), ``location``, ``coordinate``, ``confidence``.
    ``sensors``: source id -> ``{"id", "type", "description"}``; ``place``: the place object."""

    name = "deepstream-full"
    content_type = "application/json"

    def __init__(self, *, sensors: dict[Any, dict[str, str]] | None = None, place: dict[str, Any] | None = None,
                 event_type: str = "moving") -> None:
        self.sensors = dict(sensors or {})
        self.place = place or {"id": "", "name": "", "type": "", "location": {"lat": 0.0, "lon": 0.0, "alt": 0.0}}
        self.event_type = event_type

    def _sensor(self, sid: Any) -> dict[str, Any]:
        s = self.sensors.get(sid, {})
        return {"id": s.get("id", str(sid)), "type": s.get("type", "Camera"), "description": s.get("description", ""),
                "location": {"lat": 0.0, "lon": 0.0, "alt": 0.0}, "coordinate": {"x": 0.0, "y": 0.0, "z": 0.0}}

    def encode(self, frames: HostFrames, seq: Seq) -> Out:
        cols = frames.columns
        names = frames.labels.get("objects", ())
        box = np.rint(cols["bbox"]).astype(np.int64).tolist()
        oid, conf = cols["object-id"].tolist(), cols["confidence"].astype(np.float64).tolist()
        labels = label_names(cols["class-id"], names)
        out = []
        for i, sid in enumerate(frames.source_id):
            ts, sensor = _iso(int(frames.ntp[i])), self._sensor(sid)
            for j in range(int(frames.count[i])):
                b = box[i][j]
                msg = {
                    "messageid": str(uuid.uuid4()), "mdsversion": "1.0", "@timestamp": ts, "place": self.place,
                    "sensor": sensor,
                    "analyticsModule": {"id": "", "description": "", "source": "vidflow", "version": __version__,
                                        "confidence": conf[i][j]},
                    "object": {"id": str(oid[i][j]), "speed": 0.0, "direction": 0.0, "orientation": 0.0,
                               labels[i][j]: {},
                               "bbox": {"topleftx": b[0], "toplefty": b[1], "bottomrightx": b[2], "bottomrighty": b[3]},
                               "location": {"lat": 0.0, "lon": 0.0, "alt": 0.0},
                               "coordinate": {"x": 0.0, "y": 0.0, "z": 0.0}, "confidence": conf[i][j]},
                    "event": {"id": str(uuid.uuid4()), "type": self.event_type},
                    "videoPath": "", "seq": seq(sid)}
                out.append((sid, orjson.dumps(msg)))
        return out

    def end_source(self, source_id: Any, seq: Seq) -> Out:
        return []


def _events(**kw: Any) -> Encoder:
    from .events import ObjectEvents

    return ObjectEvents(**kw)


ENCODERS: dict[str, Callable[..., Encoder]] = {
    "vidflow.v1": V1Encoder, "vidflow.v1+msgpack": MsgpackEncoder, "jsonl": JsonlEncoder,
    "deepstream-minimal": DeepStreamMinimalEncoder, "deepstream-full": DeepStreamFullEncoder, "events": _events,
}


def make_encoder(spec: str | Encoder, **kw: Any) -> Encoder:
    """An encoder by name (``ENCODERS``) with keyword options, or ``spec`` itself if it is one."""
    if not isinstance(spec, str):
        if not isinstance(spec, Encoder):
            raise ValueError(f"encoder: expected a name in {sorted(ENCODERS)} or an Encoder, got {type(spec).__name__}")
        return spec
    if spec not in ENCODERS:
        raise ValueError(f"encoder: expected one of {sorted(ENCODERS)}, got {spec!r}")
    return ENCODERS[spec](**kw)
