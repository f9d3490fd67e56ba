"""Association helpers for the tracker: IoU matrices, appearance cost, gated Hungarian matching."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["box_iou", "cosine_distance", "match"]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes ``a [T,4]`` and ``b [D,4]`` -> ``[T,D]``."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between rows of ``a [T,D]`` and ``b [N,D]`` -> ``[T,N]`` in [0, 2]."""
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    return 1.0 - a @ b.T


def match(cost: torch.Tensor, max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of rows and columns of ``cost [T,D]``.

    Pairs whose cost exceeds ``max_cost`` (or is not finite) are never matched. Returns
    ``(rows, cols)`` int64 NumPy arrays of the matched pairs (one host copy of ``cost``).
    """
    t, d = cost.shape
    if t == 0 or d == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    c = cost.detach().to("cpu", torch.float64).numpy()
    bad = ~np.isfinite(c) | (c > max_cost)
    c = np.where(bad, 1e6, c)  # finite: an infeasible pair must not make the problem infeasible
    rows, cols = linear_sum_assignment(c)
    keep = ~bad[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
