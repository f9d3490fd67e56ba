"""Batched constant-velocity Kalman filter over boxes, ByteTrack's ``xyah`` parametrisation.

State per track ``[cx, cy, a, h, vcx, vcy, va, vh]`` (centre, aspect ratio w/h, height and their
velocities); measurement ``[cx, cy, a, h]``. Every function works on ``T`` tracks at once:
``mean [T,8]``, ``cov [T,8,8]`` (float64, any device). Noise is proportional to the box height,
with ByteTrack's weights (position 1/20, velocity 1/160).
"""

from __future__ import annotations

import torch

__all__ = ["xyxy_to_xyah", "xyah_to_xyxy", "initiate", "predict", "update"]

_W_POS = 1.0 / 20
_W_VEL = 1.0 / 160
_MATS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _mats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion matrix ``F [8,8]`` (dt = 1) and measurement matrix ``H [4,8]``, cached per device."""
    key = (device, dtype)
    if key not in _MATS:
        f = torch.eye(8, dtype=dtype, device=device)
        f[:4, 4:] = torch.eye(4, dtype=dtype, device=device)
        _MATS[key] = (f, torch.eye(4, 8, dtype=dtype, device=device))
    return _MATS[key]


def xyxy_to_xyah(b: torch.Tensor) -> torch.Tensor:
    """``[N,4]`` x1,y1,x2,y2 -> ``[N,4]`` cx, cy, w/h, h."""
    w = b[:, 2] - b[:, 0]
    h = (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    return torch.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w / h, h], 1)


def xyah_to_xyxy(m: torch.Tensor) -> torch.Tensor:
    """``[N,>=4]`` cx, cy, a, h (first 4 columns) -> ``[N,4]`` x1,y1,x2,y2."""
    h = m[:, 3].clamp(min=1e-3)
    w = m[:, 2].clamp(min=1e-3) * h
    return torch.stack([m[:, 0] - w / 2, m[:, 1] - h / 2, m[:, 0] + w / 2, m[:, 1] + h / 2], 1)


def initiate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New tracks from measurements ``z [N,4]`` (xyah): ``mean [N,8]`` (zero velocity), ``cov [N,8,8]``."""
    h = z[:, 3]
    mean = torch.cat([z, torch.zeros_like(z)], 1)
    one = torch.ones_like(h)
    std = torch.stack([2 * _W_POS * h, 2 * _W_POS * h, 1e-2 * one, 2 * _W_POS * h,
                       10 * _W_VEL * h, 10 * _W_VEL * h, 1e-5 * one, 10 * _W_VEL * h], 1)
    return mean, torch.diag_embed(std * std)


def predict(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step ahead: ``mean [T,8]``, ``cov [T,8,8]`` -> predicted (new tensors)."""
    if mean.shape[0] == 0:
        return mean, cov
    f, _ = _mats(mean.device, mean.dtype)
    h = mean[:, 3]
    one = torch.ones_like(h)
    std = torch.stack([_W_POS * h, _W_POS * h, 1e-2 * one, _W_POS * h,
                       _W_VEL * h, _W_VEL * h, 1e-5 * one, _W_VEL * h], 1)
    mean = mean @ f.T
    cov = f @ cov @ f.T + torch.diag_embed(std * std)
    return mean, cov


def update(mean: torch.Tensor, cov: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct ``mean [T,8]``, ``cov [T,8,8]`` with measurements ``z [T,4]`` (xyah), row by row."""
    if mean.shape[0] == 0:
        return mean, cov
    _, hm = _mats(mean.device, mean.dtype)
    h = mean[:, 3]
    one = torch.ones_like(h)
    std = torch.stack([_W_POS * h, _W_POS * h, 1e-1 * one, _W_POS * h], 1)
    s = hm @ cov @ hm.T + torch.diag_embed(std * std)  # [T,4,4]
    pht = cov @ hm.T  # [T,8,4]
    # K = P H^T S^-1  <=>  S K^T = H P  (S symmetric)
    k = torch.linalg.solve(s, pht.transpose(1, 2)).transpose(1, 2)  # [T,8,4]
    innov = z - mean[:, :4]
    mean = mean + (k @ innov.unsqueeze(-1)).squeeze(-1)
    cov = cov - k @ s @ k.transpose(1, 2)
    return mean, cov
