"""Warm-up before the sources start: the muxer's conversion kernel and every stage's
``warmup(batch_size, device)`` (cuDNN autotuning, CUDA graph capture per batch size)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import StageError, VidflowError
from .steps import StageSlot

__all__ = ["warm"]

log = logging.getLogger(__name__)


def warm(muxer: Any, stages: Sequence[StageSlot], device: torch.device, batch_size: int) -> None:
    """Warm the muxer (a failure only logs: the first batch compiles instead) and the stages (a
    failure is the stage's ``StageError``)."""
    warm_mux = getattr(muxer, "warmup", None)
    if callable(warm_mux):
        try:
            warm_mux(device)
        except Exception as e:  # noqa: BLE001 - only a head start: the first batch compiles instead
            log.warning("muxer warm-up failed (%s: %s); the first batch will compile the kernel",
                        type(e).__name__, e)
    for st in stages:
        if st.warmup is None:
            continue
        t0 = time.monotonic()
        try:
            st.warmup(batch_size, device)
        except VidflowError:
            raise
        except Exception as e:
            raise StageError(f"warm-up: {type(e).__name__}: {e}", stage=st.name) from e
        log.info("stage %s warmed up for batches of up to %d in %.1f s", st.name, batch_size, time.monotonic() - t0)
