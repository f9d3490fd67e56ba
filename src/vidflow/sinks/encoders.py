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
import datetime as _dt
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson

from .. import __version__
from .jsonl_encoder import JsonlEncoder
from .records import OBJECT_PREFIX, HostFrames, _is_mask, encode_array, label_names

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
            for k, per_frame in labels:
                r[k] = per_frame[i][:n]
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
