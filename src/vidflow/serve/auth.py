"""Who may talk to the server, and how much.

- :func:`parse_bind` / :func:`resolve_token`: the server binds ``127.0.0.1`` by default; any
  other address needs a bearer token, taken from the ``token`` argument, a file
  (``token_file``) or the ``VIDFLOW_TOKEN`` environment variable - never from the pipeline YAML.
  A token given on a loopback bind is enforced too.
- :class:`Guard`: pure ASGI middleware (HTTP and WebSocket). Every path except ``/livez`` needs
  the token when one is set: ``Authorization: Bearer <token>``, or the ``vidflow_token``
  cookie that opening the live page as ``/view?token=...`` sets (a browser cannot send
  headers on a page or a WebSocket). The cookie is accepted for reading only; requests that
  change something (POST, DELETE) need the header. Also: request bodies over ``max_body``
  bytes get 413; a request from a browser page of another origin (its ``Origin`` header) that
  would change something, or that opens the view's WebSocket, gets 403 (no cross-site
  requests against a loopback server); on a
  loopback bind the ``Host`` header must be a loopback name (DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

__all__ = ["parse_bind", "is_loopback", "resolve_token", "Guard", "BodyTooLarge", "COOKIE", "MIN_TOKEN_LEN"]

log = logging.getLogger(__name__)

COOKIE = "vidflow_token"
MIN_TOKEN_LEN = 16
_OPEN_PATHS = ("/livez",)
_READ_METHODS = ("GET", "HEAD")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def parse_bind(http: str | int) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``":8080"``, ``"8080"`` or ``8080`` (loopback) -> (host, port)."""
    if isinstance(http, bool) or not isinstance(http, (str, int)):
        raise ValueError(f"http: expected 'HOST:PORT' or a port, got {http!r}")
    text = str(http).strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"http: expected HOST:PORT, got {http!r}")
        host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"http: port must be 0..65535, got {port!r} in {http!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None = None, token_file: str | os.PathLike | None = None) -> str | None:
    """The token the server enforces (None: no auth, loopback only). Raises ``ValueError``
    naming what to set when a non-loopback bind has none, or the token is too short."""
    if token is not None and token_file is not None:
        raise ValueError("token and token_file: give one, not both")
    if token_file is not None:
        p = Path(token_file)
        try:
            token = p.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ValueError(f"token_file: cannot read {p}: {e.strerror or e}") from e
        if os.name == "posix" and p.stat().st_mode & 0o077:
            log.warning("token file %s is readable by other users (chmod 600 it)", p)
    if token is None:
        token = os.environ.get("VIDFLOW_TOKEN") or None
    if token is None:
        if not is_loopback(host):
            raise ValueError(f"http: binding {host} (not loopback) needs a token: set VIDFLOW_TOKEN or pass "
                             f"--token-file (the server refuses to start without one)")
        return None
    if len(token) < MIN_TOKEN_LEN or not token.isprintable() or " " in token:
        raise ValueError(f"token: expected at least {MIN_TOKEN_LEN} printable characters without spaces")
    return token


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_error(scope: Scope, send: Callable, code: int, message: str, extra: list | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + code, "reason": message[:120]})
        return
    body = json.dumps({"error": message, "status": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware enforcing the token, the body limit, the Host and the Origin rules."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool, max_body: int = 64 * 1024) -> None:
        if int(max_body) < 1:
            raise ValueError(f"max_body must be >= 1 byte, got {max_body}")
        self.app, self.token, self.loopback, self.max_body = app, token, loopback, int(max_body)

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())   # type: ignore[union-attr]

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        h = _headers(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if self.loopback:
            raw = h.get("host", "")
            host = raw.split("]", 1)[0] + "]" if raw.startswith("[") else raw.rsplit(":", 1)[0]
            if host and host not in _LOOPBACK_NAMES:
                return await _send_error(scope, send, 403, "Host header: this server answers loopback names only")
        changes = scope["type"] == "http" and method not in _READ_METHODS
        origin = h.get("origin")
        if (changes or scope["type"] == "websocket") and origin is not None \
                and origin.split("://", 1)[-1] != h.get("host", ""):
            return await _send_error(scope, send, 403, "Origin: cross-site requests that change state, and "
                                                       "cross-site WebSockets, are refused")
        if self.token is not None and path not in _OPEN_PATHS:
            auth = h.get("authorization", "")
            bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            cookie = SimpleCookie(h.get("cookie", "")).get(COOKIE)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            ok = self._token_ok(bearer)
            if not ok and not changes:
                ok = self._token_ok(cookie.value if cookie is not None else None) or (
                    path == "/view" and self._token_ok(query))
            if not ok:
                return await _send_error(scope, send, 401, "a valid bearer token is required",
                                         [(b"www-authenticate", b'Bearer realm="vidflow"')])
            if path == "/view" and query is not None:      # page opened with ?token=: keep it in a cookie
                return await self._set_cookie(send)
        if scope["type"] == "http" and changes:
            length = h.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await _send_error(scope, send, 413, f"request body: at most {self.max_body} bytes")
            receive = self._limited(receive, scope, send)
        return await self.app(scope, receive, send)

    async def _set_cookie(self, send: Callable) -> None:
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/view"), (b"set-cookie", cookie), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def _limited(self, receive: Callable, scope: Scope, send: Callable) -> Callable:
        seen = 0
        limit = self.max_body

        async def wrapped() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return msg

        return wrapped


class BodyTooLarge(Exception):
    """A streamed request body went past the limit (the handler answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body: at most {limit} bytes")
