"""Redis Streams through redis-py (``pip install 'vidflow[redis]'``): ``XADD <topic> MAXLEN ~ N``
with fields ``key`` and ``payload``; one pipelined round trip per flush."""

from __future__ import annotations

from typing import Any

from ...errors import SinkError, redact_uri
from .base import TransportUnavailable, import_client

__all__ = ["RedisTransport"]


class RedisTransport:
    """Redis Streams (redis-py): ``XADD`` per record to the stream named by the topic.

    Args:
        url: ``redis://[user:pass@]host:port/db`` (``rediss://`` for TLS); credentials are redacted.
        maxlen: approximate cap on each stream's length (``None``: unbounded).
        username / password: credentials, when not in the URL.
        socket_timeout: seconds for each command.
    """

    name = "redis"
    default_topic = "vidflow:{source_id}:frames"

    def __init__(self, url: str = "redis://localhost:6379/0", *, maxlen: int | None = 1_000_000,
                 username: str | None = None, password: str | None = None, socket_timeout: float = 5.0) -> None:
        self.url, self.maxlen, self.username, self.password = str(url), maxlen, username, password
        self.socket_timeout = float(socket_timeout)
        self._r: Any = None
        self._pipe: Any = None

    def __repr__(self) -> str:
        return f"RedisTransport({redact_uri(self.url)})"

    def _errors(self) -> Any:
        return import_client("redis", "redis", "redis sink")

    def connect(self) -> None:
        redis = self._errors()
        r = redis.Redis.from_url(self.url, username=self.username, password=self.password,
                                 socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout)
        try:
            r.ping()
        except redis.AuthenticationError as e:
            raise SinkError(f"redis sink: {redact_uri(self.url)} refused the credentials: {e}") from e
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if "Name or service not known" in str(e) or "nodename nor servname" in str(e):
                raise SinkError(f"redis sink: unknown host in {redact_uri(self.url)}: {e}") from e
            raise TransportUnavailable(f"{redact_uri(self.url)}: {e}") from e
        except redis.ResponseError as e:
            raise SinkError(f"redis sink: {redact_uri(self.url)}: {e}") from e
        self._r, self._pipe = r, r.pipeline(transaction=False)

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        if self._pipe is None:
            raise TransportUnavailable("redis: not connected")
        kw = {"maxlen": self.maxlen, "approximate": True} if self.maxlen else {}
        self._pipe.xadd(topic, {"key": key, "payload": payload}, **kw)

    def flush(self, timeout: float) -> None:
        if self._pipe is None:
            raise TransportUnavailable("redis: not connected")
        redis = self._errors()
        try:
            self._pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise TransportUnavailable(f"{redact_uri(self.url)}: {e}") from e
        except redis.ResponseError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                raise SinkError(f"redis sink: {redact_uri(self.url)}: {e}") from e
            raise TransportUnavailable(f"{redact_uri(self.url)}: {e}") from e

    def close(self) -> None:
        r, self._r, self._pipe = self._r, None, None
        if r is not None:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                pass
