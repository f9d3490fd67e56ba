"""The fleet's reconcile rounds (``Fleet`` runs one every ``poll_s`` on its driver thread).

A round: ask every worker for its status (one call each, at most one outstanding); a Ray error
means the worker died or is restarting, a new incarnation id means it was restarted, no answer
for ``health_timeout_s`` means it hangs (it is killed, so that Ray restarts it), a pipeline that
stopped likewise; the cameras of a lost worker are re-placed at once. The status rows update the
cameras (progress, acknowledged frames, end, failure -> backoff -> failed). Then the placement
plan (``placement.place``) is carried out: adds and removals as Ray calls, never waited for in
the round (their results are read in the next one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ._book import CameraState, WorkerState
from .placement import Change, WorkerSlot, place
from .spec import FleetSettings

__all__ = ["Reconciler", "OBSERVE"]

#: the workers' concurrency group of the calls that only read (status, snapshot, records, ping)
OBSERVE = "observe"

log = logging.getLogger("vidflow.fleet")


class Reconciler:
    """The state the rounds work on: ``cams`` (id -> CameraState), ``order`` (desired ids in
    order), ``workers`` (id -> WorkerState), ``home`` and ``unplaced`` (from the last plan)."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.cams: dict[str, CameraState] = {}
        self.order: list[str] = []
        self.workers: dict[str, WorkerState] = {}
        self.home: dict[str, str] = {}
        self.unplaced: tuple[str, ...] = ()

    def request(self, now: float) -> list[Any]:
        """Ask every worker without a pending status call for its status; returns the pending
        calls (the caller waits for them, a little, without holding the fleet's lock)."""
        for w in self.workers.values():
            if w.status_ref is None:
                w.status_ref, w.status_sent = w.handle.status.options(concurrency_group=OBSERVE).remote(), now
        return [w.status_ref for w in self.workers.values()]

    def tick(self, ray: Any, now: float) -> None:
        """One round: read the status answers, collect add results, carry out the placement plan."""
        self._poll(ray, now)
        self._check_adds(ray, now)
        self._reconcile(now)

    def _poll(self, ray: Any, now: float) -> None:
        s = self.settings
        for w in self.workers.values():
            if w.status_ref is None:
                continue
            ready, _ = ray.wait([w.status_ref], timeout=0)
            if not ready:
                # (only a worker that answered before can hang: building a pipeline may take long)
                if now - w.status_sent > s.health_timeout_s and w.state == "running":
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
        w.http = st.get("http")
        w.startup = dict(st.get("startup") or {})
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
        for cam in self.cams.values():
            if cam.worker != w.id or cam.add_ref is not None or cam.state in ("backoff", "releasing", "failed", "ended"):
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
            other = self.cams.get(cid)
            if other is None or other.worker != w.id:
                w.handle.remove.remote(cid)

    def _lost(self, w: WorkerState, reason: str, now: float) -> None:
        log.warning("fleet: worker %s lost (%s); re-placing its cameras", w.id, reason)
        w.state, w.error = "lost", reason
        for cam in self.cams.values():
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
        for cam in self.cams.values():
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
            if res.get("busy"):
                # its previous run on that worker is still being released: asked again next
                # round, and a failure only once that lasts ``release_timeout_s``
                cam.busy_since = cam.busy_since or now
                if now - cam.busy_since <= self.settings.release_timeout_s:
                    cam.state, cam.retry_at, cam.incarnation = "releasing", now + self.settings.poll_s, None
                    continue
                cam.busy_since = 0.0
                self._failed(cam, None, f"{res['error']} (its previous run was not released in "
                                        f"{self.settings.release_timeout_s:g} s)", now)
                continue
            cam.busy_since = 0.0
            if not res["ok"]:
                self._failed(cam, self.workers.get(cam.worker or ""), res["error"], now)
            else:
                cam.incarnation = res.get("incarnation", cam.incarnation)

    def restart(self, cam: CameraState) -> None:
        """Start a camera again where it is (its entry changed)."""
        w = self.workers.get(cam.worker or "")
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
        desired = set(self.order)
        for cid in [c for c in self.cams if c not in desired]:       # removed from the desired set
            cam = self.cams.pop(cid)
            w = self.workers.get(cam.worker or "")
            if w is not None and w.alive:
                w.handle.remove.remote(cid)
            self.home.pop(cid, None)
        for cam in self.cams.values():                                 # backoff over: try again there
            if cam.state in ("backoff", "releasing") and now >= cam.retry_at:
                w = self.workers.get(cam.worker or "")
                if w is not None and w.alive:
                    self._add(cam, w, now)
        active = {cid: self.cams[cid].spec.cost for cid in self.order if not self.cams[cid].terminal}
        current = {cid: c.worker for cid, c in self.cams.items() if c.worker is not None and not c.terminal}
        slots = [WorkerSlot(w.id, w.capacity, w.alive) for w in self.workers.values()]
        plan = place(active, slots, current, home=self.home, move_back=self.settings.move_back)
        self.home = plan.home
        self.unplaced = plan.unplaced
        for ch in plan.changes:
            self._carry_out(ch, now)

    def _carry_out(self, ch: Change, now: float) -> None:
        cam = self.cams.get(ch.camera)
        if cam is None or ch.dst is None:
            return
        src = self.workers.get(ch.src or "")
        if src is not None and src.alive and ch.src != ch.dst:          # a move between live workers
            src.handle.remove.remote(ch.camera)
            cam.lose(f"moved to {ch.dst}", now)
        self._add(cam, self.workers[ch.dst], now)
