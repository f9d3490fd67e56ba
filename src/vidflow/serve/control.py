"""The control API: list, add and remove sources of a running pipeline over HTTP.

Two dialects over the same ``Pipeline.add_source`` / ``remove_source``:

**DeepStream's** ``nvmultiurisrcbin`` REST API (nvds_rest_server), so existing tooling works.
Bodies as documented for DeepStream 6.2+ (docs.nvidia.com/metropolis/deepstream/dev-guide,
"Gst-nvmultiurisrcbin" and "DeepStream With REST API Server"; fields of
``NvDsServerStreamInfo`` in sources/includes/nvds_rest_server.h)::

    POST /api/v1/stream/add     {"key": "sensor", "value": {"camera_id": "cam1", "camera_name": "door",
                                 "camera_url": "rtsp://...", "change": "camera_add",
                                 "metadata": {...}}, "headers": {"source": "...", "created_at": "..."}}
    POST /api/v1/stream/remove  {"key": "sensor", "value": {"camera_id": "cam1", "change": "camera_remove"}}
    GET  /api/v1/stream/get-stream-info
      -> {"reason": "GET_LIVE_STREAM_INFO_SUCCESS", "status": "HTTP/1.1 200 OK",
          "stream-info": {"stream-count": N, "stream-info": [{"camera_id": ..., "camera_name": ...}]}}

Answers carry ``status`` ("HTTP/1.1 200 OK") and ``reason`` (STREAM_ADD_SUCCESS / STREAM_ADD_FAIL /
STREAM_REMOVE_SUCCESS / STREAM_REMOVE_FAIL) like DeepStream 7's; a failure also has ``error``
naming the field. ``camera_id`` becomes the vidflow source id; ``camera_url`` picks the source:
rtsp(s):// -> ``rtsp``, file:// or a path -> ``file``, any other scheme -> ``uri``.

**vidflow's own**::

    GET    /api/v1/sources            {"sources": [{"id", "uri", "state", "fps", "frames", ...}]}
    GET    /api/v1/sources/{id}
    POST   /api/v1/sources            {"id": "cam9", "source": {"file": {"path": "cam9.mp4"}}}  or  {"uri": "rtsp://..."}
    DELETE /api/v1/sources/{id}

``source`` is a YAML source item, checked like the YAML (kinds of the name table only: no
``module:Name`` code over HTTP). Errors: 400 (bad body, naming the field), 404 (no such
source), 409 (id in use, or the pipeline not running), 413 (body too large). URIs are always
shown with their password removed.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import ConfigError, redact_uri
from . import _glue
from .auth import BodyTooLarge
from .health import Monitor, canonical_state

__all__ = ["Control", "routes", "source_item_for_url", "HttpError"]

log = logging.getLogger(__name__)

_PHRASES = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large"}


class HttpError(Exception):
    """A request the control API refuses: ``status`` 400/404/409/413, ``field`` it is about."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status, self.field, self.message = status, field, redact_uri(message)

    def body(self) -> dict:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return {"error": redact_uri(text), "field": self.field, "status": self.status}


def source_item_for_url(url: str, field: str = "camera_url") -> dict:
    """A camera URL as a YAML source item: rtsp(s):// -> rtsp, file:// or a path -> file, else uri."""
    if not isinstance(url, str) or not url.strip():
        raise HttpError(400, field, "expected a non-empty string")
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp": {"url": url}}
    if scheme == "file":
        return {"file": {"path": url[len("file://"):]}}
    if scheme == "":
        return {"file": {"path": url}}
    return {"uri": {"uri": url}}


class Control:
    """Adds, removes and describes the sources of ``pipe`` (a running ``Pipeline``)."""

    def __init__(self, pipe: Any, monitor: Monitor) -> None:
        self.pipe, self.monitor = pipe, monitor
        self.names: dict[Any, str] = {}          # DeepStream camera_name per source id

    # -- reading -------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        s = _glue.snapshot(self.pipe)
        self.monitor.sample(s)
        health = self.monitor.sources()
        return [self._record(sid, st, health.get(sid)) for sid, st in s.sources.items() if st.state != "removed"]

    def record(self, text: str) -> dict:
        for r in self.records():
            if str(r["id"]) == text:
                return r
        raise HttpError(404, "id", f"no source with id {text!r}")

    def _record(self, sid: Any, st: Any, h: Any) -> dict:
        return {"id": sid, "name": self.names.get(sid, str(sid)), "uri": redact_uri(st.uri), "live": st.live,
                "state": h.state if h is not None else canonical_state(st.state),
                "fps": round(h.fps, 2) if h is not None else 0.0, "frames": st.frames, "decoded": st.decoded,
                "dropped": st.dropped, "errors": st.errors, "reconnects": st.reconnects, "stalls": st.stalls,
                "seconds_since_last_frame": None if h is None or h.since_frame_s is None else round(h.since_frame_s, 3),
                "last_error": redact_uri(st.last_error or (st.error if st.error is not None else ""))}

    def _find(self, text: str) -> Any:
        for sid, st in _glue.snapshot(self.pipe).sources.items():
            if str(sid) == str(text) and st.state != "removed":
                return sid
        return None

    # -- changing ------------------------------------------------------------------------------
    def add(self, item: Any, source_id: Any = None, *, name: str | None = None) -> Any:
        if not _glue.running(_glue.snapshot(self.pipe)):
            raise HttpError(409, "", "the pipeline is not running")
        if source_id is not None:
            if isinstance(source_id, bool) or not isinstance(source_id, (int, str)) or source_id == "":
                raise HttpError(400, "id", f"expected a non-empty string or an integer, got {source_id!r}")
            if self._find(str(source_id)) is not None:
                raise HttpError(409, "id", f"source id {source_id!r} is already in use")
        kinds = _glue.source_kinds()
        if not isinstance(item, dict) or len(item) != 1:
            raise HttpError(400, "source", "expected one 'kind: arguments' entry, e.g. {\"file\": {\"path\": \"cam.mp4\"}}")
        kind = next(iter(item))
        if kind not in kinds:
            raise HttpError(400, f"source.{kind}", f"unknown kind; allowed over HTTP: {', '.join(kinds)}")
        args = item[kind]
        path = args.get("path") if isinstance(args, dict) else args
        if kind == "file" and isinstance(path, str) and not os.path.exists(path):
            raise HttpError(400, "source.file.path", f"no such file: {path}")
        try:
            src = _glue.build_source(item)
        except ConfigError as e:
            raise HttpError(400, _field(e.path), str(e).partition(": ")[2] or str(e)) from e
        try:
            sid = self.pipe.add_source(src, source_id)
        except ValueError as e:
            try:
                src.close()
            finally:
                raise HttpError(409, "id", str(e)) from e
        if name:
            self.names[sid] = str(name)
        log.info("source %s added over HTTP (%s)", sid, redact_uri(getattr(src, "uri", kind)))
        return sid

    def remove(self, text: str) -> Any:
        sid = self._find(text)
        if sid is None:
            raise HttpError(404, "id", f"no source with id {text!r}")
        try:
            self.pipe.remove_source(sid)
        except KeyError as e:
            raise HttpError(404, "id", f"source {text!r} has already ended") from e
        self.names.pop(sid, None)
        log.info("source %s removed over HTTP", sid)
        return sid


def _field(path: str) -> str:
    return "source" + path[len("sources[0]"):] if path.startswith("sources[0]") else (path or "source")


async def _json(request: Request) -> Any:
    try:
        raw = await request.body()
    except BodyTooLarge as e:
        raise HttpError(413, "body", str(e)) from e
    try:
        return json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HttpError(400, "body", f"not valid JSON: {e}") from e


def _need(obj: Any, key: str, where: str, kind: type | tuple = str) -> Any:
    if not isinstance(obj, dict):
        raise HttpError(400, where, "expected a JSON object")
    if key not in obj:
        raise HttpError(400, f"{where}.{key}" if where != "body" else key, "required")
    v = obj[key]
    if not isinstance(v, kind) or isinstance(v, bool) or v == "":
        raise HttpError(400, f"{where}.{key}" if where != "body" else key, f"expected a non-empty {getattr(kind, '__name__', 'value')}")
    return v


def _ds(status: int, reason: str, extra: dict | None = None) -> JSONResponse:
    return JSONResponse({"status": f"HTTP/1.1 {status} {_PHRASES.get(status, '')}".strip(), "reason": reason,
                         **(extra or {})}, status_code=status)


async def _sensor(request: Request, change: str, path: str) -> dict:
    """The ``value`` of a DeepStream ``{"key": "sensor", "value": {...}}`` body whose ``change``
    (default ``change``) must be ``change``."""
    body = await _json(request)
    if _need(body, "key", "body") != "sensor":
        raise HttpError(400, "key", "expected 'sensor'")
    value = body.get("value")
    _need(value, "camera_id", "value")
    got = value.get("change", change)
    if got != change:
        raise HttpError(400, "value.change", f"expected {change!r} on {path}, got {got!r}")
    return value


def routes(control: Control, *, enabled: bool = True) -> list[Route]:
    """The control API's routes. ``enabled=False``: the reads stay, every change gets 403."""

    async def ds_add(request: Request) -> JSONResponse:
        try:
            value = await _sensor(request, "camera_add", "/stream/add")
            cam = value["camera_id"]
            url = _need(value, "camera_url", "value")
            item = source_item_for_url(url, "value.camera_url")
            try:
                await run_in_threadpool(control.add, item, cam, name=value.get("camera_name") or cam)
            except HttpError as e:
                if e.field.startswith("source"):       # in DeepStream's terms: the URL is wrong
                    e.field = "value.camera_url"
                raise
        except HttpError as e:
            return _ds(e.status, "STREAM_ADD_FAIL", {"error": str(e.body()["error"]), "field": e.field})
        return _ds(200, "STREAM_ADD_SUCCESS")

    async def ds_remove(request: Request) -> JSONResponse:
        try:
            value = await _sensor(request, "camera_remove", "/stream/remove")
            await run_in_threadpool(control.remove, value["camera_id"])
        except HttpError as e:
            return _ds(e.status, "STREAM_REMOVE_FAIL", {"error": str(e.body()["error"]), "field": e.field})
        return _ds(200, "STREAM_REMOVE_SUCCESS")

    async def ds_info(request: Request) -> JSONResponse:
        recs = await run_in_threadpool(control.records)
        info = [{"camera_id": str(r["id"]), "camera_name": r["name"]} for r in recs
                if r["state"] not in ("ended", "failed")]
        return _ds(200, "GET_LIVE_STREAM_INFO_SUCCESS", {"stream-info": {"stream-count": len(info), "stream-info": info}})

    async def list_sources(request: Request) -> JSONResponse:
        return JSONResponse({"sources": await run_in_threadpool(control.records)})

    async def one_source(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(control.record, request.path_params["source_id"]))
        except HttpError as e:
            return JSONResponse(e.body(), status_code=e.status)

    async def add_source(request: Request) -> JSONResponse:
        try:
            body = await _json(request)
            if not isinstance(body, dict):
                raise HttpError(400, "body", "expected a JSON object with 'source' or 'uri'")
            unknown = [k for k in body if k not in ("id", "source", "uri", "name")]
            if unknown:
                raise HttpError(400, unknown[0], "unknown key; allowed: id, name, source, uri")
            if ("source" in body) == ("uri" in body):
                raise HttpError(400, "source", "give exactly one of 'source' (a YAML source item) or 'uri'")
            item = body["source"] if "source" in body else source_item_for_url(body["uri"], "uri")
            sid = await run_in_threadpool(control.add, item, body.get("id"), name=body.get("name"))
            rec = await run_in_threadpool(control.record, str(sid))
        except HttpError as e:
            return JSONResponse(e.body(), status_code=e.status)
        return JSONResponse({"source": rec}, status_code=201)

    async def delete_source(request: Request) -> JSONResponse:
        try:
            sid = await run_in_threadpool(control.remove, request.path_params["source_id"])
        except HttpError as e:
            return JSONResponse(e.body(), status_code=e.status)
        return JSONResponse({"removed": sid})

    async def off(request: Request) -> JSONResponse:
        return JSONResponse({"error": "the control API is turned off (serve with control=True / without "
                                      "--no-control to add or remove sources)", "field": "", "status": 403},
                            status_code=403)

    add, remove, ds_a, ds_r = (add_source, delete_source, ds_add, ds_remove) if enabled else (off, off, off, off)
    return [
        Route("/api/v1/stream/add", ds_a, methods=["POST"]),
        Route("/api/v1/stream/remove", ds_r, methods=["POST"]),
        Route("/api/v1/stream/get-stream-info", ds_info, methods=["GET"]),
        Route("/api/v1/sources", list_sources, methods=["GET"]),
        Route("/api/v1/sources", add, methods=["POST"]),
        Route("/api/v1/sources/{source_id}", one_source, methods=["GET"]),
        Route("/api/v1/sources/{source_id}", remove, methods=["DELETE"]),
    ]
