"""Process-wide settings for running pipelines: torch's CPU threads and the garbage collector's
freeze. They belong to the process, not to one pipeline, so they are a context entered once by
whoever owns the process (``vidflow run``, a benchmark, a Ray actor), around one or several
pipelines::

    with process_settings(torch_threads=1, freeze_gc=True):
        pipe.run()                        # or pipe.process_settings(): the pipeline's own choice

- ``torch_threads``: ``torch.set_num_threads`` inside, the previous value restored at the exit.
- ``freeze_gc``: once a pipeline has warmed up (models loaded, kernels compiled), the objects
  alive then (torch, models, modules: hundreds of thousands) are moved out of the collector's
  generations (``gc.freeze()``, in :func:`freeze_point`), so its full collections do not walk them
  again and again, pausing the loop. Pipelines only ever add to the frozen set; the outermost
  context's exit thaws it (``gc.unfreeze()``), so two pipelines in one process never undo each
  other's freeze. ``VIDFLOW_NO_GC_FREEZE=1`` turns it off.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["process_settings", "freeze_point"]

_lock = threading.Lock()
_freezing = 0          # entered contexts that asked for freeze_gc


@contextmanager
def process_settings(*, torch_threads: int | None = None, freeze_gc: bool = False) -> Iterator[None]:
    if torch_threads is not None and int(torch_threads) < 1:
        raise ValueError(f"torch_threads must be >= 1 or None, got {torch_threads}")
    global _freezing
    saved = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    freeze = bool(freeze_gc) and os.environ.get("VIDFLOW_NO_GC_FREEZE", "") in ("", "0")
    if freeze:
        with _lock:
            _freezing += 1
    try:
        yield
    finally:
        if freeze:
            with _lock:
                _freezing -= 1
                if _freezing == 0:
                    gc.unfreeze()
        if torch_threads is not None:
            torch.set_num_threads(saved)


def freeze_point() -> bool:
    """Called by a pipeline once it has warmed up: inside a ``freeze_gc`` context, collect and
    freeze what is alive now (also when something froze objects before: the GPU machine's Python
    had 375 frozen at start-up; skipping then brought back 110-130 ms full collections).
    Returns whether it froze."""
    with _lock:
        if not _freezing:
            return False
    gc.collect()
    gc.freeze()
    return True
