"""HTTP webhook (stdlib, no extra): each flush POSTs the messages of one URL as one body of
newline-separated payloads (``application/x-ndjson`` for JSON encoders). The sink's topic
template is the URL (``http://host/hook/{source_id}``). 2xx = delivered; 401/403/404/405 stop
the sink with an error naming it; connection errors, timeouts and 5xx/429 are retried."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import OrderedDict

from ...errors import SinkError, redact_uri
from .base import TransportUnavailable

__all__ = ["WebhookTransport"]

_FATAL = {400, 401, 403, 404, 405, 410, 413}


class WebhookTransport:
    """HTTP(S) POST of newline-delimited records to a URL (stdlib ``urllib``); 2xx acknowledges.

    Args:
        url: ``http(s)://...``, may contain ``{source_id}``; credentials in it are redacted in logs.
        headers: extra request headers (e.g. an ``Authorization`` value).
        timeout: seconds per request.
        content_type: the ``Content-Type`` header of each request.
    """

    name = "webhook"

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 5.0,
                 content_type: str = "application/x-ndjson") -> None:
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"url: expected http:// or https://, got {redact_uri(url)!r}")
        self.url, self.headers, self.timeout, self.content_type = str(url), dict(headers or {}), float(timeout), content_type
        self.default_topic = self.url
        self._pending: OrderedDict[str, list[bytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"WebhookTransport({redact_uri(self.url)})"

    def connect(self) -> None:
        self._pending = OrderedDict()

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        self._pending.setdefault(topic, []).append(payload)

    def flush(self, timeout: float) -> None:
        while self._pending:
            url, bodies = next(iter(self._pending.items()))
            req = urllib.request.Request(url, data=b"\n".join(bodies) + b"\n", method="POST",
                                         headers={"Content-Type": self.content_type, **self.headers})
            try:
                with urllib.request.urlopen(req, timeout=min(timeout, self.timeout)) as r:
                    r.read()
            except urllib.error.HTTPError as e:
                if e.code in _FATAL:
                    raise SinkError(f"webhook sink: {redact_uri(url)} answered {e.code} {e.reason}") from e
                raise TransportUnavailable(f"webhook {redact_uri(url)}: {e.code} {e.reason}") from e
            except (urllib.error.URLError, OSError) as e:
                raise TransportUnavailable(f"webhook {redact_uri(url)}: {e}") from e
            self._pending.popitem(last=False)

    def close(self) -> None:
        self._pending = OrderedDict()
