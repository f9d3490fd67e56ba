"""``vidflow.consume(uri)``: read what a broker sink sent, on the other side of the wire.

Yields one decoded message (``dict``) per frame / event / end-of-stream, in order per source.
``dedup=True`` drops re-sent messages (a message whose ``seq`` is not above the last one seen for
its ``source-id``: the sink's at-least-once replays). ``columns=True`` turns each ``vidflow.v1``
frame record into the bridge's per-frame form (:func:`to_message`: the column names and tensor
shapes of :func:`vidflow.translate.to_frames`, so :func:`vidflow.translate.from_frames` rebuilds
the ``Objects``). ``timeout``: stop after that many seconds without a message (None: forever).

URIs: ``mqtt://[user:pass@]host[:port]/<topic filter>`` (default ``vidflow/+/frames``; QoS 1),
``redis://[:pass@]host[:port][/db]`` with ``topic=`` a stream name, list or glob pattern (default
``vidflow:*:frames``), ``kafka://host:port/<topic>``, ``zmq+tcp://host:port`` (binds a PULL socket;
``options={"socket": "sub"}`` connects a SUB), or a ``.jsonl`` file path.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import orjson
import torch

from .sinks.records import OBJECT_PREFIX, decode_array

__all__ = ["consume", "decode", "to_message", "Dedup"]

_SHAPES = {"bbox": (-1, 4), "tracker-bbox": (-1, 4), "class-id": (-1, 1), "confidence": (-1, 1),
           "object-id": (-1, 1), "tracker-confidence": (-1, 1)}
_DTYPES = {"bbox": torch.float32, "tracker-bbox": torch.float32, "class-id": torch.int64, "confidence": torch.float32,
           "object-id": torch.int64, "tracker-confidence": torch.float32}


def decode(payload: bytes) -> dict[str, Any]:
    """One payload (JSON, or MessagePack for ``vidflow.v1+msgpack``) as a dict."""
    if payload[:1] in (b"{", b"["):
        return orjson.loads(payload)
    import msgpack

    msg = msgpack.unpackb(payload, raw=False)
    return {k: decode_array(v).tolist() if isinstance(v, dict) and v.get("encoding") == "raw" and
            not k.startswith(OBJECT_PREFIX) else v for k, v in msg.items()}


def to_message(record: dict[str, Any]) -> dict[str, Any]:
    """A ``vidflow.v1`` frame record as the bridge's per-frame message (tensors, DeepStream column
    names and shapes; ``detector-bbox`` = ``bbox``). Other messages come back unchanged."""
    if "num-objects" not in record:
        return record
    n = int(record["num-objects"])
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k in _SHAPES:
            out[k] = torch.tensor(np.asarray(v, dtype=np.float64) if v else np.zeros((0,)), dtype=_DTYPES[k]).reshape(
                _SHAPES[k]) if n else torch.zeros((0, *_SHAPES[k][1:]), dtype=_DTYPES[k])
        elif k.startswith(OBJECT_PREFIX):
            out[k] = torch.from_numpy(decode_array(v))
        elif k.startswith("classification-label-") or k == "object-label":
            out[k] = v
        elif k.startswith("classification-confidence-"):
            out[k] = torch.tensor(v, dtype=torch.float32).reshape(n, -1, 1)
        elif k.startswith("classification-"):
            out[k] = torch.tensor(v, dtype=torch.int64).reshape(n, -1, 1)
        else:
            out[k] = v
    out["detector-bbox"] = out["bbox"]
    return out


class Dedup:
    """Drops a message whose ``seq`` is not above the last seen for its ``source-id``."""

    def __init__(self) -> None:
        self.last: dict[Any, int] = {}
        self.duplicates = 0

    def __call__(self, msg: dict[str, Any]) -> bool:
        sid, seq = msg.get("source-id"), msg.get("seq")
        if seq is None:
            return True
        if seq <= self.last.get(sid, -1):
            self.duplicates += 1
            return False
        self.last[sid] = seq
        return True


def _mqtt(u: Any, topic: str | None, options: dict[str, Any], out: queue.Queue, stop: threading.Event) -> None:
    import paho.mqtt.client as mqtt

    filt = topic or (unquote(u.path[1:]) if u.path and len(u.path) > 1 else "vidflow/+/frames")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=options.get("client_id", ""),
                    protocol=mqtt.MQTTv311, clean_session=options.get("clean_session", True))
    if u.username:
        c.username_pw_set(unquote(u.username), unquote(u.password or ""))
    c.on_connect = lambda cl, ud, fl, rc, pr=None: cl.subscribe(filt, qos=1) if not rc.is_failure else None
    c.on_message = lambda cl, ud, m: out.put(m.payload)
    c.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # (typed int; fractions of a second work)
    while not stop.is_set():
        try:
            c.connect(u.hostname or "localhost", u.port or 1883, 30)
            break
        except OSError:
            stop.wait(0.1)
    c.loop_start()
    stop.wait()
    c.disconnect()
    c.loop_stop()


def _redis(u: Any, topic: str | list[str] | None, options: dict[str, Any], out: queue.Queue,
           stop: threading.Event) -> None:
    import redis

    r = redis.Redis.from_url(u.geturl(), socket_timeout=5, socket_connect_timeout=2)
    pos: dict[Any, Any] = {}
    pattern = topic if isinstance(topic, str) and any(ch in topic for ch in "*?[") else None
    fixed = [topic] if isinstance(topic, str) and pattern is None else list(topic or [])
    if topic is None:
        pattern = "vidflow:*:frames"
    while not stop.is_set():
        try:
            names = fixed + ([k.decode() for k in r.scan_iter(match=pattern)] if pattern else [])
            for name in names:
                pos.setdefault(name, "0")
            if not pos:
                stop.wait(0.05)
                continue
            got: Any = r.xread(dict(pos), count=1000, block=100)
            for stream, entries in got or []:
                for eid, fields in entries:
                    out.put(fields[b"payload"])
                    pos[stream.decode()] = eid.decode()
        except (redis.ConnectionError, redis.TimeoutError):
            stop.wait(0.1)


def _kafka(u: Any, topic: str | None, options: dict[str, Any], out: queue.Queue, stop: threading.Event) -> None:
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": u.netloc, "group.id": options.get("group", "vidflow-consume"),
            "auto.offset.reset": "earliest", "enable.auto.commit": True, **options.get("config", {})}
    c = Consumer(conf)
    c.subscribe([topic or (u.path[1:] if len(u.path) > 1 else "vidflow.frames")])
    while not stop.is_set():
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            out.put(m.value())
    c.close()


def _zmq(u: Any, topic: str | None, options: dict[str, Any], out: queue.Queue, stop: threading.Event) -> None:
    import zmq

    endpoint = u.geturl().replace("zmq+", "", 1)
    sub = options.get("socket", "pull") == "sub"
    s: Any = zmq.Context.instance().socket(zmq.SUB if sub else zmq.PULL)
    if sub:
        s.setsockopt(zmq.SUBSCRIBE, (topic or "").encode())
        s.connect(endpoint)
    else:
        s.bind(endpoint)
    ready = options.get("ready")
    if ready is not None:
        ready.set()
    while not stop.is_set():
        if s.poll(100):
            out.put(s.recv_multipart()[-1])
    s.close(0)


def consume(uri: str, *, topic: str | list[str] | None = None, columns: bool = False, dedup: bool = True,
            timeout: float | None = None, options: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the messages at ``uri`` (see the module docstring)."""
    keep = Dedup() if dedup else (lambda m: True)
    conv = to_message if columns else (lambda m: m)
    if "://" not in uri:
        with open(uri, "rb") as f:
            for line in f:
                if line.strip():
                    m = orjson.loads(line)
                    if keep(m):
                        yield conv(m)
        return
    u = urlparse(uri)
    readers = {"mqtt": _mqtt, "redis": _redis, "kafka": _kafka, "zmq+tcp": _zmq, "zmq+ipc": _zmq}
    if u.scheme not in readers:
        raise ValueError(f"consume: unsupported URI scheme {u.scheme!r} (expected one of {sorted(readers)} or a file)")
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    t = threading.Thread(target=readers[u.scheme], args=(u, topic, dict(options or {}), q, stop), daemon=True,
                         name="vidflow-consume")
    t.start()
    try:
        last = time.monotonic()
        while True:
            try:
                payload = q.get(timeout=0.05)
            except queue.Empty:
                if timeout is not None and time.monotonic() - last > timeout:
                    return
                continue
            last = time.monotonic()
            m = decode(payload)
            if keep(m):
                yield conv(m)
    finally:
        stop.set()
        t.join(5)


class _CallableModule(types.ModuleType):
    """``vidflow.consume`` is both this module and its function: once the module is imported it
    shadows the lazy export in ``vidflow/__init__.py``, so calling the module calls :func:`consume`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        return consume(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
