"""Association helpers for the tracker (NumPy, on the host): IoU of candidate pairs and gated
Hungarian matching."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["pair_iou", "match", "BIG"]

BIG = 1e6
"""Cost of a pair that must not be matched (finite, so that it never makes the problem infeasible)."""


def pair_iou(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of pairs of xyxy boxes ``a[ia[p]]``, ``b[ib[p]]``: ``a [T,4]``, ``b [D,4]``, ``ia``/``ib [P]``
    -> ``[P]`` (the same numbers as ``ops.nms.box_iou(a, b)[ia, ib]``)."""
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.minimum(a[ia, 2], b[ib, 2]) - np.maximum(a[ia, 0], b[ib, 0])
    ih = np.minimum(a[ia, 3], b[ib, 3]) - np.maximum(a[ia, 1], b[ib, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    return inter / np.maximum(area_a[ia] + area_b[ib] - inter, 1e-9)


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
