"""The transport contract used by :class:`~vidflow.sinks.broker.BrokerSink`.

``connect()`` opens the connection; ``publish(topic, key, payload)`` hands one message over;
``flush(timeout)`` returns once every message published since the last flush is acknowledged
by the broker (or written, for transports without acknowledgements). Both raise
:class:`TransportUnavailable` when the broker cannot be reached (the sink keeps the messages in
its spool and retries) and :class:`~vidflow.errors.SinkError` for what retrying cannot fix
(refused credentials, unknown host, bad topic). ``close()`` never raises.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, runtime_checkable

from ...errors import SinkError

__all__ = ["Transport", "TransportUnavailable", "import_client"]


class TransportUnavailable(Exception):
    """The broker can't be reached now; retry later (messages stay spooled)."""


@runtime_checkable
class Transport(Protocol):
    name: str
    default_topic: str

    def connect(self) -> None: ...

    def publish(self, topic: str, key: str, payload: bytes) -> None: ...

    def flush(self, timeout: float) -> None: ...

    def close(self) -> None: ...


def import_client(module: str, extra: str, what: str) -> ModuleType:
    """Import a transport's client library, or raise SinkError with the ``pip install`` line."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SinkError(f"{what}: needs the {module.split('.')[0]!r} package: pip install 'vidflow[{extra}]'"
                        f" ({e})") from e
