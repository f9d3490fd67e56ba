"""The fleet's mailbox in Ray, so other processes can change and read a running fleet.

``vidflow fleet run`` creates one small named actor per fleet (``vidflow-fleet-<name>`` in the
``vidflow`` namespace, no CPU reserved). ``vidflow fleet apply`` (any process connected to the
same cluster, e.g. ``ray.init(address="auto")``) puts a new desired camera set into it;
the running driver picks it up on its next tick and applies it. The driver puts its status
there every tick, which ``vidflow fleet status`` reads. The fleet itself never depends on it:
the Python API (``Fleet.apply``, ``Fleet.status``) works without.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Control", "control_name", "attach", "publish", "NAMESPACE"]

NAMESPACE = "vidflow"


def control_name(fleet_name: str) -> str:
    return f"vidflow-fleet-{fleet_name}"


class Control:
    """The mailbox: a versioned desired camera list and the newest status."""

    def __init__(self) -> None:
        self.version = 0
        self.cameras: list[dict[str, Any]] | None = None
        self.status: dict[str, Any] | None = None
        self.status_at = 0.0

    def put_cameras(self, cameras: list[dict[str, Any]]) -> int:
        self.version += 1
        self.cameras = list(cameras)
        return self.version

    def get_cameras(self, since: int) -> tuple[int, list[dict[str, Any]] | None]:
        """``(version, cameras)`` when there is a version newer than ``since``, else ``(since, None)``."""
        if self.version > since and self.cameras is not None:
            return self.version, self.cameras
        return since, None

    def put_status(self, status: dict[str, Any]) -> None:
        self.status, self.status_at = status, time.time()

    def get_status(self) -> tuple[dict[str, Any] | None, float]:
        return self.status, self.status_at


def create(fleet_name: str) -> Any:
    """Create (or take over) the named mailbox of a fleet; returns its handle."""
    import ray

    return ray.remote(Control).options(name=control_name(fleet_name), namespace=NAMESPACE, num_cpus=0,
                                       get_if_exists=True).remote()


def attach(fleet_name: str) -> Any:
    """The mailbox of a running fleet; ``ValueError`` naming the fleet when there is none."""
    import ray

    try:
        return ray.get_actor(control_name(fleet_name), namespace=NAMESPACE)
    except ValueError:
        raise ValueError(f"no running fleet named {fleet_name!r} in this Ray cluster "
                         f"(start one with `vidflow fleet run`)") from None


class publish:
    """``Fleet.on_tick`` hook: applies camera sets put into the mailbox and publishes the
    status (at most every ``every_s``)."""

    def __init__(self, handle: Any, *, every_s: float = 1.0, since: int = 0) -> None:
        self.handle, self.every_s, self.since = handle, float(every_s), since
        self._pending: Any = None
        self._last = 0.0
        self.applied = 0

    def __call__(self, fleet: Any) -> None:
        import ray

        if self._pending is None:
            self._pending = self.handle.get_cameras.remote(self.since)
        ready, _ = ray.wait([self._pending], timeout=0)
        if ready:
            ref, self._pending = self._pending, None
            version, cameras = ray.get(ref)
            if cameras is not None:
                fleet.apply(cameras)
                self.since, self.applied = version, self.applied + 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.handle.put_status.remote(fleet.status())
