"""``from vidflow.pipeline import Pipeline``: the public path of :class:`vidflow.runtime.Pipeline`
(the runtime's modules are described in ``vidflow.runtime``)."""

from __future__ import annotations

from .runtime.pipeline import Pipeline
from .runtime.settings import process_settings
from .stats import RunSummary, SourceStats

__all__ = ["Pipeline", "RunSummary", "SourceStats", "process_settings"]
