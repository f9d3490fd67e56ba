"""Non-maximum suppression: ``nms`` and class-aware ``batched_nms``.

torchvision's kernels are used when torchvision is importable; otherwise an exact pure-torch
greedy NMS runs (same definition as torchvision: boxes visited in descending score order, ties
by index (stable sort); a box is dropped when its IoU with an already kept box of the same group
is *strictly greater* than the threshold, compared in float64; IoU = inter / (area_a + area_b -
inter) in the boxes' dtype). torchvision's own kernels do not promise an order among equal
scores (its CPU sort is not stable), so for exact score ties the two may keep different boxes;
the pure version always visits the lower index first. Set ``VIDFLOW_PURE_NMS=1`` to force the pure version.
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["nms", "batched_nms", "nms_pure", "batched_nms_pure", "nms_padded", "box_iou", "HAS_TORCHVISION"]

try:  # optional dependency
    import torchvision.ops as _tvops

    HAS_TORCHVISION = True
except Exception:  # pragma: no cover - depends on the environment
    _tvops = None
    HAS_TORCHVISION = False

#: fixed-point iterations on the device before finishing the greedy pass on the host
_MAX_FIXED_POINT_ITERS = 12
#: largest group block whose IoU matrix is built in one go (elements = n*n)
_BLOCK = 4096


def _use_tv() -> bool:
    return HAS_TORCHVISION and os.environ.get("VIDFLOW_PURE_NMS", "") in ("", "0")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes ``a [N,4]`` and ``b [M,4]`` -> ``[N,M]``, torchvision's arithmetic."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _greedy_sorted(boxes: torch.Tensor, groups: torch.Tensor | None, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS over boxes already sorted by descending score. Returns a keep mask ``[N]``.

    ``M[j, i]`` (j < i) = box j would suppress box i. The greedy answer is the unique fixed point
    of ``keep[i] = not any(keep[j] and M[j, i] for j < i)``; iterating from all-True fixes at least
    one more leading entry per step, so it converges (usually in 2-4 steps) and each step is one
    batched op on the device. Long suppression chains finish with an exact host-side sweep.
    """
    n = boxes.shape[0]
    # compared in float64 like torchvision's kernels (float IoU promoted to double)
    m = box_iou(boxes, boxes).double() > float(iou_threshold)
    if groups is not None:
        m &= groups[:, None] == groups[None, :]
    m = torch.triu(m, diagonal=1)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for _ in range(_MAX_FIXED_POINT_ITERS):
        new = ~(m & keep[:, None]).any(0)
        if torch.equal(new, keep):
            return keep
        keep = new
    mh = m.cpu().numpy()
    sup = np.zeros(n, dtype=bool)
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        if not sup[i]:
            out[i] = True
            sup |= mh[i]
    return torch.from_numpy(out).to(boxes.device)


def nms_pure(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Pure-torch ``nms``: ``boxes [N,4]`` xyxy, ``scores [N]`` -> kept indices ``[K]`` int64,
    in descending score order."""
    return batched_nms_pure(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_threshold)


def batched_nms_pure(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                     iou_threshold: float) -> torch.Tensor:
    """Pure-torch ``batched_nms``: NMS within each group ``idxs [N]`` (class, or image*C+class).

    Returns kept indices ``[K]`` int64 sorted by descending score (ties: lower index first)."""
    _check(boxes, scores, idxs)
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    if n * n <= _BLOCK * _BLOCK:
        keep = _greedy_sorted(boxes[order], idxs[order], iou_threshold)
        return order[keep]
    # large inputs: groups are independent; build blocks of whole groups sorted by group, stable
    g_order = torch.sort(idxs[order], stable=True).indices
    perm = order[g_order]  # sorted by group, then by descending score
    counts = torch.unique_consecutive(idxs[perm], return_counts=True)[1].tolist()
    kept, start = [], 0
    while start < len(counts):
        end, size = start, 0
        while end < len(counts) and (size == 0 or size + counts[end] <= _BLOCK):
            size += counts[end]
            end += 1
        lo = sum(counts[:start])
        sel = perm[lo:lo + size]
        kept.append(sel[_greedy_sorted(boxes[sel], idxs[sel], iou_threshold)])
        start = end
    k = torch.cat(kept)
    # back to descending score order, ties by original index as torchvision
    pos = torch.empty(n, dtype=torch.int64, device=boxes.device)
    pos[order] = torch.arange(n, device=boxes.device)
    return k[torch.sort(pos[k]).indices]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-agnostic NMS. ``boxes [N,4]`` xyxy, ``scores [N]`` -> kept indices ``[K]`` int64."""
    if _use_tv():
        return _tvops.nms(boxes, scores, float(iou_threshold))
    return nms_pure(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` value.

    ``boxes [N,4]`` xyxy, ``scores [N]``, ``idxs [N]`` int64 -> kept indices ``[K]`` int64
    in descending score order."""
    if _use_tv():
        return _tvops.batched_nms(boxes, scores, idxs, float(iou_threshold))
    return batched_nms_pure(boxes, scores, idxs, iou_threshold)


def _check(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if scores.shape != (n,) or idxs.shape != (n,):
        raise ValueError(f"scores/idxs: expected shape ({n},), got {tuple(scores.shape)} / {tuple(idxs.shape)}")


def nms_padded(boxes: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, iou_threshold: float, *,
               check_every: int = 4, max_elements: int = 1 << 27) -> torch.Tensor:
    """Greedy NMS of a whole batch at once, frames side by side: ``boxes [B,K,4]`` xyxy, already
    sorted by descending score within each frame (ties: lower index first), ``groups [B,K]`` (a
    box only suppresses boxes of its own group, e.g. its class), ``valid [B,K]`` bool (padding
    rows False). Returns ``keep [B,K]`` bool on the device.

    Same definition as :func:`batched_nms_pure` per frame (IoU compared in float64, strictly
    greater than the threshold suppresses). The greedy answer is the fixed point of
    ``keep[i] = valid[i] and not any(keep[j] and M[j, i] for j < i)``; each step is one batched
    op for all frames, and convergence is checked (one tiny host sync) every ``check_every``
    steps, so a batch typically costs one or two syncs whatever its size. Frames are processed in
    chunks of at most ``max_elements`` IoU entries."""
    if boxes.dim() != 3 or boxes.shape[2] != 4:
        raise ValueError(f"boxes: expected shape (B, K, 4), got {tuple(boxes.shape)}")
    b, k = boxes.shape[:2]
    if groups.shape != (b, k) or valid.shape != (b, k):
        raise ValueError(f"groups/valid: expected shape ({b}, {k}), got {tuple(groups.shape)} / {tuple(valid.shape)}")
    if b == 0 or k == 0:
        return valid.clone()
    step = max(1, int(max_elements) // max(k * k, 1))
    out = [_padded_chunk(boxes[s:s + step], groups[s:s + step], valid[s:s + step], iou_threshold,
                         max(1, int(check_every))) for s in range(0, b, step)]
    return out[0] if len(out) == 1 else torch.cat(out)


def _padded_chunk(boxes: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, thr: float,
                  every: int) -> torch.Tensor:
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    m = iou.double() > float(thr)
    del iou, inter, wh, lt, rb
    m &= groups[:, :, None] == groups[:, None, :]
    m &= valid[:, :, None]
    m = torch.triu(m, diagonal=1)                    # m[b, j, i]: j (before i) would suppress i
    keep = valid.clone()
    mf = m.to(torch.float16 if m.is_cuda else torch.float32)
    k = keep.shape[1]
    for it in range(k + 1):
        new = valid & ~(torch.bmm(keep.to(mf.dtype)[:, None, :], mf)[:, 0] > 0)
        if (it + 1) % every == 0 or it == k:
            if torch.equal(new, keep):
                return new
        keep = new
    return keep
