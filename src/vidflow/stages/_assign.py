"""Association helpers for the tracker: IoU matrices, appearance cost, gated Hungarian matching.

The tracker calls these with NumPy arrays on the host; ``box_iou`` also takes torch tensors (any
device) and then returns a tensor, for tests and metrics code.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["box_iou", "pair_iou", "cosine_distance", "match", "BIG"]

BIG = 1e6
"""Cost of a pair that must not be matched (finite, so that it never makes the problem infeasible)."""


def box_iou(a, b):
    """IoU of xyxy boxes ``a [T,4]`` and ``b [D,4]`` -> ``[T,D]`` (NumPy arrays or torch tensors)."""
    if isinstance(a, torch.Tensor):
        area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
        area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def pair_iou(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of pairs of xyxy boxes ``a[ia[p]]``, ``b[ib[p]]``: ``a [T,4]``, ``b [D,4]``, ``ia``/``ib [P]``
    -> ``[P]`` (the same numbers as ``box_iou(a, b)[ia, ib]``)."""
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.minimum(a[ia, 2], b[ib, 2]) - np.maximum(a[ia, 0], b[ib, 0])
    ih = np.minimum(a[ia, 3], b[ib, 3]) - np.maximum(a[ia, 1], b[ib, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    return inter / np.maximum(area_a[ia] + area_b[ib] - inter, 1e-9)


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x [N,E]`` divided by their L2 norm (at least 1e-12), as ``torch.nn.functional.normalize``."""
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` between rows of ``a [T,E]`` and ``b [N,E]`` -> ``[T,N]`` in [0, 2]."""
    return 1.0 - _normalize(a) @ _normalize(b).T


def match(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of rows and columns of ``cost [T,D]`` (float64).

    Entries ``>= BIG`` (gated pairs) are never matched. Returns ``(rows, cols)`` int64 arrays of
    the matched pairs. When every row and every column has at most one allowed pair (the usual
    case with IoU gating) those pairs are the optimum and the Hungarian step is skipped.
    """
    ok = cost < BIG
    if (ok.sum(0) <= 1).all() and (ok.sum(1) <= 1).all():
        rows, cols = np.nonzero(ok)
        return rows, cols
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
