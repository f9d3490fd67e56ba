"""ZeroMQ through pyzmq (``pip install 'vidflow[zmq]'``): a PUSH or PUB socket sending
``[topic, key, payload]`` frames. ZeroMQ has no acknowledgements: a message counts as delivered
once the socket took it; PUSH with no connected peer (or at its high-water mark) refuses it, so
it stays spooled; PUB drops messages nobody subscribed to (ZeroMQ's own rule)."""

from __future__ import annotations

from typing import Any, Literal

from ...errors import SinkError
from .base import TransportUnavailable, import_client

__all__ = ["ZmqTransport"]


class ZmqTransport:
    """ZeroMQ (pyzmq): multipart ``[topic, record]`` messages on a PUSH or PUB socket.

    Args:
        endpoint: ``tcp://host:port`` (or ``ipc://...``).
        socket: ``"push"`` (load-balanced to pullers, blocks when none) or ``"pub"`` (fan-out, drops when none).
        bind: bind the endpoint instead of connecting to it.
        hwm: the socket's high-water mark (messages queued per peer).
    """

    name = "zmq"
    default_topic = "vidflow/{source_id}/frames"

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5556", *, socket: Literal["push", "pub"] = "push",
                 bind: bool = False, hwm: int = 10_000) -> None:
        if socket not in ("push", "pub"):
            raise ValueError(f"socket: expected 'push' or 'pub', got {socket!r}")
        self.endpoint, self.socket, self.bind, self.hwm = str(endpoint), socket, bool(bind), int(hwm)
        self._s: Any = None

    def __repr__(self) -> str:
        return f"ZmqTransport({self.socket} {self.endpoint})"

    def connect(self) -> None:
        zmq = import_client("zmq", "zmq", "zmq sink")
        s = zmq.Context.instance().socket(zmq.PUSH if self.socket == "push" else zmq.PUB)
        s.setsockopt(zmq.SNDHWM, self.hwm)
        s.setsockopt(zmq.LINGER, 1000)
        # queue only to completed connections: with no peer yet, PUSH refuses (the message stays spooled)
        s.setsockopt(zmq.IMMEDIATE, 1)
        try:
            s.bind(self.endpoint) if self.bind else s.connect(self.endpoint)
        except zmq.ZMQError as e:
            s.close(0)
            raise SinkError(f"zmq sink: cannot {'bind' if self.bind else 'connect'} {self.endpoint}: {e}") from e
        self._s = s

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        zmq = import_client("zmq", "zmq", "zmq sink")
        if self._s is None:
            raise TransportUnavailable("zmq: not connected")
        try:
            self._s.send_multipart([topic.encode(), key.encode(), payload], flags=zmq.NOBLOCK)
        except zmq.Again as e:
            raise TransportUnavailable(f"zmq {self.endpoint}: no peer ready (or high-water mark reached)") from e

    def flush(self, timeout: float) -> None:
        if self._s is None:
            raise TransportUnavailable("zmq: not connected")

    def close(self) -> None:
        s, self._s = self._s, None
        if s is not None:
            s.close(linger=1000)
