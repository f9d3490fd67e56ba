"""Batched constant-velocity Kalman filter over boxes, ByteTrack's ``xyah`` parametrisation, in NumPy.

State per track ``[cx, cy, a, h, vcx, vcy, va, vh]`` (centre, aspect ratio w/h, height and their
velocities); measurement ``[cx, cy, a, h]``. Noise is proportional to the box height, with
ByteTrack's weights (position 1/20, velocity 1/160).

The covariance is kept in **block form**: with ``F = [[I, I], [0, I]]``, ``H = [I, 0]`` and
diagonal noise, coordinate ``j`` and its velocity ``j+4`` never mix with the other coordinates
(a full ``8x8`` covariance started diagonal keeps exact zeros outside these four ``2x2`` blocks
through every predict and update). So ``cov [T,4,4]`` holds, per track and coordinate ``j``,
``[P[j,j], P[j,j+4], P[j+4,j], P[j+4,j+4]]`` (both off-diagonal entries: the full filter does
not keep them bitwise equal). The innovation covariance is then diagonal and the Kalman gain a
division. Every number is the one the full ``8x8`` filter (``np.linalg.solve`` on
``[T,4,4]``, OpenBLAS) computes, bit for bit: same operations in the same order, the products
with exact zeros left out (``tests/unit/test_track_reference.py`` checks it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["xyxy_to_xyah", "xyah_to_xyxy", "initiate", "predict", "update", "XX", "XV", "VX", "VV"]

_W_POS = 1.0 / 20
_W_VEL = 1.0 / 160
#: the four entries of a coordinate's 2x2 block in ``cov[:, j, :]``
XX, XV, VX, VV = 0, 1, 2, 3
# per-coordinate multipliers of the box height h for the standard deviations of the coordinate
# (position) and of its velocity; the aspect ratio's are constants (set below)
_INIT_P = np.array([2 * _W_POS, 2 * _W_POS, 0.0, 2 * _W_POS])
_INIT_V = np.array([10 * _W_VEL, 10 * _W_VEL, 0.0, 10 * _W_VEL])
_PRED_P = np.array([_W_POS, _W_POS, 0.0, _W_POS])
_PRED_V = np.array([_W_VEL, _W_VEL, 0.0, _W_VEL])
_MEAS = np.array([_W_POS, _W_POS, 0.0, _W_POS])


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
    """New tracks from measurements ``z [N,4]`` (xyah): ``mean [N,8]`` (zero velocity), ``cov [N,4,4]``."""
    n = z.shape[0]
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    sp, sv = z[:, 3, None] * _INIT_P, z[:, 3, None] * _INIT_V
    sp[:, 2], sv[:, 2] = 1e-2, 1e-5
    cov = np.zeros((n, 4, 4))
    cov[:, :, XX] = sp * sp
    cov[:, :, VV] = sv * sv
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> None:
    """One step ahead, **in place**: ``mean [T,8]``, ``cov [T,4,4]`` (block form)."""
    if mean.shape[0] == 0:
        return
    h = mean[:, 3, None]                   # noise from the height before the step
    sp, sv = h * _PRED_P, h * _PRED_V
    sp[:, 2], sv[:, 2] = 1e-2, 1e-5
    mean[:, :4] += mean[:, 4:]
    xx, xv, vx, vv = cov[:, :, XX], cov[:, :, XV], cov[:, :, VX], cov[:, :, VV]
    a = xx + vx                            # F @ P: position rows += velocity rows
    b = xv + vv
    cov[:, :, XX] = a + b                  # (F @ P) @ F^T: position columns += velocity columns
    cov[:, :, VX] = vx + vv
    cov[:, :, XV] = b
    cov[:, :, XX] += sp * sp               # + Q (diagonal)
    cov[:, :, VV] += sv * sv


def update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct ``mean [T,8]``, ``cov [T,4,4]`` (block form) with measurements ``z [T,4]`` (xyah),
    row by row; returns new arrays."""
    if mean.shape[0] == 0:
        return mean, cov
    std = mean[:, 3, None] * _MEAS
    std[:, 2] = 1e-1
    xx, xv, vx, vv = cov[:, :, XX], cov[:, :, XV], cov[:, :, VX], cov[:, :, VV]
    s = xx + std * std                     # H P H^T + R: diagonal [T,4]
    inv = 1.0 / s                          # LAPACK's solve multiplies by the pivot's reciprocal
    kp, kv = xx * inv, vx * inv            # gain rows j and j+4 of column j
    innov = z - mean[:, :4]
    out_m = np.empty_like(mean)
    out_m[:, :4] = mean[:, :4] + kp * innov
    out_m[:, 4:] = mean[:, 4:] + kv * innov
    ksp, ksv = kp * s, kv * s              # K @ S
    out_c = np.empty_like(cov)             # P - (K S) K^T
    out_c[:, :, XX] = xx - ksp * kp
    out_c[:, :, XV] = xv - ksp * kv
    out_c[:, :, VX] = vx - ksv * kp
    out_c[:, :, VV] = vv - ksv * kv
    return out_m, out_c
