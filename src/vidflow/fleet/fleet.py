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
from .placement import Change, WorkerSlot, place
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
        self._cams: dict[str, CameraState] = {}
        self._order: list[str] = []
        self._home: dict[str, str] = {}
        self._workers: dict[str, WorkerState] = {}
        self._unplaced: tuple[str, ...] = ()
        self._seen_hw: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None
        self.ticks = 0
        self.tick_s = 0.0                         # driver CPU time spent in ticks (process time)
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
        n = s.workers
        if n is None:
            gpus = float(ray.cluster_resources().get("GPU", 0.0))
            n = max(1, int(gpus // s.num_gpus)) if s.num_gpus > 0 else 1
        actor = ray.remote(PipelineWorker)
        env = dict(s.env)
        for i in range(n):
            wid = f"w{i}"
            opts: dict[str, Any] = dict(num_cpus=s.num_cpus, num_gpus=s.num_gpus, max_restarts=s.max_restarts,
                                        max_task_retries=0, name=f"vidflow-{s.name}-{wid}", namespace="vidflow")
            if env:
                opts["runtime_env"] = {"env_vars": env}
            handle = actor.options(**opts).remote(self.template, wid, keep_records=s.keep_records, env=env,
                                                  allow_code=self.allow_code)
            self._workers[wid] = WorkerState(wid, handle, s.capacity)
        if wait_s:
            refs = [w.handle.ping.remote() for w in self._workers.values()]
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
                ray.get(ref, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - a dead worker has nothing to flush
                log.warning("fleet: worker %s did not stop cleanly: %s", wid, e)
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
                    self._restart(old)
            self._order = ids

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
            return {"name": self.settings.name, "workers": workers, "cameras": cams, "unplaced": list(self._unplaced),
                    "fps": round(sum(c["fps"] for c in cams if c["state"] not in ("ended", "failed")), 1),
                    "ticks": self.ticks, "driver_cpu_s": round(self.tick_s, 3),
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
        refs = {w.id: getattr(w.handle, method).remote() for w in self._workers.values() if w.alive}
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
            t0 = time.process_time()
            try:
                with self._lock:
                    self._tick()
                self._loop_error = None
            except Exception as e:  # noqa: BLE001 - logged and shown in status; the loop goes on
                if repr(e) != repr(self._loop_error):
                    log.exception("fleet: reconcile tick failed")
                self._loop_error = e
            self.tick_s += time.process_time() - t0
            self.ticks += 1
            if self.on_tick is not None:
                try:
                    self.on_tick(self)
                except Exception as e:  # noqa: BLE001
                    log.warning("fleet: on_tick failed: %s", e)
            self._stop.wait(self.settings.poll_s)

    def _tick(self) -> None:
        ray = _ray()
        now = time.time()
        self._poll(ray, now)
        self._check_adds(ray, now)
        self._reconcile(now)

    def _poll(self, ray: Any, now: float) -> None:
        s = self.settings
        for w in self._workers.values():
            if w.status_ref is None:
                w.status_ref, w.status_sent = w.handle.status.remote(), now
        refs = [w.status_ref for w in self._workers.values()]
        ray.wait(refs, num_returns=len(refs), timeout=min(s.poll_s, 1.0))
        for w in self._workers.values():
            ready, _ = ray.wait([w.status_ref], timeout=0)
            if not ready:
                if now - w.status_sent > s.health_timeout_s and w.state != "lost":
                    self._lost(w, f"no answer for {s.health_timeout_s:g} s", now)
                    self._kill(ray, w)
                continue
            ref, w.status_ref = w.status_ref, None
            try:
                st = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - RayActorError & co: died, restarting, or gone
                if w.state != "lost":
                    self._lost(w, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}", now)
                continue
            self._seen_worker(ray, w, st, now)

    def _seen_worker(self, ray: Any, w: WorkerState, st: dict[str, Any], now: float) -> None:
        if w.incarnation is not None and st["incarnation"] != w.incarnation:
            w.restarts += 1
            log.warning("fleet: worker %s restarted (pid %s -> %s)", w.id, w.pid, st["pid"])
            self._lost(w, "restarted", now)
        w.incarnation, w.pid, w.host, w.gpus, w.device = (st["incarnation"], st["pid"], st["host"], st["gpus"],
                                                          st["device"])
        w.last_ok = now
        if st["state"] != "running":         # its pipeline stopped: let Ray restart the process
            w.error = st["error"]
            if w.state != "lost":
                self._lost(w, f"pipeline {st['state']}: {st['error']}", now)
            if w.killed != w.incarnation:
                self._kill(ray, w)
            return
        w.state, w.error = "running", None
        rows = st["cameras"]
        for cam in self._cams.values():
            if cam.worker != w.id or cam.add_ref is not None or cam.state in ("backoff", "failed", "ended"):
                continue
            row = rows.get(cam.spec.id)
            if cam.incarnation != w.incarnation or row is None:
                if cam.incarnation is not None:     # confirmed there, gone now
                    cam.lose("not on its worker any more", now)
                continue
            cam.seen(row, now, self.settings.poll_s)
            if row["state"] in ("failed", "error"):
                self._failed(cam, w, row.get("error") or row.get("last_error") or "failed", now)
            elif row["state"] == "ended":
                # ended once the sinks have its last frame too (a kill before that: resumed again)
                # (``decoded``: the frames its decoder handed over, skipped ones not counted)
                if cam.live or cam.acked >= row["start"] + row["decoded"] - 1:
                    w.handle.remove.remote(cam.spec.id)   # releases the worker's record of it
                else:
                    cam.state = "ending"
        for cid in rows:                                  # on the worker, not wanted there: stop it
            cam = self._cams.get(cid)
            if cam is None or cam.worker != w.id:
                w.handle.remove.remote(cid)

    def _lost(self, w: WorkerState, reason: str, now: float) -> None:
        log.warning("fleet: worker %s lost (%s); re-placing its cameras", w.id, reason)
        w.state, w.error = "lost", reason
        for cam in self._cams.values():
            if cam.worker == w.id:
                cam.lose(reason, now)

    @staticmethod
    def _kill(ray: Any, w: WorkerState) -> None:
        w.killed = w.incarnation
        try:
            ray.kill(w.handle, no_restart=False)
        except Exception as e:  # noqa: BLE001
            log.warning("fleet: could not kill worker %s: %s", w.id, e)

    def _failed(self, cam: CameraState, w: WorkerState | None, error: str, now: float) -> None:
        s = self.settings
        cam.fail(error, now, max_failures=s.max_camera_failures, backoff_s=s.backoff_s, max_backoff_s=s.max_backoff_s)
        log.warning("fleet: camera %s failed (%d/%d): %s", cam.spec.id, cam.failures, s.max_camera_failures, error)
        if w is not None:
            w.handle.remove.remote(cam.spec.id)
        if cam.state == "failed":
            cam.worker = None

    def _check_adds(self, ray: Any, now: float) -> None:
        for cam in self._cams.values():
            if cam.add_ref is None:
                continue
            ready, _ = ray.wait([cam.add_ref], timeout=0)
            if not ready:
                continue
            ref, cam.add_ref = cam.add_ref, None
            try:
                res = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the worker died meanwhile: _poll sees it
                cam.lose(f"add failed: {type(e).__name__}", now)
                continue
            if not res["ok"]:
                self._failed(cam, self._workers.get(cam.worker or ""), res["error"], now)
            else:
                cam.incarnation = res.get("incarnation", cam.incarnation)

    def _restart(self, cam: CameraState) -> None:
        w = self._workers.get(cam.worker or "")
        if w is not None and w.alive:
            w.handle.remove.remote(cam.spec.id)
            self._add(cam, w, time.time(), restart=True)
        else:
            cam.state, cam.worker = "pending", None

    def _add(self, cam: CameraState, w: WorkerState, now: float, *, restart: bool = False) -> None:
        start, offset = (0, 0) if restart else cam.resume_point(now)
        cam.started(w.id, w.incarnation, now)
        cam.add_ref = w.handle.add.remote(cam.spec.id, dict(cam.spec.entry), start=start,
                                                           offset=offset)

    def _reconcile(self, now: float) -> None:
        desired = set(self._order)
        for cid in [c for c in self._cams if c not in desired]:       # removed from the desired set
            cam = self._cams.pop(cid)
            w = self._workers.get(cam.worker or "")
            if w is not None and w.alive:
                w.handle.remove.remote(cid)
            self._home.pop(cid, None)
        for cam in self._cams.values():                                 # backoff over: try again there
            if cam.state == "backoff" and now >= cam.retry_at:
                w = self._workers.get(cam.worker or "")
                if w is not None and w.alive:
                    self._add(cam, w, now)
        active = {cid: self._cams[cid].spec.cost for cid in self._order if not self._cams[cid].terminal}
        current = {cid: c.worker for cid, c in self._cams.items() if c.worker is not None and not c.terminal}
        slots = [WorkerSlot(w.id, w.capacity, w.alive) for w in self._workers.values()]
        plan = place(active, slots, current, home=self._home, move_back=self.settings.move_back)
        self._home = plan.home
        self._unplaced = plan.unplaced
        for ch in plan.changes:
            self._carry_out(ch, now)

    def _carry_out(self, ch: Change, now: float) -> None:
        cam = self._cams.get(ch.camera)
        if cam is None or ch.dst is None:
            return
        src = self._workers.get(ch.src or "")
        if src is not None and src.alive and ch.src != ch.dst:          # a move between live workers
            src.handle.remove.remote(ch.camera)
            cam.lose(f"moved to {ch.dst}", now)
        self._add(cam, self._workers[ch.dst], now)
