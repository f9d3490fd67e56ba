"""Instance masks: built on the device for a whole batch, kept compact, encoded as COCO RLE.

:class:`Masks` holds one **box-cropped** binary mask per object: ``data [N, H, W]`` bool (the
object's pixels from its top-left corner ``origin [N, 2]`` (x0, y0) in source pixels; rows and
columns beyond the object's own box are False), so a batch costs N box-sized planes, never N
full frames.

:func:`assemble` makes them from YOLO-seg outputs the way Ultralytics makes its
``retina_masks=True`` masks (``process_mask_native`` + ``scale_masks``): mask logits
``coefficients @ prototypes`` at prototype resolution, the letterbox padding cropped off,
bilinear upsampling (``align_corners=False``) to source pixels, ``logit > 0`` (sigmoid > 0.5),
zero outside the box (pixel ``(x, y)`` kept when ``x1 <= x < x2`` and ``y1 <= y < y2``). Only the
pixels inside each box are computed, from a small window of prototypes around it.

:func:`to_rle` turns masks into COCO run-length encodings (``{"size": [h, w], "counts": str}``,
pycocotools' compressed form; column-major runs starting with zeros); the run boundaries are
found on the device and only they are copied to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Masks", "assemble", "proto_spans", "to_rle", "rle_counts", "encode_counts", "decode_counts"]

#: largest number of output pixels sampled in one go (objects are chunked above it)
_CHUNK = 1 << 25


@dataclass(frozen=True, repr=False)
class Masks:
    """Box-cropped instance masks of N objects (see the module text)."""

    data: torch.Tensor      # [N, H, W] bool
    origin: torch.Tensor    # [N, 2] int64 (x0, y0) source pixels of data[:, 0, 0]

    def __post_init__(self) -> None:
        d, o = self.data, self.origin
        if not isinstance(d, torch.Tensor) or d.dim() != 3 or d.dtype != torch.bool:
            raise ValueError(f"Masks.data: expected a bool tensor [N, H, W], got {_desc(d)}")
        if not isinstance(o, torch.Tensor) or tuple(o.shape) != (d.shape[0], 2) or o.dtype != torch.int64:
            raise ValueError(f"Masks.origin: expected int64 [{d.shape[0]}, 2], got {_desc(o)}")
        if o.device != d.device:
            raise ValueError(f"Masks.origin: expected device {d.device}, got {o.device}")

    @classmethod
    def empty(cls, n: int = 0, device: torch.device | str = "cpu") -> Masks:
        return cls(torch.zeros(n, 0, 0, dtype=torch.bool, device=device),
                   torch.zeros(n, 2, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def device(self) -> torch.device:
        return self.data.device

    def __getitem__(self, index: Any) -> Masks:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Masks(self.data[index], self.origin[index])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Masks:
        return Masks(self.data.to(device, non_blocking=non_blocking), self.origin.to(device, non_blocking=non_blocking))

    @classmethod
    def cat(cls, parts: Sequence[Masks]) -> Masks:
        if not parts:
            return cls.empty()
        h = max(p.data.shape[1] for p in parts)
        w = max(p.data.shape[2] for p in parts)
        data = [torch.nn.functional.pad(p.data, (0, w - p.data.shape[2], 0, h - p.data.shape[1])) for p in parts]
        return cls(torch.cat(data), torch.cat([p.origin for p in parts]))

    def area(self) -> torch.Tensor:
        """``[N]`` int64 pixel counts."""
        return self.data.flatten(1).sum(1)

    def full(self, width: int, height: int) -> torch.Tensor:
        """``[N, height, width]`` bool full-frame planes (for drawing or tests; large)."""
        n, h, w = self.data.shape
        out = torch.zeros(n, height + h, width + w, dtype=torch.bool, device=self.device)
        if n and h and w:
            ys = self.origin[:, 1, None, None] + torch.arange(h, device=self.device)[None, :, None]
            xs = self.origin[:, 0, None, None] + torch.arange(w, device=self.device)[None, None, :]
            idx = torch.arange(n, device=self.device)[:, None, None]
            out[idx, ys.expand(n, h, w), xs.expand(n, h, w)] = self.data
        return out[:, :height, :width]

    def __repr__(self) -> str:
        return f"Masks(n={len(self)}, crop={list(self.data.shape[1:])}, device={self.device})"


def proto_spans(content: torch.Tensor) -> torch.Tensor:
    """Letterbox content ``[B, 4]`` (x0, y0, x1, y1) in prototype pixels (floats) -> the integer
    span Ultralytics' ``scale_masks`` crops: ``left = round(x0 - 0.1)``, ``right = left +
    max(round(x1 - x0), 1)`` (same for rows)."""
    lt = torch.round(content[:, :2] - 0.1)
    size = torch.round(content[:, 2:] - content[:, :2]).clamp(min=1)
    return torch.cat([lt, lt + size], 1)


def assemble(protos: torch.Tensor, coeffs: torch.Tensor, frame_idx: torch.Tensor, boxes: torch.Tensor,
             spans: torch.Tensor, sizes: torch.Tensor) -> Masks:
    """Masks of N objects at source resolution (see the module text).

    ``protos [B, M, mh, mw]``; ``coeffs [N, M]``; ``frame_idx [N]``; ``boxes [N, 4]`` xyxy in
    source pixels (clipped to the frame); ``spans [B, 4]`` the integer span (left, top, right,
    bottom) of each frame's source content in prototype pixels (:func:`proto_spans`); ``sizes
    [B, 2]`` source (width, height). One tiny host sync (the largest box and window)."""
    dev = protos.device
    n = coeffs.shape[0]
    if n == 0:
        return Masks.empty(0, dev)
    _, _, mh, mw = protos.shape
    sp = spans.to(dev, torch.float32)[frame_idx]                  # [N, 4]
    wh = sizes.to(dev, torch.float32)[frame_idx]                  # [N, 2] source w, h
    scale = (sp[:, 2:] - sp[:, :2]) / wh                          # proto px per source px (x, y)
    lo = torch.ceil(boxes[:, :2]).clamp(min=0)
    hi = torch.minimum(torch.ceil(boxes[:, 2:]), wh)
    ext = (hi - lo).clamp(min=0)                                  # object's pixel extent (w, h)

    def proto_coord(pix: torch.Tensor, axis: int, sl: slice = slice(None)) -> torch.Tensor:
        """source pixel index [n, k] -> proto coordinate, clamped to the content span"""
        p = sp[sl, axis, None] + (pix + 0.5) * scale[sl, axis, None] - 0.5
        return torch.minimum(p.maximum(sp[sl, axis, None]), sp[sl, axis + 2, None] - 1)

    first = torch.stack([proto_coord(lo[:, a, None], a)[:, 0] for a in (0, 1)], 1).floor()
    last = torch.stack([proto_coord((lo[:, a] + ext[:, a] - 1).clamp(min=0)[:, None], a)[:, 0]
                        for a in (0, 1)], 1).floor() + 1
    win = (last - first + 1).clamp(min=1)
    ew, eh, ww, wh_ = torch.stack([ext[:, 0].max(), ext[:, 1].max(), win[:, 0].max(), win[:, 1].max()]).long().tolist()
    if ew == 0 or eh == 0:
        return Masks(torch.zeros(n, eh, ew, dtype=torch.bool, device=dev), lo.long())
    ww, wh_ = min(ww, mw), min(wh_, mh)
    first = torch.minimum(first, sp[:, 2:] - 1).long()
    out = torch.empty(n, eh, ew, dtype=torch.bool, device=dev)
    step = max(1, _CHUNK // (eh * ew))
    ar_w, ar_h = torch.arange(ww, device=dev), torch.arange(wh_, device=dev)
    jx, iy = torch.arange(ew, device=dev, dtype=torch.float32), torch.arange(eh, device=dev, dtype=torch.float32)
    for s in range(0, n, step):
        sl = slice(s, s + step)
        f, fi = first[sl], frame_idx[sl]
        cols = torch.minimum(f[:, 0, None] + ar_w, sp[sl, 2, None].long() - 1)          # [n, ww]
        rows = torch.minimum(f[:, 1, None] + ar_h, sp[sl, 3, None].long() - 1)          # [n, wh]
        win_p = protos[fi[:, None, None], :, rows[:, :, None], cols[:, None, :]]        # [n, wh, ww, M]
        logits = torch.einsum("nhwm,nm->nhw", win_p.float(), coeffs[sl].float())
        qx = proto_coord(lo[sl, 0, None] + jx, 0, sl) - f[:, 0, None]                        # [n, ew]
        qy = proto_coord(lo[sl, 1, None] + iy, 1, sl) - f[:, 1, None]                        # [n, eh]
        val = _bilinear(logits, qy, qx)
        inside = (iy[None, :, None] < ext[sl, 1, None, None]) & (jx[None, None, :] < ext[sl, 0, None, None])
        out[sl] = (val > 0) & inside
    return Masks(out, lo.long())


def _bilinear(img: torch.Tensor, qy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
    """Sample ``img [n, h, w]`` at rows ``qy [n, H]`` x columns ``qx [n, W]`` (F.interpolate's
    bilinear arithmetic; coordinates already clamped to the valid range)."""
    n, h, w = img.shape
    y0 = qy.floor().long().clamp(0, h - 1)
    x0 = qx.floor().long().clamp(0, w - 1)
    ly, lx = (qy - y0).clamp(0, 1), (qx - x0).clamp(0, 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    idx = torch.arange(n, device=img.device)[:, None, None]

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return img[idx, yy[:, :, None], xx[:, None, :]]

    top = (1 - lx)[:, None, :] * at(y0, x0) + lx[:, None, :] * at(y0, x1)
    bot = (1 - lx)[:, None, :] * at(y1, x0) + lx[:, None, :] * at(y1, x1)
    return (1 - ly)[:, :, None] * top + ly[:, :, None] * bot


# COCO RLE ------------------------------------------------------------------------------------
def rle_counts(masks: Masks, heights: torch.Tensor | Sequence[int]) -> list[list[int]]:
    """Where each run starts, per mask placed in its frame: column-major pixel indices (the run
    lengths pycocotools counts are their differences). ``heights [N]``: each object's frame
    height. Run boundaries are computed on the device; one copy of them comes to the host."""
    n = len(masks)
    if n == 0:
        return []
    obj, pos = rle_change_points(masks, heights)
    bounds = np.searchsorted(obj, np.arange(n + 1))
    return [pos[a:b].tolist() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _counts_from_changes(changes: list[int], total: int) -> list[int]:
    counts, prev = [], 0
    for p in changes:
        counts.append(p - prev)
        prev = p
    if total > prev or not counts:
        counts.append(total - prev)
    return counts


def encode_counts(counts: Sequence[int]) -> str:
    """pycocotools' compressed RLE string (``rleToString``) of run lengths."""
    out = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def decode_counts(s: str) -> list[int]:
    """Inverse of :func:`encode_counts` (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def to_rle(masks: Masks, sizes: torch.Tensor | Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """COCO RLE of each mask in its frame: ``sizes [N, 2]`` (width, height) of each object's
    frame -> ``[{"size": [h, w], "counts": "<compressed>"}, ...]`` (``pycocotools.mask.decode``
    reads them)."""
    sz = torch.as_tensor(sizes, dtype=torch.int64).reshape(-1, 2).cpu()
    if sz.shape[0] != len(masks):
        raise ValueError(f"sizes: expected {len(masks)} (width, height) rows, got {sz.shape[0]}")
    if len(masks) == 0:
        return []
    strings = rle_strings_from_changes(*rle_change_points(masks, sz[:, 1]), sz.numpy())
    return [{"size": [h, w], "counts": c} for (w, h), c in zip(sz.tolist(), strings)]


def rle_change_points(masks: Masks, heights: torch.Tensor | np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The device half of :func:`to_rle`: ``(object, pixel)`` of every run start of each mask
    in its frame (``heights [N]``: each object's frame height), column-major, ascending per
    object, on the host (one copy); a run that ends at a column's bottom and one that starts at
    the next column's top (a mask as high as its frame) are one run. With
    :func:`rle_strings_from_changes` (host work only, any thread) it gives :func:`to_rle`'s
    counts: a pipeline finds the run starts where the batch is finished and leaves the strings
    to the sink's own thread."""
    n = len(masks)
    dev = masks.device
    hts = torch.as_tensor(heights, dtype=torch.int64).to(dev, non_blocking=True).reshape(n)
    padded = torch.nn.functional.pad(masks.data, (0, 0, 1, 1)).transpose(1, 2).to(torch.int8)  # [N, W, h+2]
    change = padded[:, :, 1:] != padded[:, :, :-1]                                             # between r and r+1
    obj, col, r = change.nonzero(as_tuple=True)
    pos = (masks.origin[obj, 0] + col) * hts[obj] + masks.origin[obj, 1] + r
    both = torch.stack([obj, pos]).cpu().numpy()                                   # one copy
    o, p = both[0], both[1]
    if len(p) > 1:
        dup = (o[1:] == o[:-1]) & (p[1:] == p[:-1])
        if dup.any():
            drop = np.zeros(len(p), dtype=bool)
            drop[1:] |= dup
            drop[:-1] |= dup
            o, p = o[~drop], p[~drop]
    return o, p


def rle_strings_from_changes(obj: np.ndarray, pos: np.ndarray, sizes: np.ndarray) -> list[str]:
    """pycocotools' compressed counts from :func:`rle_change_points`' output; ``sizes [N, 2]``
    (width, height) of each object's frame. NumPy only."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    n = len(sizes)
    if n == 0:
        return []
    total = sizes[:, 0] * sizes[:, 1]
    # each object's change points, then its frame's pixel count: counts are the differences
    obj = np.asarray(obj, dtype=np.int64)
    pos = np.asarray(pos, dtype=np.int64)
    if len(obj) > 1 and (obj[1:] < obj[:-1]).any():   # rle_change_points' rows come object by object
        keep = np.lexsort((pos, obj))
        obj, pos = obj[keep], pos[keep]
    # after each object's last change point, its frame's pixel count (a merge, no sort)
    at = np.searchsorted(obj, np.arange(n), side="right")
    e_obj = np.insert(obj, at, np.arange(n))
    e_val = np.insert(pos, at, total)
    last = np.insert(np.zeros(len(pos), dtype=bool), at, True)
    first = np.ones(len(e_obj), dtype=bool)
    first[1:] = e_obj[1:] != e_obj[:-1]
    prev = np.zeros(len(e_val), dtype=np.int64)
    prev[1:] = e_val[:-1]
    prev[first] = 0
    counts = e_val - prev
    keep = ~(last & ~first & (counts == 0))           # no trailing zero run (the mask ends the frame)
    c_obj, counts = e_obj[keep], counts[keep]
    start = np.searchsorted(c_obj, np.arange(n))
    idx = np.arange(len(counts)) - start[c_obj]
    x = counts.copy()
    later = np.flatnonzero(idx > 2)
    x[later] -= counts[later - 2]                      # rleToString: deltas from two counts back
    # 5 bits a character, lowest first; bit 0x20: more follow; the last character's bit 0x10 is
    # the sign, so a value takes k characters for the smallest k with -16*32**(k-1) <= x < 16*32**(k-1)
    k = np.ones(len(x), dtype=np.int64)
    for j in range(1, 13):                             # |x| < 2**63: at most 13 characters
        wide = (x >= (16 << (5 * (j - 1)))) | (x < -(16 << (5 * (j - 1))))
        if not wide.any():
            break
        k += wide
    width = int(k.max()) if len(k) else 1
    col = np.arange(width)
    digits = (x[:, None] >> (5 * col)) & 0x1F                          # [M, width]
    ch = (digits | np.where(col < (k - 1)[:, None], 0x20, 0)) + 48
    text = ch.astype(np.uint8)[col < k[:, None]].tobytes().decode("ascii")
    ck = np.concatenate([[0], np.cumsum(k)])          # characters before each count
    ends = ck[np.append(start[1:], len(k))]            # c_obj is ascending: object i's counts end there
    per = ends - ck[start]
    return [text[e - m:e] for e, m in zip(ends.tolist(), per.tolist())]


def _desc(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"
    return type(t).__name__
