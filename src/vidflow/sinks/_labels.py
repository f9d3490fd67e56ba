"""Legible boxes and captions for the video sink: a glyph-size floor and collision-aware caption
placement, drawn with the pure ops of ``ops.draw`` (``draw_boxes``, ``draw_text``).

:func:`place_labels` puts each caption (greedily, largest box first) at the first free spot of:
above the box, below it, inside its top edge, above its right edge, then further above; a spot
is free when it overlaps no caption placed before in the same frame and stays in the image.
When none is free it takes the spot overlapping least.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..ops import _font
from ..ops._const import const
from ..ops.draw import PALETTE, draw_boxes, draw_text, text_size

__all__ = ["place_labels", "draw_annotations", "colors_for"]


def place_labels(boxes: np.ndarray, wh: np.ndarray, frame_idx: np.ndarray, size: tuple[int, int],
                 pad: int = 1) -> np.ndarray:
    """Top-left ``(x, y)`` of each caption: ``boxes`` ``[N,4]`` xyxy and ``wh`` ``[N,2]`` caption
    sizes in image pixels, ``frame_idx`` ``[N]``, ``size`` = image ``(W, H)``. Returns ``[N,2]``."""
    n = len(boxes)
    out = np.zeros((n, 2), np.float32)
    W, H = size
    for f in np.unique(frame_idx):
        idx = np.flatnonzero(frame_idx == f)
        area = (boxes[idx, 2] - boxes[idx, 0]) * (boxes[idx, 3] - boxes[idx, 1])
        placed: list[tuple[float, float, float, float]] = []
        for i in idx[np.argsort(-area, kind="stable")]:
            x1, y1, x2, y2 = boxes[i]
            w, h = wh[i]
            cands = [(x1, y1 - h - pad), (x1, y2 + pad), (x1 + pad, y1 + pad), (x2 - w, y1 - h - pad),
                     (x1, y1 - 2 * (h + pad)), (x1, y1 - 3 * (h + pad)), (x1, y2 + h + 2 * pad)]
            best, best_ov = None, None
            for cx, cy in cands:
                cx = float(min(max(cx, 0), max(W - w, 0)))
                cy = float(min(max(cy, 0), max(H - h, 0)))
                ov = 0.0
                for px, py, pw, ph in placed:
                    ox = min(cx + w, px + pw) - max(cx, px)
                    oy = min(cy + h, py + ph) - max(cy, py)
                    if ox > 0 and oy > 0:
                        ov += ox * oy
                if best_ov is None or ov < best_ov:
                    best, best_ov = (cx, cy), ov
                if ov == 0:
                    break
            assert best is not None               # (there is always a candidate)
            out[i] = best
            placed.append((best[0], best[1], float(w), float(h)))
    return out


def colors_for(object_id: torch.Tensor, class_id: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N,3]``: the palette colour of each track (or class when untracked), as ``Annotate``."""
    pal = const(PALETTE, device=object_id.device, dtype=torch.uint8)
    key = torch.where(object_id >= 0, object_id, class_id)
    return pal[key.remainder(len(PALETTE))]


def draw_annotations(images: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor, texts: Sequence[str],
                     colors: torch.Tensor, *, scale: int, thickness: int) -> None:
    """Boxes and placed captions into ``images`` uint8 ``[B,3,H,W]`` in place (``boxes`` in image
    pixels). ``scale``: glyph scale (glyphs ``8*scale`` px)."""
    if len(boxes) == 0:
        return
    draw_boxes(images, boxes, frame_idx, colors, thickness=thickness)
    keep = [i for i, t in enumerate(texts) if t]
    if not keep:
        return
    pad = scale
    wh = np.array([[text_size(texts[i], scale)[0] + 2 * pad, _font.GLYPH_H * scale + 2 * pad] for i in keep],
                  np.float32)
    b = boxes[keep].detach().float().cpu().numpy()
    fi = frame_idx[keep].cpu().numpy()
    pos = place_labels(b, wh, fi, (int(images.shape[3]), int(images.shape[2])), pad) + pad
    col = colors[keep]
    luma = col.float() @ const([0.299, 0.587, 0.114], device=col.device, dtype=torch.float32)
    fg = torch.where((luma < 140)[:, None], torch.full_like(col, 255), torch.zeros_like(col))
    draw_text(images, [texts[i] for i in keep], torch.from_numpy(pos).to(images.device), frame_idx[keep],
              scale=scale, color=fg, background=col, pad=pad)
