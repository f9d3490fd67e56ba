"""Small constant tensors on the device without a stream synchronisation.

``torch.tensor(values, device="cuda")`` and ``t.new_tensor(values)`` copy from the host with
``non_blocking=False``, which makes PyTorch wait for every kernel already queued on the stream
(``cudaStreamSynchronize``): called once per batch on the pipeline's main thread, that stalls it
until the GPU has finished the previous batch's model, and the overlap between launching batch
i+1 and running batch i is lost. :func:`const` builds the values on the host and copies them with
``non_blocking=True`` (from pageable memory: staged by the driver before the call returns, so the
host tensor may go at once), which queues the copy behind that work instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["const"]


def const(values: Sequence[Any] | Any, like: torch.Tensor | None = None, *, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` as a tensor on ``like``'s device (and dtype, unless ``dtype``), or on ``device``;
    what ``like.new_tensor(values)`` gives, without the stream sync."""
    if like is not None:
        device = like.device if device is None else device
        dtype = like.dtype if dtype is None else dtype
    t = torch.tensor(values, dtype=dtype)
    dev = torch.device("cpu" if device is None else device)
    return t if dev.type == "cpu" else t.to(dev, non_blocking=True)
