"""``PipelineWorker``: one pipeline in one process, cameras added and removed while it runs.

The fleet runs it as a Ray actor (``fleet.py`` wraps it with ``ray.remote``; one per GPU, or a
GPU share), but it is a plain class: tests and single-machine users can hold one in-process.
The process belongs to the worker, so the process-wide settings do too: its environment
(``env``, applied before anything is built), the log level, torch's threads (the pipeline's
``torch_threads``), ``gc.freeze`` after warm-up, decode processes.

Methods (each returns plain data, so they cross Ray unchanged): :meth:`add`, :meth:`remove`,
:meth:`status` (cameras with their state, counters and acknowledged frames), :meth:`snapshot`,
:meth:`records`, :meth:`stop`. All calls into the ``Pipeline`` API are in this file, so a change
there is one edit here.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, VidflowError
from ._parts import KEEPALIVE_ID, AckSink, KeepAlive, Resume

__all__ = ["PipelineWorker", "worker_sink_path", "worker_http"]

log = logging.getLogger("vidflow.fleet")

_TERMINAL = ("ended", "failed", "removed", "stopped")


def worker_sink_path(path: str, worker_id: str) -> str:
    """A sink's output path for one worker: ``{worker}`` in the path is replaced by the worker's
    id; otherwise the id goes before the suffix (``out/frames.jsonl`` -> ``out/frames.w0.jsonl``)."""
    if "{worker}" in path:
        return path.replace("{worker}", worker_id)
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{worker_id}{p.suffix}"))


def _end_line(path: str) -> None:
    """A file left by a killed process may end inside a line: end it, so appended lines stay whole."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        return


def _per_worker_sinks(items: list[Any], worker_id: str, restarted: bool) -> list[Any]:
    out = []
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1:
            out.append(item)
            continue
        (kind, args), = item.items()
        if isinstance(args, str):
            args = {"path": args} if kind in ("jsonl", "video", "parquet") else args
        if isinstance(args, Mapping) and isinstance(args.get("path"), str):
            args = {**args, "path": worker_sink_path(args["path"], worker_id)}
            if kind == "jsonl" and restarted:       # a restarted worker adds to what it wrote before
                args["append"] = True
                _end_line(args["path"])
        out.append({kind: args})
    return out


def worker_http(value: Any, index: int) -> Any:
    """The template's ``http`` (metrics, probes) for worker ``index``: its port raised by the
    index, so workers on one host do not collide (port 0, any free port, stays 0)."""
    if value is None or index == 0:
        return value
    if isinstance(value, int):
        return value + index if value else 0
    host, _, port = str(value).rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return value
    return f"{host}:{int(port) + index}" if host else str(int(port) + index)


def _restarted() -> bool:
    """Whether Ray restarted this actor (False outside Ray)."""
    try:
        import ray
        if not ray.is_initialized():
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - not in an actor
        return False


def _gpus() -> list[str]:
    try:
        import ray
        if ray.is_initialized():
            return [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # noqa: BLE001
        pass
    return [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]


class PipelineWorker:
    """One pipeline built from ``template`` (a pipeline YAML mapping without sources, ``_base``
    = its folder) that runs until :meth:`stop`, with cameras coming and going.

    Args:
        template: the pipeline description; its sinks' paths get the worker id (see
            :func:`worker_sink_path`); a restarted worker appends to its JSONL files.
        worker_id: the worker's stable name (``w0``...), also in its sinks' paths.
        index: the worker's number; the template's ``http`` port is raised by it.
        keep_records: per-frame records kept for :meth:`records` (0: none).
        env: environment variables set in this process before anything is built.
        allow_code: modules the template's and cameras' ``module:Name`` entries may import.
    """

    def __init__(self, template: Mapping[str, Any], worker_id: str, *, index: int = 0, keep_records: int = 0,
                 env: Mapping[str, str] | None = None, allow_code: Any = None, log_level: int = logging.WARNING) -> None:
        os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
        logging.basicConfig(level=log_level, format=f"vidflow[{worker_id}]: %(levelname)s: %(message)s")
        self.worker_id, self.index = str(worker_id), int(index)
        self.incarnation = uuid.uuid4().hex[:12]
        self.restarted = _restarted()
        self.allow_code = allow_code
        self.base = template.get("_base")
        self.started = time.time()
        self._cams: dict[str, dict[str, Any]] = {}
        self._error: str | None = None
        self._lock = threading.Lock()
        self.pipe, self.ack = self._build(template, keep_records)
        self._keepalive = KeepAlive()
        self.pipe.add_source(self._keepalive, KEEPALIVE_ID)
        self._thread = threading.Thread(target=self._run, name=f"vidflow-fleet-{worker_id}", daemon=True)
        self._thread.start()

    # -- the Pipeline API, in one place ------------------------------------------------------
    def _build(self, template: Mapping[str, Any], keep_records: int) -> tuple[Any, AckSink]:
        import inspect

        from ..config import build_parts
        from ..pipeline import Pipeline

        cfg = copy.deepcopy(dict(template))
        cfg["sinks"] = _per_worker_sinks(list(cfg.get("sinks") or []), self.worker_id, self.restarted)
        if cfg.get("http") is not None:
            cfg["http"] = worker_http(cfg["http"], self.index)
        cfg["sources"] = [{"synthetic": {"width": 32, "height": 32, "frames": 0}}]   # build_parts wants one
        parts = build_parts(cfg, allow_code=self.allow_code)
        kwargs = parts.kwargs(inspect.signature(Pipeline).parameters)
        kwargs.pop("sources")
        ack = AckSink(kwargs["sinks"], keep_records=keep_records)
        kwargs["sinks"] = [*kwargs["sinks"], ack]
        kwargs["strict"] = False            # a camera's failure is the fleet's to handle, not a reason to stop
        return Pipeline(**kwargs), ack

    def _source(self, entry: Mapping[str, Any]) -> Any:
        from ..config import build_parts

        parts = build_parts({"sources": [dict(entry)], "_base": self.base}, allow_code=self.allow_code)
        return next(iter(parts.sources.values()))

    def _camera_rows(self, summary: Any) -> dict[str, dict[str, Any]]:
        """Per camera on this worker: the pipeline's counters (``pipe.snapshot()``) and the acks."""
        acked = self.ack.acked()
        rows = {}
        with self._lock:
            cams = dict(self._cams)
        for cid, meta in cams.items():
            st = summary.sources.get(cid)
            fn, ns = acked.get(cid, (-1, 0))
            row = {"state": meta.get("state", "starting"), "frames": 0, "decoded": 0, "dropped": 0, "errors": 0,
                   "error": meta.get("error"), "last_error": "", "live": False, "acked": fn, "acked_ns": ns,
                   "start": meta["start"], "offset": meta["offset"], "added": meta["added"]}
            if st is not None and meta.get("state") != "error":
                row.update(state=st.state, frames=st.frames, decoded=st.decoded, dropped=st.dropped,
                           errors=st.errors, error=None if st.error is None else str(st.error),
                           last_error=st.last_error, live=st.live)
            rows[cid] = row
        return rows

    def _run(self) -> None:
        try:
            with self.pipe.process_settings():   # torch's threads, gc freezing: this process is the worker's
                self.pipe.run()
        except BaseException as e:  # noqa: BLE001 - reported in status(); the fleet restarts the worker
            self._error = f"{type(e).__name__}: {e}"
            log.error("worker %s: the pipeline stopped: %s", self.worker_id, self._error)

    # -- methods the fleet calls -------------------------------------------------------------
    def add(self, camera_id: str, entry: Mapping[str, Any], *, start: int = 0, offset: int = 0) -> dict[str, Any]:
        """Start a camera: a file camera from frame ``start`` on, a live one with its frame numbers
        raised by ``offset``. Returns ``{"ok": True}``, ``{"ok": False, "error": text}``, or that
        with ``"busy": True`` while the id's previous run here is still being released (the fleet
        asks again next round: waiting here would hold up this worker's other control calls)."""
        if self._error is not None or not self._thread.is_alive():
            return {"ok": False, "error": f"worker {self.worker_id} is not running: {self._error}"}
        try:
            src = self._source(entry)
        except (ConfigError, VidflowError, ValueError, OSError) as e:
            return self._refuse(camera_id, start, offset, f"{type(e).__name__}: {e}")
        if start or offset:
            src = Resume(src, start=start, offset=offset)
        self.ack.forget(camera_id)
        with self._lock:
            self._cams[camera_id] = {"start": int(start), "offset": int(offset), "added": time.time()}
        deadline = time.monotonic() + 0.5
        while True:
            try:
                self.pipe.add_source(src, camera_id)
                break
            except ValueError as e:         # the same id, removed a moment ago, not yet released
                if time.monotonic() > deadline:
                    # not waited for here (this actor's other control calls would queue behind
                    # it): the fleet asks again on its next round
                    with self._lock:
                        self._cams.pop(camera_id, None)
                    src.close()
                    return {"ok": False, "busy": True, "error": str(e), "incarnation": self.incarnation}
                time.sleep(0.05)
        return {"ok": True, "incarnation": self.incarnation}

    def _refuse(self, camera_id: str, start: int, offset: int, error: str) -> dict[str, Any]:
        with self._lock:
            self._cams[camera_id] = {"start": start, "offset": offset, "added": time.time(), "state": "error",
                                     "error": error}
        return {"ok": False, "error": error, "incarnation": self.incarnation}

    def remove(self, camera_id: str) -> dict[str, Any]:
        """Stop a camera (queued frames discarded). Returns its last acknowledged frame number."""
        with self._lock:
            known = self._cams.pop(camera_id, None) is not None
        try:
            self.pipe.remove_source(camera_id)
        except KeyError:                    # ended (or never started) already
            pass
        acked = self.ack.acked().get(camera_id, (-1, 0))[0]
        return {"ok": known, "acked": acked}

    def status(self) -> dict[str, Any]:
        """The worker and its cameras (see the module docstring); cheap, called every tick."""
        summary = self.pipe.snapshot()          # a consistent copy, live counters refreshed
        alive = self._thread.is_alive()
        state = "failed" if self._error is not None else ("running" if alive else "stopped")
        return {"worker": self.worker_id, "incarnation": self.incarnation, "restarted": self.restarted,
                "pid": os.getpid(), "host": socket.gethostname(), "gpus": _gpus(), "device": str(self.pipe.device),
                "state": state, "error": self._error, "time": time.time(), "started": self.started,
                "http": getattr(self.pipe.server, "url", None), "batches": summary.batches,
                "startup": dict(summary.startup_s), "cameras": self._camera_rows(summary),
                "records_dropped": self.ack.records_dropped}

    def snapshot(self) -> dict[str, Any]:
        """The pipeline's run summary as plain data (cameras, frames, fps, latency)."""
        s = self.pipe.snapshot()
        return {"worker": self.worker_id, "frames": s.frames, "batches": s.batches, "fps": s.fps,
                "latency_ms_p50": s.latency_ms(0.5), "latency_ms_p95": s.latency_ms(0.95),
                "cameras": self._camera_rows(s)}

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Per-frame records kept since the last call (``keep_records``), oldest first."""
        return self.ack.take_records(limit)

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the pipeline (sinks flushed and closed); returns the final status."""
        self.pipe.stop()
        self._keepalive.close()
        self._thread.join(timeout)
        return self.status()

    def ping(self) -> str:
        return self.incarnation
