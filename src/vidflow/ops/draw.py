"""Drawing on the device: box outlines, filled rectangles and bitmap text, batched.

Everything is drawn into the batch images ``[B,3,H,W]`` uint8 **in place**, on whatever device
they live on, with no host copy of a frame. Each call turns the shapes into pixel indices with a
few tensor ops (no Python loop over objects or pixels), scatters a colour id per pixel into a
``[B*H*W]`` label canvas and writes the colours with one ``where`` over the images. Later
layers win over earlier ones (label text over its background over box outlines); where two
shapes of the same layer overlap, either may win.

Text uses the embedded 8x8 bitmap font (``ops._font``), rendered once per scale into a glyph
atlas on the device; glyphs are ``8*scale`` pixels square.

The :class:`Annotate` stage draws each object's box and a ``"label #id name"`` caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from ..batch import Batch
from . import _font
from ._const import const

__all__ = ["draw_boxes", "draw_text", "fill_rects", "text_size", "Annotate", "PALETTE"]

#: 20 well separated colours (RGB) used by :class:`Annotate`, indexed by track id or class id.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (255, 255, 255),
)


def _colors(colors, n: int, device: torch.device) -> torch.Tensor:
    """Normalise ``(r,g,b)`` / ``[3]`` / ``[N,3]`` colours to ``[N,3]`` uint8 on ``device``."""
    c = colors.to(device, non_blocking=True) if isinstance(colors, torch.Tensor) else const(colors, device=device)
    if c.dim() == 1 and c.shape[0] == 3:
        c = c.expand(n, 3)
    if c.dim() != 2 or c.shape != (n, 3):
        raise ValueError(f"colors: expected (r, g, b) or shape ({n}, 3), got {tuple(c.shape)}")
    return c.to(torch.uint8)


class _Canvas:
    """Per-pixel colour ids for a ``[B,3,H,W]`` image batch; :meth:`apply` writes them."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images: expected uint8 [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.b, _, self.h, self.w = (int(s) for s in images.shape)
        self.trash = self.b * self.h * self.w  # index of the scratch slot that swallows masked pixels
        self.ids = torch.zeros(self.trash + 1, dtype=torch.int32, device=images.device)
        self.palette: list[torch.Tensor] = []
        self.count = 0

    def add_colors(self, colors: torch.Tensor) -> int:
        """Register ``[P,3]`` uint8 colours; returns the id offset of the first (ids start at 1)."""
        base = self.count + 1
        self.palette.append(colors)
        self.count += int(colors.shape[0])
        return base

    def flat(self, fi: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *, row_ok: torch.Tensor | None = None,
             col_ok: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Flat pixel index of ``(fi, y, x)`` (broadcast together); pixels outside the image or
        where the row mask (shaped like ``y``), column mask (like ``x``) or ``valid`` is False go
        to the scratch slot. Masks are combined on the small per-axis shapes first, so only
        three ops run at the full grid size."""
        rows = (y >= 0) & (y < self.h) & (fi >= 0) & (fi < self.b)
        if row_ok is not None:
            rows = rows & row_ok
        cols = (x >= 0) & (x < self.w)
        if col_ok is not None:
            cols = cols & col_ok
        ok = rows & cols if valid is None else rows & cols & valid
        idx = (fi * self.h + y) * self.w + x
        return torch.where(ok, idx, self.trash)

    def put(self, flat: torch.Tensor, color_id: torch.Tensor) -> None:
        self.ids.index_put_((flat.reshape(-1),), color_id.reshape(-1).to(torch.int32))

    def apply(self) -> None:
        if not self.count:
            return
        dev = self.images.device
        table = torch.cat([torch.zeros(1, 3, dtype=torch.uint8, device=dev), *self.palette])  # [P+1,3]
        ids = self.ids[: self.trash].view(self.b, self.h, self.w)
        if dev.type == "cpu":  # touch only the drawn pixels (a host-side nonzero costs nothing here)
            hit = ids.nonzero(as_tuple=True)
            px = table[ids[hit].long()]  # [K,3]
            for c in range(3):
                self.images[:, c].index_put_(hit, px[:, c])
        else:  # one fused pass over the batch, no host sync
            colored = table[ids].permute(0, 3, 1, 2)  # [B,3,H,W]
            torch.where((ids > 0)[:, None], colored, self.images, out=self.images)


def _rects(canvas: _Canvas, rects: torch.Tensor, fi: torch.Tensor, color_id: torch.Tensor,
           max_h: int, max_w: int) -> None:
    """Fill integer rects ``[M,4]`` (x0, y0, x1, y1; x1/y1 exclusive) at most ``max_h x max_w``."""
    if rects.shape[0] == 0 or max_h <= 0 or max_w <= 0:
        return
    dev = rects.device
    ys = rects[:, 1, None, None] + torch.arange(max_h, device=dev)[None, :, None]  # [M,h,1]
    xs = rects[:, 0, None, None] + torch.arange(max_w, device=dev)[None, None, :]  # [M,1,w]
    flat = canvas.flat(fi[:, None, None], ys, xs, row_ok=ys < rects[:, 3, None, None],
                       col_ok=xs < rects[:, 2, None, None])
    canvas.put(flat, color_id[:, None, None].expand_as(flat))


def _box_outlines(canvas: _Canvas, boxes: torch.Tensor, fi: torch.Tensor, color_id: torch.Tensor,
                  thickness: int) -> None:
    """Outline xyxy boxes ``[N,4]`` (image pixels, inclusive corners) with ``thickness`` px lines
    drawn inside the box."""
    b = boxes.round().to(torch.int64)
    x1, y1, x2, y2 = b.unbind(1)
    x1, x2 = torch.minimum(x1, x2), torch.maximum(x1, x2)
    y1, y2 = torch.minimum(y1, y2), torch.maximum(y1, y2)
    # boxes reaching past the border are outlined along it; boxes entirely outside are skipped
    outside = (x2 < 0) | (y2 < 0) | (x1 > canvas.w - 1) | (y1 > canvas.h - 1)
    fi = torch.where(outside, torch.full_like(fi, -1), fi)
    x1, x2 = x1.clamp(0, canvas.w - 1), x2.clamp(0, canvas.w - 1)
    y1, y2 = y1.clamp(0, canvas.h - 1), y2.clamp(0, canvas.h - 1)
    t = thickness
    horiz = torch.cat([torch.stack([x1, y1, x2 + 1, y1 + t], 1),          # top
                       torch.stack([x1, y2 - t + 1, x2 + 1, y2 + 1], 1)])  # bottom
    vert = torch.cat([torch.stack([x1, y1, x1 + t, y2 + 1], 1),            # left
                      torch.stack([x2 - t + 1, y1, x2 + 1, y2 + 1], 1)])   # right
    fi2, c2 = fi.repeat(2), color_id.repeat(2)
    _rects(canvas, horiz, fi2, c2, t, canvas.w)
    _rects(canvas, vert, fi2, c2, canvas.h, t)


def draw_boxes(images: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor, colors=(0, 255, 0),
               *, thickness: int = 2) -> torch.Tensor:
    """Draw box outlines into ``images`` in place and return it.

    ``images``: uint8 ``[B,3,H,W]``; ``boxes``: ``[N,4]`` xyxy in *image* pixels (map source boxes
    with ``batch.source_to_image``); ``frame_idx``: ``[N]`` int, the image of each box;
    ``colors``: ``(r,g,b)`` or uint8 ``[N,3]``; ``thickness``: line width in pixels (>= 1), drawn
    inside the box. Parts outside the image are clipped.
    """
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    dev = images.device
    n = int(boxes.shape[0])
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {tuple(boxes.shape)}")
    canvas = _Canvas(images)
    if n:
        base = canvas.add_colors(_colors(colors, n, dev))
        ids = base + torch.arange(n, device=dev)
        _box_outlines(canvas, boxes.to(dev), frame_idx.to(dev).long(), ids, thickness)
    canvas.apply()
    return images


def fill_rects(images: torch.Tensor, rects: torch.Tensor, frame_idx: torch.Tensor, colors) -> torch.Tensor:
    """Fill rectangles ``[N,4]`` (x0, y0, x1, y1 in image pixels, x1/y1 exclusive) in place."""
    dev = images.device
    n = int(rects.shape[0])
    canvas = _Canvas(images)
    if n:
        r = rects.to(dev).round().long()
        base = canvas.add_colors(_colors(colors, n, dev))
        max_w = int(min(canvas.w, max(0, int((r[:, 2] - r[:, 0]).max()))))  # one sync: shapes
        max_h = int(min(canvas.h, max(0, int((r[:, 3] - r[:, 1]).max()))))
        r = torch.stack([r[:, 0].clamp(-1, canvas.w), r[:, 1].clamp(-1, canvas.h), r[:, 2], r[:, 3]], 1)
        _rects(canvas, r, frame_idx.to(dev).long(), base + torch.arange(n, device=dev), max_h + 1, max_w + 1)
    canvas.apply()
    return images


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``text`` drawn at ``scale``."""
    return len(text) * _font.GLYPH_W * scale, _font.GLYPH_H * scale


def _text(canvas: _Canvas, texts: Sequence[str], pos: torch.Tensor, fi: torch.Tensor, fg_id: torch.Tensor,
          bg_id: torch.Tensor | None, scale: int, pad: int) -> None:
    dev = canvas.images.device
    codes = _font.encode(list(texts)).to(dev, non_blocking=True)  # [N,L]
    lens = torch.tensor([len(t) for t in texts], dtype=torch.int64).to(dev, non_blocking=True)
    gw, gh = _font.GLYPH_W * scale, _font.GLYPH_H * scale
    L = int(codes.shape[1])
    x0, y0 = pos[:, 0].round().long(), pos[:, 1].round().long()
    if bg_id is not None:
        rects = torch.stack([x0 - pad, y0 - pad, x0 + lens * gw + pad, y0 + gh + pad], 1)
        _rects(canvas, rects, fi, bg_id, gh + 2 * pad, L * gw + 2 * pad)
    glyphs = _font.atlas(scale, dev)[codes.clamp(min=0)]  # [N,L,gh,gw]; code -1 (past the end) masked below
    ys = y0[:, None, None, None] + torch.arange(gh, device=dev)[None, None, :, None]  # [N,1,gh,1]
    xs = (x0[:, None, None, None] + (torch.arange(L, device=dev) * gw)[None, :, None, None]
          + torch.arange(gw, device=dev)[None, None, None, :])  # [N,L,1,gw]
    flat = canvas.flat(fi[:, None, None, None], ys, xs, col_ok=(codes >= 0)[:, :, None, None], valid=glyphs)
    canvas.put(flat, fg_id[:, None, None, None].expand_as(flat))


def draw_text(images: torch.Tensor, texts: Sequence[str], positions: torch.Tensor, frame_idx: torch.Tensor,
              *, scale: int = 1, color=(255, 255, 255), background=None, pad: int = 1) -> torch.Tensor:
    """Draw ``texts`` (printable ASCII; others become ``?``) into ``images`` in place.

    ``images``: uint8 ``[B,3,H,W]``; ``positions``: ``[N,2]`` top-left ``(x, y)`` in image pixels;
    ``frame_idx``: ``[N]``; ``scale``: integer glyph scale (glyphs are ``8*scale`` px);
    ``color`` / ``background``: ``(r,g,b)`` or uint8 ``[N,3]``; ``background=None`` draws no box
    behind the text, otherwise a filled box with ``pad`` pixels of margin.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    n = len(texts)
    if tuple(positions.shape) != (n, 2):
        raise ValueError(f"positions: expected shape ({n}, 2), got {tuple(positions.shape)}")
    dev = images.device
    canvas = _Canvas(images)
    if n:
        fi = frame_idx.to(dev).long()
        bg = None
        if background is not None:
            bg = canvas.add_colors(_colors(background, n, dev)) + torch.arange(n, device=dev)
        fg = canvas.add_colors(_colors(color, n, dev)) + torch.arange(n, device=dev)
        _text(canvas, texts, positions.to(dev), fi, fg, bg, scale, pad)
    canvas.apply()
    return images


class Annotate:
    """Stage that draws every object's box and a ``"label #id name"`` caption into the images.

    Draws in place into ``batch.images`` (the pixels downstream stages and sinks see, like an
    on-screen display) and returns the batch unchanged otherwise. Colours follow the track id
    (or the class when untracked) through :data:`PALETTE`. ``labels``: class name (from
    ``batch.labels["objects"]``, else the class id); ``ids``: ``#<object_id>`` for tracked
    objects; ``identities``: the name from ``objects.attrs["<identity>.identity"]`` (or ``".label"``) and
    ``batch.labels[identity]`` (ids < 0 mean unknown and draw nothing). ``thickness`` defaults
    to the image height / 240, ``scale`` to height / 360 (at least 1: 8 px glyphs, the
    smallest legible). ``avoid``: captions do not overlap each other: each takes the first free
    spot of above / inside the top / below / inside the bottom of its box, the most confident
    first, and one with no free spot is not drawn (its box is); ``avoid=False`` puts every
    caption above its box. ``masks`` / ``keypoints``: draw instance masks (translucent,
    ``alpha``) and keypoints scoring at least ``kpt_conf``. Reads the object table to the host
    once per batch (to build the caption strings and place them).
    """

    @property
    def reads_masks(self) -> bool:
        """It draws the objects' masks when ``masks`` is on (``stages.base.ReadsMasks``)."""
        return self.masks

    def __init__(self, *, labels: bool = True, ids: bool = True, identities: bool = True,
                 identity: str = "identify", thickness: int | None = None, scale: int | None = None,
                 masks: bool = True, keypoints: bool = True, alpha: float = 0.45, kpt_conf: float = 0.5,
                 avoid: bool = True, name: str = "draw") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.masks, self.keypoints, self.alpha, self.kpt_conf = bool(masks), bool(keypoints), float(alpha), float(kpt_conf)
        if thickness is not None and thickness < 1:
            raise ValueError(f"thickness must be >= 1 or None, got {thickness}")
        if scale is not None and (not isinstance(scale, int) or scale < 1):
            raise ValueError(f"scale must be an integer >= 1 or None, got {scale!r}")
        self.labels, self.ids, self.identities, self.identity = labels, ids, identities, identity
        self.thickness, self.scale, self.name = thickness, scale, name
        self.avoid = bool(avoid)

    def captions(self, batch: Batch) -> list[str]:
        """The caption of each object of ``batch`` (one host transfer)."""
        objs = batch.objects
        n = len(objs)
        ident = None
        if self.identities:  # gallery.Identify writes "<name>.identity"; classifiers "<name>.label"
            ident = objs.attrs.get(f"{self.identity}.identity", objs.attrs.get(f"{self.identity}.label"))
        cols = [objs.class_id, objs.object_id]
        if ident is not None:
            cols.append(ident.reshape(n, -1)[:, 0].long())
        host = torch.stack(cols, 1).cpu().tolist() if n else []
        names = batch.labels.get("objects", ())
        id_names = batch.labels.get(self.identity, ())
        out = []
        for row in host:
            parts = []
            if self.labels:
                c = row[0]
                parts.append(names[c] if 0 <= c < len(names) else str(c))
            if self.ids and row[1] >= 0:
                parts.append(f"#{row[1]}")
            if ident is not None and row[2] >= 0:
                parts.append(id_names[row[2]] if row[2] < len(id_names) else f"id{row[2]}")
            out.append(" ".join(parts))
        return out

    def __call__(self, batch: Batch) -> Batch:
        objs = batch.objects
        n = len(objs)
        if n == 0:
            return batch
        dev = batch.device
        h = batch.images.shape[2]
        thickness = self.thickness or max(1, round(h / 240))
        scale = self.scale or max(1, round(h / 360))
        pal = const(PALETTE, device=dev, dtype=torch.uint8)
        key = torch.where(objs.object_id >= 0, objs.object_id, objs.class_id)
        colors = pal[key.remainder(len(PALETTE))]
        boxes = batch.source_to_image(objs.bbox, objs.frame_idx)
        if self.masks and objs.masks is not None:     # translucent, under the outlines and captions
            from ._overlay import blend_masks
            blend_masks(batch, objs.masks, objs.frame_idx, colors, self.alpha)
        canvas = _Canvas(batch.images)
        base = canvas.add_colors(colors)
        color_id = base + torch.arange(n, device=dev)
        _box_outlines(canvas, boxes, objs.frame_idx, color_id, thickness)
        if self.keypoints and objs.keypoints is not None:
            from ._overlay import keypoint_rects
            rects, fid, obj = keypoint_rects(batch, objs.keypoints, objs.frame_idx, radius=thickness + 1,
                                             conf=self.kpt_conf, skeleton=cast(Any, batch.labels.get("skeleton", ())),
                                             line=max(0, thickness // 2))
            r = rects.round().long()
            side = 2 * (thickness + 1) + 2
            _rects(canvas, r, fid, color_id[obj], side, side)
        texts = self.captions(batch)
        if any(texts):
            pos, shown = self.layout(batch, texts, boxes, scale)
            keep = const(shown, device=dev, dtype=torch.bool)
            pos = pos.to(dev, non_blocking=True)
            bw = canvas.add_colors(const([[0, 0, 0], [255, 255, 255]], device=dev, dtype=torch.uint8))
            luma = colors.float() @ const([0.299, 0.587, 0.114], device=dev, dtype=torch.float32)
            fg = bw + (luma < 140).long()  # white text on dark boxes, black on light ones
            if all(shown):
                _text(canvas, texts, pos, objs.frame_idx, fg, color_id, scale, scale)
            elif any(shown):
                _text(canvas, [t for t, k in zip(texts, shown) if k], pos[keep], objs.frame_idx[keep],
                      fg[keep], color_id[keep], scale, scale)
        canvas.apply()
        return batch

    def layout(self, batch: Batch, texts: Sequence[str], boxes: torch.Tensor | None = None,
               scale: int | None = None) -> tuple[torch.Tensor, list[bool]]:
        """Where each caption goes: top-left ``[N,2]`` in image pixels (CPU) and whether it is
        drawn (see ``avoid``). ``boxes``: the objects' boxes in image pixels (default: mapped
        from the batch)."""
        from ._placement import place_captions

        objs = batch.objects
        if boxes is None:
            boxes = batch.source_to_image(objs.bbox, objs.frame_idx)
        h, w = batch.images.shape[2], batch.images.shape[3]
        scale = scale or self.scale or max(1, round(h / 360))
        gh, pad = _font.GLYPH_H * scale, scale
        host = torch.cat([boxes.float(), objs.confidence[:, None], objs.frame_idx[:, None].float()], 1).cpu()
        widths = [float(text_size(t, scale)[0]) for t in texts]
        if self.avoid:
            order = sorted(range(len(texts)), key=lambda i: -float(host[i, 4]))
            pos, shown = place_captions(host[:, :4].tolist(), host[:, 5].long().tolist(), widths, order,
                                        height=gh, pad=pad, image_w=w, image_h=h)
            shown = [k and bool(t) for k, t in zip(shown, texts)]
            return torch.tensor(pos, dtype=torch.float32).reshape(-1, 2), shown
        # caption above the box, or inside it when there is no room above
        y = host[:, 1] - gh - pad
        y = torch.where(y < pad, host[:, 1].clamp(min=0) + pad, y)
        x = torch.minimum((host[:, 0] + pad).clamp(min=pad), w - torch.tensor(widths) - pad)
        return torch.stack([x.clamp(min=0), y], 1), [bool(t) for t in texts]
