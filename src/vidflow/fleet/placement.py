"""Where each camera runs: a pure function from (cameras, workers, current assignment) to a plan.

No Ray, no clocks, no I/O: the reconciler (``fleet.py``) calls :func:`place` on every tick with
what it knows and carries out the returned :class:`Plan`. The rules:

- a camera stays where it is while its worker is alive and it is still wanted (**no move without
  need**); capacity is only checked when a camera is (re)placed, so lowering a capacity does
  not shuffle running cameras;
- a camera no longer wanted is removed from its worker;
- a new camera, or one whose worker was lost, goes to the **least-loaded** live worker that has
  room for its cost (load / capacity, ties by the workers' order); cameras are placed in the
  order given, so ``apply`` order decides who gets the last slots;
- with no room anywhere a camera stays unplaced (``Plan.unplaced``), to be placed on a later
  tick once a worker comes back or a camera ends;
- ``move_back=True``: a camera away from its ``home`` (the worker it was first placed on) goes
  back once that worker is alive again and has room. Off by default: a move costs the camera
  a gap (live) or re-decoded frames (files), so it is only done on request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["WorkerSlot", "Change", "Plan", "place", "loads"]


@dataclass(frozen=True)
class WorkerSlot:
    """A worker as placement sees it: its id, how much camera cost it takes, whether it is alive."""

    id: str
    capacity: float
    alive: bool = True

    def __post_init__(self) -> None:
        if not self.capacity > 0:
            raise ValueError(f"WorkerSlot {self.id!r}: capacity must be > 0, got {self.capacity!r}")


@dataclass(frozen=True)
class Change:
    """One camera changing worker: ``src`` None = newly placed; ``dst`` None = removed; both set:
    moved (``src`` may be a lost worker: then there is nothing to stop there)."""

    camera: str
    src: str | None
    dst: str | None


@dataclass(frozen=True)
class Plan:
    """The result of :func:`place`: the new ``assignment`` (camera -> worker) and the changes
    that lead there from the current one (removals first, then placements), plus the cameras
    that found no room."""

    assignment: dict[str, str]
    changes: tuple[Change, ...] = ()
    unplaced: tuple[str, ...] = ()
    home: dict[str, str] = field(default_factory=dict)

    @property
    def moves(self) -> tuple[Change, ...]:
        """Changes of a camera from one worker to another."""
        return tuple(c for c in self.changes if c.src is not None and c.dst is not None)


def loads(assignment: Mapping[str, str], costs: Mapping[str, float]) -> dict[str, float]:
    """Summed camera cost per worker."""
    out: dict[str, float] = {}
    for cam, w in assignment.items():
        out[w] = out.get(w, 0.0) + float(costs.get(cam, 1.0))
    return out


def place(cameras: Mapping[str, float], workers: Sequence[WorkerSlot], current: Mapping[str, str], *,
          home: Mapping[str, str] | None = None, move_back: bool = False) -> Plan:
    """Plan the placement of ``cameras`` (id -> cost, in the order they should be placed) on
    ``workers``, starting from ``current`` (camera -> worker id; cameras on unknown or dead
    workers count as lost). ``home``: each camera's first worker (kept and extended in
    ``Plan.home``). Raises ``ValueError`` for a cost <= 0 or duplicate worker ids."""
    ids = [w.id for w in workers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"place: duplicate worker ids in {ids}")
    for cam, cost in cameras.items():
        if not float(cost) > 0:
            raise ValueError(f"place: camera {cam!r} has cost {cost!r}; expected > 0")
    by_id = {w.id: w for w in workers}
    alive = {w.id for w in workers if w.alive}
    home = dict(home or {})
    assignment: dict[str, str] = {}
    removals: list[Change] = []
    for cam, w in current.items():
        if cam not in cameras:
            if w in alive:
                removals.append(Change(cam, w, None))
            home.pop(cam, None)
        elif w in alive:
            assignment[cam] = w

    load = loads(assignment, cameras)
    placements: list[Change] = []
    if move_back:
        for cam, w in list(assignment.items()):
            h = home.get(cam)
            if h is None or h == w or h not in alive:
                continue
            if load.get(h, 0.0) + cameras[cam] <= by_id[h].capacity:
                load[w] -= cameras[cam]
                load[h] = load.get(h, 0.0) + cameras[cam]
                assignment[cam] = h
                placements.append(Change(cam, w, h))

    unplaced: list[str] = []
    order = {wid: i for i, wid in enumerate(ids)}
    for cam, cost in cameras.items():
        if cam in assignment:
            continue
        fits = [w for w in workers if w.alive and load.get(w.id, 0.0) + cost <= w.capacity]
        if not fits:
            unplaced.append(cam)
            continue
        best = min(fits, key=lambda w: (load.get(w.id, 0.0) / w.capacity, order[w.id]))
        assignment[cam] = best.id
        load[best.id] = load.get(best.id, 0.0) + cost
        placements.append(Change(cam, current.get(cam), best.id))
        home.setdefault(cam, best.id)
    return Plan(assignment, tuple(removals + placements), tuple(unplaced), home)
