"""Batched constant-velocity Kalman filter over boxes, ByteTrack's ``xyah`` parametrisation, in NumPy.

State per track ``[cx, cy, a, h, vcx, vcy, va, vh]`` (centre, aspect ratio w/h, height and their
velocities); measurement ``[cx, cy, a, h]``. Every function works on ``T`` tracks at once:
``mean [T,8]``, ``cov [T,8,8]`` (float64 NumPy arrays, host memory). Noise is proportional to the
box height, with ByteTrack's weights (position 1/20, velocity 1/160).

The motion matrix ``F = [[I, I], [0, I]]`` (dt = 1) and the measurement matrix ``H = [I, 0]`` are
applied as block additions and slices instead of matrix products: the results are the same
numbers (every sum has at most two non-zero terms), without the ``8x8`` products per track.
"""

from __future__ import annotations

import numpy as np

__all__ = ["xyxy_to_xyah", "xyah_to_xyxy", "initiate", "predict", "update"]

_W_POS = 1.0 / 20
_W_VEL = 1.0 / 160
_I8 = np.arange(8)
_I4 = np.arange(4)
# per-column multipliers of the box height h for the standard deviations (0 = constant column)
_INIT_W = np.array([2 * _W_POS, 2 * _W_POS, 0.0, 2 * _W_POS, 10 * _W_VEL, 10 * _W_VEL, 0.0, 10 * _W_VEL])
_PRED_W = np.array([_W_POS, _W_POS, 0.0, _W_POS, _W_VEL, _W_VEL, 0.0, _W_VEL])
_MEAS_W = np.array([_W_POS, _W_POS, 0.0, _W_POS])


def xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    """``[N,4]`` x1,y1,x2,y2 -> ``[N,4]`` cx, cy, w/h, h (float64)."""
    w = b[:, 2] - b[:, 0]
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    out = np.empty((b.shape[0], 4))
    out[:, 0] = b[:, 0] + w / 2
    out[:, 1] = b[:, 1] + h / 2
    out[:, 2] = w / h
    out[:, 3] = h
    return out


def xyah_to_xyxy(m: np.ndarray) -> np.ndarray:
    """``[N,>=4]`` cx, cy, a, h (first 4 columns) -> ``[N,4]`` x1,y1,x2,y2 (float64)."""
    h = np.maximum(m[:, 3], 1e-3)
    w = np.maximum(m[:, 2], 1e-3) * h
    out = np.empty((m.shape[0], 4))
    out[:, 0] = m[:, 0] - w / 2
    out[:, 1] = m[:, 1] - h / 2
    out[:, 2] = m[:, 0] + w / 2
    out[:, 3] = m[:, 1] + h / 2
    return out


def initiate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements ``z [N,4]`` (xyah): ``mean [N,8]`` (zero velocity), ``cov [N,8,8]``."""
    n = z.shape[0]
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    std = z[:, 3, None] * _INIT_W
    std[:, 2], std[:, 6] = 1e-2, 1e-5
    cov = np.zeros((n, 8, 8))
    cov[:, _I8, _I8] = std * std
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> None:
    """One step ahead, **in place**: ``mean [T,8]``, ``cov [T,8,8]``."""
    if mean.shape[0] == 0:
        return
    std = mean[:, 3, None] * _PRED_W  # noise from the height before the step
    std[:, 2], std[:, 6] = 1e-2, 1e-5
    mean[:, :4] += mean[:, 4:]
    cov[:, :4, :] += cov[:, 4:, :]  # F @ P
    cov[:, :, :4] += cov[:, :, 4:]  # (F @ P) @ F^T
    cov[:, _I8, _I8] += std * std


def update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct ``mean [T,8]``, ``cov [T,8,8]`` with measurements ``z [T,4]`` (xyah), row by row;
    returns new arrays."""
    if mean.shape[0] == 0:
        return mean, cov
    std = mean[:, 3, None] * _MEAS_W
    std[:, 2] = 1e-1
    s = cov[:, :4, :4].copy()  # H P H^T + R  [T,4,4]
    s[:, _I4, _I4] += std * std
    pht = cov[:, :, :4]  # P H^T  [T,8,4]
    # K = P H^T S^-1  <=>  S K^T = H P  (S symmetric)
    k = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # [T,8,4]
    innov = z - mean[:, :4]
    mean = mean + np.matmul(k, innov[:, :, None])[:, :, 0]
    cov = cov - np.matmul(np.matmul(k, s), k.transpose(0, 2, 1))
    return mean, cov
