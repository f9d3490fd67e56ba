"""Tiling: several streams into one ``rows x cols`` mosaic, row-major by source id.

:func:`tile` is the pure op (one resize for the whole batch, then one copy per image);
:class:`Tiler` keeps the last frame of every source in a persistent mosaic on the device and
says when a mosaic is complete enough to emit. Each image is scaled to fit its cell with its
aspect ratio kept, centred, on black.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..batch import Batch

__all__ = ["tile", "grid_for", "Tiler"]


def grid_for(n: int) -> tuple[int, int]:
    """``(rows, cols)`` of the squarest grid holding ``n`` cells (cols >= rows)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _check_grid(rows: int, cols: int, size: Sequence[int]) -> tuple[int, int]:
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows}x{cols}")
    if len(size) != 2 or size[0] < cols or size[1] < rows:
        raise ValueError(f"size must be (width, height) with at least one pixel per cell, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _fit(h: int, w: int, ch: int, cw: int) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of an ``h x w`` image fitted into a ``ch x cw`` cell."""
    s = min(cw / w, ch / h)
    nh, nw = max(1, min(ch, round(h * s))), max(1, min(cw, round(w * s)))
    return nh, nw, (ch - nh) // 2, (cw - nw) // 2


def _resize(images: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """uint8 ``[B,3,H,W]`` -> uint8 ``[B,3,nh,nw]`` (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (nh, nw):
        return images
    shrink = nh < images.shape[-2] or nw < images.shape[-1]
    if not images.is_cuda:  # PyTorch has a fast uint8 path for bilinear on the CPU
        x = images.contiguous(memory_format=torch.channels_last)
        return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=shrink)
    out = F.interpolate(images.half(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=shrink)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def tile(images: torch.Tensor, slots: Sequence[int], rows: int, cols: int, size: Sequence[int],
         *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Place ``images`` uint8 ``[B,3,H,W]`` into a mosaic uint8 ``[3, size[1], size[0]]``.

    ``slots[i]`` is the cell of image ``i`` (row-major, ``0 .. rows*cols-1``; ``-1`` skips it);
    when two images share a cell the later one wins. Cells are ``size[0]//cols`` x
    ``size[1]//rows`` pixels; remainders stay black. ``out``: a mosaic to draw into (cells not in
    ``slots`` keep their pixels); a new black one otherwise.
    """
    width, height = _check_grid(rows, cols, size)
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images: expected uint8 [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
    if len(slots) != images.shape[0]:
        raise ValueError(f"slots: expected {images.shape[0]} entries (one per image), got {len(slots)}")
    for s in slots:
        if not -1 <= s < rows * cols:
            raise ValueError(f"slots: expected values in -1..{rows * cols - 1}, got {s}")
    if out is None:
        out = torch.zeros(3, height, width, dtype=torch.uint8, device=images.device)
    elif tuple(out.shape) != (3, height, width):
        raise ValueError(f"out: expected shape (3, {height}, {width}), got {tuple(out.shape)}")
    ch, cw = height // rows, width // cols
    nh, nw, top, left = _fit(int(images.shape[2]), int(images.shape[3]), ch, cw)
    keep = [i for i, s in enumerate(slots) if s >= 0]
    if not keep:
        return out
    small = _resize(images[keep] if len(keep) < len(slots) else images, nh, nw)
    for j, i in enumerate(keep):
        r, c = divmod(slots[i], cols)
        y, x = r * ch, c * cw
        out[:, y:y + ch, x:x + cw].zero_()
        out[:, y + top:y + top + nh, x + left:x + left + nw].copy_(small[j])
    return out


class Tiler:
    """Keeps a ``rows x cols`` mosaic of size ``size=(width, height)`` showing every source at the
    same step (``frame_num``), on the batch device.

    Sources get cells row-major by id: an int id ``k`` takes cell ``k`` when free, other ids take
    the next free cell in order of first appearance; sources beyond ``rows*cols`` are not shown.
    Frames arrive in whatever order the muxer batched them, so each source's frames wait
    (resized to the cell) until the mosaic of their step is emitted: mosaic ``n`` holds each
    source's latest frame with ``frame_num <= n``. It is emitted once every cell of the full
    grid has reached step ``n``, or when some source is ``max_lag`` steps ahead (a source that
    ended, stalled or never came keeps its last frame / stays black). :meth:`flush` emits the
    rest. So N file sources give one mosaic per frame step, aligned, whatever the batching.
    """

    def __init__(self, rows: int, cols: int, size: Sequence[int] = (1280, 720), *, max_lag: int = 15) -> None:
        self.width, self.height = _check_grid(rows, cols, size)
        if max_lag < 0:
            raise ValueError(f"max_lag must be >= 0, got {max_lag}")
        self.rows, self.cols, self.max_lag = rows, cols, int(max_lag)
        self.slots: dict[int | str, int] = {}
        self.canvas: torch.Tensor | None = None
        self.step = 0
        self._latest: dict[int | str, int] = {}
        self._pending: dict[int | str, list[tuple[int, torch.Tensor]]] = {}
        self._count: dict[int | str, int] = {}

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def slot(self, source_id: int | str) -> int:
        """The cell of ``source_id`` (assigned on first sight), ``-1`` when the grid is full."""
        s = self.slots.get(source_id)
        if s is None:
            used = set(self.slots.values())
            if isinstance(source_id, int) and 0 <= source_id < self.rows * self.cols and source_id not in used:
                s = source_id
            else:
                s = next((k for k in range(self.rows * self.cols) if k not in used), -1)
            if s >= 0:
                self.slots[source_id] = s
        return s

    def _emit(self) -> torch.Tensor:
        """Paint every source's latest frame with ``frame_num <= step`` and return a copy."""
        canvas = self.canvas
        assert canvas is not None            # made by update() before anything is emitted
        ch, cw = self.height // self.rows, self.width // self.cols
        for sid, queue in self._pending.items():
            ready = [img for n, img in queue if n <= self.step]
            if not ready:
                continue
            self._pending[sid] = [(n, img) for n, img in queue if n > self.step]
            img = ready[-1]
            nh, nw = int(img.shape[1]), int(img.shape[2])
            r, c = divmod(self.slots[sid], self.cols)
            y, x = r * ch + (ch - nh) // 2, c * cw + (cw - nw) // 2
            canvas[:, y:y + nh, x:x + nw].copy_(img)
        self.step += 1
        return canvas.clone()

    def _ready(self) -> bool:
        if not self._latest:
            return False
        ahead = max(self._latest.values()) - self.step
        full = len(self.slots) == self.rows * self.cols and all(self._latest.get(s, -1) >= self.step
                                                                 for s in self.slots)
        return full or ahead >= self.max_lag

    def update(self, images: torch.Tensor, source_ids: Sequence[int | str],
               frame_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Add ``images`` uint8 ``[B,3,H,W]`` of ``source_ids`` (at ``frame_nums``; default: each
        source's arrival count); returns the mosaics now complete (``[3, height, width]`` each,
        copies: safe to keep)."""
        if self.canvas is None or self.canvas.device != images.device:
            self.canvas = torch.zeros(3, self.height, self.width, dtype=torch.uint8, device=images.device)
        if len(source_ids) != images.shape[0]:
            raise ValueError(f"source_ids: expected {images.shape[0]} entries, got {len(source_ids)}")
        keep = [i for i, sid in enumerate(source_ids) if self.slot(sid) >= 0]
        if keep:
            ch, cw = self.height // self.rows, self.width // self.cols
            nh, nw, _, _ = _fit(int(images.shape[2]), int(images.shape[3]), ch, cw)
            small = _resize(images[keep], nh, nw)  # images[keep] is a copy: safe beyond this batch
            for j, i in enumerate(keep):
                sid = source_ids[i]
                n = int(frame_nums[i]) if frame_nums is not None else self._count.get(sid, 0)
                self._count[sid] = n + 1
                self._latest[sid] = max(n, self._latest.get(sid, -1))
                self._pending.setdefault(sid, []).append((n, small[j]))
        out = []
        while self._ready():
            out.append(self._emit())
        return out

    def write(self, batch: Batch) -> list[torch.Tensor]:
        """:meth:`update` with a batch's images, source ids and frame numbers."""
        return self.update(batch.images, [f.source_id for f in batch.frames], [f.frame_num for f in batch.frames])

    def flush(self) -> list[torch.Tensor]:
        """The remaining mosaics, up to the furthest step any source reached (call at the end)."""
        out = []
        while self._latest and self.step <= max(self._latest.values()):
            out.append(self._emit())
        return out
