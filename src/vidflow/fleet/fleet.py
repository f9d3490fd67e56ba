"""``Fleet``: cameras placed on pipeline workers (Ray actors), kept there by a reconcile loop.

>>> fleet = Fleet(template, workers=2, num_gpus=0.5)      # or Fleet.from_yaml("cameras.yaml")
>>> fleet.start()                                          # ray.init() first if not connected
>>> fleet.apply(cameras)                                   # the desired set; again to change it
>>> print(fleet.format_status()); fleet.records()          # where each camera is; frames
>>> fleet.stop()

One thread of the driver ticks every ``poll_s``: it asks every worker for its status (one call
each, at most one outstanding), notices a worker that died (a Ray error), restarted (a new
incarnation id) or hangs (no answer for ``health_timeout_s``: killed so that Ray restarts it),
updates the cameras (frames, acknowledged frames, end, failure), and carries out the placement
plan (``placement.place``): new cameras to the least-loaded worker, removed ones stopped, lost
ones re-placed at once on the live workers, nothing else moved. Ray restarts dead workers by
itself (``max_restarts``); the fleet only re-places their cameras. A camera that fails is
retried on its worker after a backoff that doubles; after ``max_camera_failures`` in a row it
is ``failed`` with its error until :meth:`retry` or a changed entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._book import CameraState, WorkerState, format_status
from ._reconcile import OBSERVE, Reconciler
from .spec import CameraSpec, FleetSettings, load_fleet, parse_cameras
from .worker import PipelineWorker

__all__ = ["Fleet"]

log = logging.getLogger("vidflow.fleet")


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("vidflow.fleet needs Ray: pip install 'vidflow[ray]'", name="ray") from e
    return ray


class Fleet:
    """Cameras on pipeline workers. ``template``: a pipeline YAML mapping without sources (or
    the path of one); ``settings``: a :class:`FleetSettings` or its fields as keywords.
    ``allow_code``: modules the template's and cameras' ``module:Name`` entries may import."""

    def __init__(self, template: Mapping[str, Any] | str | Path, settings: FleetSettings | None = None, *,
                 allow_code: Any = None, **kw: Any) -> None:
        if isinstance(template, (str, Path)):
            from ..config import load_config
            template = load_config(template)
        self.template = dict(template)
        self.template.pop("sources", None)
        if settings is not None and kw:
            raise ValueError("Fleet: pass settings or keyword settings, not both")
        self.settings = settings if settings is not None else FleetSettings(**kw)
        self.allow_code = allow_code
        self._lock = threading.RLock()
        self._rec = Reconciler(self.settings)
        self._cams = self._rec.cams               # (the same dicts: the loop's rounds work on them)
        self._workers = self._rec.workers
        self._seen_hw: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None
        self.ticks = 0
        self.tick_s = 0.0                         # CPU time of the reconcile thread (its own)
        self.on_tick: Any = None                  # called after each tick (the CLI's control actor)

    @classmethod
    def from_yaml(cls, path: str | Path, **kw: Any) -> tuple[Fleet, tuple[CameraSpec, ...]]:
        """The fleet a ``cameras.yaml`` describes and its cameras (``apply`` them after ``start``)."""
        spec = load_fleet(path)
        return cls(spec.template, spec.settings, **kw), spec.cameras

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, address: str | None = None, wait_s: float | None = 300.0, **init_kw: Any) -> Fleet:
        """Start the workers and the reconcile loop. Connects to Ray first when not connected:
        ``address`` None starts a local Ray (``ray.init()``), ``"auto"`` or ``"ray://host:10001"``
        joins an existing cluster. ``wait_s``: wait that long for every worker to be up (built
        its pipeline), so the first cameras are spread over all of them; None: do not wait."""
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=address, **init_kw)
        s = self.settings
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        num_gpus = s.num_gpus if s.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
        n = s.workers
        if n is None:
            n = max(1, int(gpus // num_gpus)) if num_gpus > 0 else 1
        # status / snapshot / records / ping run on threads of their own (Ray's concurrency
        # groups): a worker busy adding cameras (decoders opening, a model's first batch) still
        # answers its health check, so it is never taken for hung and killed
        actor = ray.remote(concurrency_groups={OBSERVE: 2})(PipelineWorker)
        env = dict(s.env)
        for i in range(n):
            wid = f"w{i}"
            opts: dict[str, Any] = dict(num_cpus=s.num_cpus, num_gpus=num_gpus, max_restarts=s.max_restarts,
                                        max_task_retries=0, name=f"vidflow-{s.name}-{wid}", namespace="vidflow")
            if env:
                opts["runtime_env"] = {"env_vars": env}
            handle = actor.options(**opts).remote(self.template, wid, index=i, keep_records=s.keep_records, env=env,
                                                  allow_code=self.allow_code)
            self._workers[wid] = WorkerState(wid, handle, s.capacity)
        if wait_s:
            refs = [w.handle.ping.options(concurrency_group=OBSERVE).remote() for w in self._workers.values()]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
            if len(ready) < len(refs):
                log.warning("fleet: %d of %d workers not up after %g s (no GPU or CPU left for them?); "
                            "starting anyway", len(refs) - len(ready), len(refs), wait_s)
        self._thread = threading.Thread(target=self._loop, name="vidflow-fleet", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the loop, then every worker's pipeline (sinks flushed), then the actors. Returns
        the last status."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        ray = _ray()
        refs = {w.id: w.handle.stop.remote() for w in self._workers.values()}
        for wid, ref in refs.items():
            try:
                st = ray.get(ref, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - a dead worker has nothing to flush
                log.warning("fleet: worker %s did not stop cleanly: %s", wid, e)
                continue
            with self._lock:                  # the last counters; whatever still ran is now stopped
                for cam in self._cams.values():
                    row = st["cameras"].get(cam.spec.id)
                    if cam.worker == wid and row is not None and not cam.terminal:
                        cam.seen(row, time.time(), self.settings.poll_s)
                        cam.state = "ended" if row["state"] == "ended" else "stopped"
        final = self.status()
        for w in self._workers.values():
            ray.kill(w.handle, no_restart=True)
        return final

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the desired set ---------------------------------------------------------------------
    def apply(self, cameras: Iterable[CameraSpec | Mapping[str, Any]]) -> None:
        """Make ``cameras`` (specs, or YAML camera entries) the desired set: new ones are placed,
        missing ones stopped, changed ones restarted where they are, the rest left alone."""
        items = list(cameras)
        parsed = iter(parse_cameras([c for c in items if not isinstance(c, CameraSpec)]))
        specs = [c if isinstance(c, CameraSpec) else next(parsed) for c in items]
        ids = [c.id for c in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"apply: camera ids must be unique, got {ids}")
        with self._lock:
            for c in specs:
                old = self._cams.get(c.id)
                if old is None:
                    self._cams[c.id] = CameraState(c)
                elif old.spec != c:           # changed: restart it (where it is) with the new entry
                    old.spec, old.failures, old.error = c, 0, None
                    old.acked, old.acked_ns = -1, 0
                    self._seen_hw.pop(c.id, None)     # (its frame numbers start again at 0)
                    self._rec.restart(old)
            self._rec.order = ids

    def retry(self, camera_ids: Sequence[str]) -> None:
        """Give failed cameras another series of attempts."""
        with self._lock:
            for cid in camera_ids:
                cam = self._cams[cid]
                if cam.state == "failed":
                    cam.failures, cam.error, cam.state, cam.worker = 0, None, "pending", None

    # -- reading -----------------------------------------------------------------------------
    def placement(self) -> dict[str, str | None]:
        """camera id -> the worker it runs (or last ran) on."""
        with self._lock:
            return {cid: (c.worker or c.last_worker) for cid, c in self._cams.items()}

    def status(self) -> dict[str, Any]:
        """Workers (state, pid, GPUs, load, restarts) and cameras (worker, state, frames, fps,
        acknowledged frame, failures and error, moves with their gaps), as plain data."""
        with self._lock:
            cams = [self._cams[c].row() for c in self._cams]
            load: dict[str, float] = {}
            count: dict[str, int] = {}
            for c in self._cams.values():
                if c.worker is not None and not c.terminal:
                    load[c.worker] = load.get(c.worker, 0.0) + c.spec.cost
                    count[c.worker] = count.get(c.worker, 0) + 1
            workers = [w.row(load.get(w.id, 0.0), count.get(w.id, 0)) for w in self._workers.values()]
            return {"name": self.settings.name, "workers": workers, "cameras": cams, "unplaced": list(self._rec.unplaced),
                    "fps": round(sum(c["fps"] for c in cams if c["state"] not in ("ended", "failed")), 1),
                    "ticks": self.ticks, "reconcile_cpu_s": round(self.tick_s, 3),
                    "loop_error": None if self._loop_error is None else repr(self._loop_error)}

    def format_status(self) -> str:
        return format_status(self.status())

    def snapshots(self, timeout: float = 10.0) -> dict[str, Any]:
        """Every live worker's ``snapshot()`` (its pipeline summary), by worker id."""
        return self._gather("snapshot", timeout)

    def records(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Per-frame records kept by the workers since the last call (``keep_records`` > 0), each
        frame of a camera once: a record at or below the newest frame already returned for its
        camera (written again after a move) is dropped."""
        out = []
        for recs in self._gather("records", timeout).values():
            for r in recs:
                sid, fn = str(r["source_id"]), int(r["frame_num"])
                if fn > self._seen_hw.get(sid, -1):
                    self._seen_hw[sid] = fn
                    out.append(r)
        return out

    def worker_pid(self, worker_id: str) -> int | None:
        """The process id of a worker (as last reported)."""
        return self._workers[worker_id].pid

    def handle(self, worker_id: str) -> Any:
        """A worker's Ray actor handle (e.g. for ``ray.kill``)."""
        return self._workers[worker_id].handle

    def _gather(self, method: str, timeout: float) -> dict[str, Any]:
        ray = _ray()
        refs = {w.id: getattr(w.handle, method).options(concurrency_group=OBSERVE).remote()
                for w in self._workers.values() if w.alive}
        out = {}
        for wid, ref in refs.items():
            try:
                out[wid] = ray.get(ref, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - a worker lost meanwhile: the loop handles it
                log.info("fleet: %s.%s failed: %s", wid, method, e)
        return out

    # -- the reconcile loop --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.thread_time()
            try:
                ray = _ray()
                with self._lock:
                    refs = self._rec.request(time.time())
                ray.wait(refs, num_returns=len(refs), timeout=min(self.settings.poll_s, 1.0))
                with self._lock:
                    self._rec.tick(ray, time.time())
                self._loop_error = None
            except Exception as e:  # noqa: BLE001 - logged and shown in status; the loop goes on
                if repr(e) != repr(self._loop_error):
                    log.exception("fleet: reconcile tick failed")
                self._loop_error = e
            self.tick_s += time.thread_time() - t0
            self.ticks += 1
            if self.on_tick is not None:
                try:
                    self.on_tick(self)
                except Exception as e:  # noqa: BLE001
                    log.warning("fleet: on_tick failed: %s", e)
            self._stop.wait(self.settings.poll_s)

