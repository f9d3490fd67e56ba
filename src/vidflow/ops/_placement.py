"""Caption placement that avoids other captions (host side, a handful of objects per frame).

Each caption tries, in order: above its box, inside the box's top, below the box, inside the
box's bottom; it takes the first spot inside the image whose rectangle (text plus padding)
touches no caption placed before it. Captions are placed by confidence, best first. When no
spot is free the caption is hidden (``hide=True``; its box is still drawn) or put at its first
spot anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["place_captions"]


def _free(r: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    return all(r[2] <= p[0] or r[0] >= p[2] or r[3] <= p[1] or r[1] >= p[3] for p in placed)


def place_captions(boxes: Sequence[Sequence[float]], frames: Sequence[int], widths: Sequence[float],
                   order: Sequence[int], *, height: float, pad: float, image_w: float, image_h: float,
                   hide: bool = True) -> tuple[list[tuple[float, float]], list[bool]]:
    """Top-left ``(x, y)`` of each caption and whether it is shown. ``boxes``: xyxy in image
    pixels; ``frames``: each caption's frame in the batch; ``widths``: text widths; ``order``:
    the placement order (indices, best first); ``height``: text height."""
    n = len(boxes)
    pos: list[tuple[float, float]] = [(0.0, 0.0)] * n
    shown = [False] * n
    placed: dict[int, list[tuple[float, float, float, float]]] = {}
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        w = widths[i]
        if w <= 0:
            continue
        x = min(max(x1 + pad, pad), image_w - w - pad)
        x = max(x, 0.0)
        cands = (y1 - height - pad, y1 + pad, y2 + pad, y2 - height - pad)
        spots = [y for y in cands if pad <= y <= image_h - height - pad] or [min(max(y1 + pad, pad), image_h - height)]
        taken = placed.setdefault(int(frames[i]), [])
        best = None
        for y in spots:
            r = (x - pad, y - pad, x + w + pad, y + height + pad)
            if _free(r, taken):
                best = (x, y)
                break
        if best is None:
            if hide:
                continue
            best = (x, spots[0])
        pos[i] = best
        shown[i] = True
        bx, by = best
        taken.append((bx - pad, by - pad, bx + w + pad, by + height + pad))
    return pos, shown
