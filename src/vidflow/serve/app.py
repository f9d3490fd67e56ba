"""The ASGI app (Starlette) and the server thread (uvicorn) beside a running pipeline.

:func:`start` is the one entry point (``vidflow serve``, ``Pipeline(http=...)`` and YAML
``http:`` all go through it). Endpoints:

============================  =====================================================================
``/livez``                    200 while the loop ticks (no token needed)
``/readyz``, ``/startupz``    200 / 503 with a JSON reason (see :mod:`vidflow.serve.health`)
``/metrics``                  Prometheus text format (see :mod:`vidflow.serve.metrics`)
``/api/v1/...``               sources and DeepStream's stream API (see :mod:`vidflow.serve.control`)
``/api/v1/status``            the run summary and the probes as JSON
``/view``                     the live page; ``/view/ws`` its frames; ``/view/frame.jpg?source=ID``
============================  =====================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import redact_uri
from . import _glue
from ._page import PAGE
from .auth import Guard, is_loopback, parse_bind, resolve_token
from .control import Control, routes
from .health import Monitor
from .metrics import PipelineCollector, TimingObserver, build_registry
from .view import Viewer, ViewSink

__all__ = ["Server", "start", "build_app"]

log = logging.getLogger(__name__)


def _cuda_index(pipe: Any) -> int | None:
    dev = getattr(pipe, "device", None)
    if dev is None or getattr(dev, "type", None) != "cuda":
        return None
    return dev.index if dev.index is not None else 0


def _low_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)    # Linux: this thread only


class _Parts:
    """What the app serves from, built once per server."""

    def __init__(self, pipe: Any, *, monitor: Monitor, view: ViewSink, view_fps: float) -> None:
        self.pipe, self.monitor, self.view = pipe, monitor, view
        self.view_fps = view_fps
        self.collector = PipelineCollector(lambda: _glue.snapshot(pipe), monitor,
                                           sinks=lambda: list(getattr(pipe, "sinks", ())),
                                           cuda=lambda: _cuda_index(pipe))
        self.registry = build_registry(self.collector)
        batch_size = int(getattr(getattr(pipe, "muxer", None), "batch_size", 1) or 1)
        self.observer = TimingObserver(self.registry, batch_size=batch_size)
        self.view_latency = Histogram("vidflow_view_latency_seconds",
                                      "Live view: frame receipt by the pipeline to the image shown in the page",
                                      registry=self.registry,
                                      buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0))
        self.viewer = Viewer(view)
        # one encoder thread, at the lowest CPU priority (Linux: per thread), so the live view
        # takes only CPU the pipeline leaves
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="vidflow-view-encoder", initializer=_low_priority)
        self.control = Control(pipe, monitor)


def build_app(parts: _Parts, *, token: str | None, loopback: bool, control: bool = True,
              max_body: int = 64 * 1024, sample_every: float = 0.5) -> Guard:
    """The Starlette app behind its :class:`~vidflow.serve.auth.Guard`."""
    pipe, monitor = parts.pipe, parts.monitor

    def fresh() -> None:
        monitor.sample(_glue.snapshot(pipe))

    def probe(fn: Any) -> Any:
        async def handler(request: Request) -> JSONResponse:
            await run_in_threadpool(fresh)
            ok, details = fn()
            return JSONResponse({"status": "ok" if ok else "fail", **details}, status_code=200 if ok else 503)
        return handler

    async def metrics(request: Request) -> Response:
        data = await run_in_threadpool(generate_latest, parts.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> JSONResponse:
        recs = await run_in_threadpool(parts.control.records)
        s = _glue.snapshot(pipe)
        out = {"running": _glue.running(s), "batches": s.batches, "frames": s.frames, "fps": round(s.fps, 2),
               "sources": recs, "livez": monitor.livez()[0], "readyz": monitor.readyz()[0],
               "startupz": monitor.startupz()[0], "view_watching": parts.view.watching}
        return JSONResponse(json.loads(redact_uri(json.dumps(out, default=str))))

    async def page(request: Request) -> HTMLResponse:
        parts.view.watch()
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store",
                                           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                                                      "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    async def frame(request: Request) -> Response:
        src = request.query_params.get("source") or None
        parts.view.watch()
        for _ in range(40):                       # the sink copies from the next batch on
            got = await asyncio.get_running_loop().run_in_executor(parts.encoder, parts.viewer.jpeg, src)
            if got is not None:
                return Response(got[0], media_type="image/jpeg", headers={"Cache-Control": "no-store"})
            await asyncio.sleep(0.05)
        return JSONResponse({"error": f"no frame yet from {src or 'any source'}", "status": 503}, status_code=503)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        src = websocket.query_params.get("source") or None
        last_seq, period = -1, 1.0 / parts.view_fps
        try:
            while True:
                parts.view.watch()
                t0 = time.monotonic()
                got = await asyncio.get_running_loop().run_in_executor(parts.encoder, parts.viewer.jpeg, src)
                if got is None or got[1]["seq"] == last_seq:
                    await asyncio.sleep(period / 2)
                    continue
                data, meta = got
                last_seq = meta["seq"]
                await websocket.send_text(json.dumps({"seq": meta["seq"], "source": src, "ntp_ms": meta["ntp_ms"]}))
                await websocket.send_bytes(data)
                with anyio.move_on_after(10):     # one frame in flight: wait for the page's ack
                    ack = json.loads(await websocket.receive_text())
                    shown = ack.get("shown_ms")
                    if isinstance(shown, (int, float)) and 0 <= shown < 3.6e6:
                        parts.view_latency.observe(shown / 1000)
                await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            return

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async def sampler() -> None:
            while True:
                with contextlib.suppress(Exception):
                    await run_in_threadpool(fresh)
                await asyncio.sleep(sample_every)
        task = asyncio.create_task(sampler())
        try:
            yield
        finally:
            task.cancel()
            parts.encoder.shutdown(wait=False, cancel_futures=True)

    async def livez(request: Request) -> JSONResponse:     # no pipeline details without a token
        await run_in_threadpool(fresh)
        ok, details = monitor.livez()
        body = {"status": "ok" if ok else "fail"}
        if not ok:
            body["reason"] = details.get("reason", "")
        return JSONResponse(body, status_code=200 if ok else 503)

    app = Starlette(routes=[
        Route("/livez", livez), Route("/readyz", probe(monitor.readyz)), Route("/startupz", probe(monitor.startupz)),
        Route("/metrics", metrics), Route("/api/v1/status", status),
        Route("/", lambda r: RedirectResponse("/view")), Route("/view", page), Route("/view/frame.jpg", frame),
        WebSocketRoute("/view/ws", ws), *routes(parts.control, enabled=control),
    ], lifespan=lifespan)
    return Guard(app, token=token, loopback=loopback, max_body=max_body)


class Server:
    """A running HTTP server beside a pipeline: ``url``, ``stop()``; a context manager."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, sock: socket.socket) -> None:
        self._server, self._thread, self.url, self._sock = server, thread, url, sock

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (open connections are closed); idempotent."""
        self._server.should_exit = True
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Server({self.url}, running={self.running})"


def start(pipeline: Any, http: str | int = "127.0.0.1:8080", *, token: str | None = None,
          token_file: str | None = None, control: bool = True, max_body: int = 64 * 1024,
          view_fps: float = 5.0, fps_window_s: float = 5.0, stall_after_s: float = 10.0,
          hang_after_s: float = 120.0, startup_timeout: float = 10.0) -> Server:
    """Serve metrics, probes, the control API and the live view of ``pipeline`` on a background
    thread (uvicorn). Call before or after ``pipeline.run()`` starts.

    ``http``: ``"HOST:PORT"`` or a port (port 0: any free one; see ``Server.url``). A bind that is
    not loopback needs a token (``token``, ``token_file`` or ``$VIDFLOW_TOKEN``), else
    ``ValueError``; with a token every endpoint but ``/livez`` checks it. ``control=False``: sources
    can be listed, not added or removed. ``max_body``: request body limit in bytes. ``view_fps``:
    the live view's frame rate per viewer (and per source kept by the view sink).
    ``fps_window_s`` / ``stall_after_s`` / ``hang_after_s``: see :class:`~vidflow.serve.health.Monitor`.
    """
    import uvicorn

    host, port = parse_bind(http)
    tok = resolve_token(host, token, token_file)
    monitor = Monitor(window_s=fps_window_s, stall_after_s=stall_after_s, hang_after_s=hang_after_s)
    view = ViewSink(max_fps=view_fps)
    parts = _Parts(pipeline, monitor=monitor, view=view, view_fps=view_fps)
    app = build_app(parts, token=tok, loopback=is_loopback(host), control=control, max_body=max_body)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"http: cannot bind {host}:{port}: {e.strerror or e}") from e
    sock.listen(128)
    sock.set_inheritable(True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="auto",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="vidflow-serve", daemon=True)
    _glue.attach_sink(pipeline, view)
    _glue.attach_observer(pipeline, parts.observer)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        sock.close()
        raise RuntimeError(f"the HTTP server did not start on {host}:{port} within {startup_timeout} s")
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    url = f"http://{shown}:{bound[1]}"
    log.warning("vidflow: serving %s (%s)", url, "token required" if tok else "no token: loopback only")
    return Server(server, thread, url, sock)

