"""The pipeline runtime, one job per module:

- ``pipeline``: :class:`Pipeline`, the public API and the main loop;
- ``sourcing``: a thread or decode-process slot per source, queues, add / remove / retire;
- ``steps``: the stages' and sinks' contracts bound once, running them, their errors;
- ``overlap``: where the stages are cut, and the tail thread;
- ``warm``: warm-up of the muxer and the stages;
- ``observing``: the observers (``vidflow.observe``);
- ``startup``: time to the first batch and to steady state;
- ``settings``: :func:`process_settings`, the process-wide context (torch threads, gc freeze)
  entered by ``vidflow run`` or a Ray actor, never by a pipeline.
"""

from __future__ import annotations

from .pipeline import Pipeline
from .settings import process_settings

__all__ = ["Pipeline", "process_settings"]
