"""``vidflow.fleet``: cameras on a fleet of pipeline workers, on Ray (``pip install 'vidflow[ray]'``).

One :class:`~vidflow.fleet.worker.PipelineWorker` Ray actor per GPU (or GPU share) holds one
``Pipeline``; the :class:`Fleet` driver places cameras on them by capacity, keeps the desired
set (``apply``), re-places the cameras of a worker that dies (Ray restarts the worker), resumes
file cameras from the last frame the sinks acknowledged and reports live cameras' gaps.

Modules, one job each: ``spec`` (cameras.yaml), ``placement`` (pure placement), ``worker``
(the actor), ``_parts`` (what the worker adds to its pipeline: keep-alive, resume, acks),
``_book`` (driver bookkeeping, status), ``fleet`` (the reconcile loop), ``control`` (the named
mailbox for ``vidflow fleet apply/status``), ``results`` (de-duplicated outputs), ``_cli``.
Ray is imported only when a fleet starts. See docs/FLEET.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Fleet", "FleetSettings", "CameraSpec", "load_fleet", "place", "WorkerSlot", "PipelineWorker",
           "read_records", "format_status"]

_NAMES = {"Fleet": ".fleet", "FleetSettings": ".spec", "CameraSpec": ".spec", "load_fleet": ".spec",
          "place": ".placement", "WorkerSlot": ".placement", "PipelineWorker": ".worker",
          "read_records": ".results", "format_status": "._book"}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module 'vidflow.fleet' has no attribute {name!r}")
