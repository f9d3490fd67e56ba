"""The live view: the latest annotated frame of every source, tiled or one camera, as JPEG.

:class:`ViewSink` sits at the end of the pipeline's sinks. While nobody watches, ``write`` is
one clock read and a compare. While someone watches (a viewer renews :meth:`ViewSink.watch`),
it keeps only the newest frame of each source, at most ``max_fps`` per source: one
``index_select`` copy per batch (and a downscale to ``max_side`` on the device when larger), so
the pipeline's own buffers are never held. Tiling and JPEG encoding (PyAV's ``mjpeg``) happen
on the server's encoder thread (:class:`Viewer`), once per new frame however many watch.

WebSocket ``/view/ws?source=ID`` (no ``source``: the tiled view) sends a JSON header
``{"seq", "source", "ntp_ms"}`` then the JPEG, and waits for the page's ``{"ack": seq,
"shown_ms": ...}`` before the next frame: one frame in flight, so a slow viewer gets fewer
frames, never older ones. ``shown_ms`` (receipt of the frame by the pipeline to the image shown
in the page, same clock) goes to the ``vidflow_view_latency_seconds`` histogram.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

try:
    from ..ops.tile import grid_for, tile  # where the tiler may move (REVIEW F7)
except ImportError:
    from ..sinks.tiler import grid_for, tile

__all__ = ["ViewSink", "Viewer", "JpegEncoder"]


@dataclass(frozen=True)
class _Shot:
    info: Any                      # FrameInfo of the frame
    image: torch.Tensor            # uint8 [3,H,W], a copy
    event: Any                     # torch.cuda.Event after the copy, or None
    seq: int


class ViewSink:
    """Keeps the newest frame per source while watched; costs nothing while not."""

    name = "vidflow-view"
    reads_masks = False        # the images only (``stages.base.ReadsMasks``)

    def __init__(self, *, max_fps: float = 5.0, max_side: int = 960, linger_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not max_fps > 0 or int(max_side) < 16 or not linger_s > 0:
            raise ValueError(f"ViewSink: max_fps > 0, max_side >= 16, linger_s > 0 expected, got "
                             f"{max_fps}, {max_side}, {linger_s}")
        self.max_fps, self.max_side, self.linger_s, self.clock = float(max_fps), int(max_side), float(linger_s), clock
        self._until = float("-inf")
        self._lock = threading.Lock()
        self._latest: dict[Any, _Shot] = {}
        self._taken: dict[Any, float] = {}
        self._seq = 0
        self.copies = 0            # frames copied so far (0 while nobody watched)

    def watch(self) -> None:
        """A viewer is there: keep frames for the next ``linger_s`` seconds."""
        self._until = self.clock() + self.linger_s

    @property
    def watching(self) -> bool:
        return self.clock() < self._until

    def write(self, batch: Any) -> None:
        now = self.clock()
        if now >= self._until:
            return
        newest: dict[Any, int] = {}
        for i, f in enumerate(batch.frames):
            newest[f.source_id] = i
        due = [(sid, i) for sid, i in newest.items() if now - self._taken.get(sid, -math.inf) >= 1.0 / self.max_fps]
        if not due:
            return
        images = batch.images
        imgs = images.index_select(0, torch.tensor([i for _, i in due], device=images.device))
        h, w = imgs.shape[-2:]
        if max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            nh, nw = max(2, int(h * s) // 2 * 2), max(2, int(w * s) // 2 * 2)
            x = imgs.float() if imgs.is_cuda else imgs.contiguous(memory_format=torch.channels_last)
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            imgs = x.round_().clamp_(0, 255).to(torch.uint8) if imgs.is_cuda else x
        ev = None
        if imgs.is_cuda:
            ev = torch.cuda.Event()
            ev.record()
        with self._lock:
            for k, (sid, i) in enumerate(due):
                self._seq += 1
                self._latest[sid] = _Shot(batch.frames[i], imgs[k], ev, self._seq)
                self._taken[sid] = now
            self.copies += len(due)

    def end_source(self, source_id: Any) -> None:
        with self._lock:
            self._latest.pop(source_id, None)
            self._taken.pop(source_id, None)

    def close(self) -> None:
        with self._lock:
            self._latest.clear()

    def shots(self) -> dict[Any, _Shot]:
        with self._lock:
            return dict(self._latest)


class JpegEncoder:
    """RGB ``[3,H,W]`` uint8 -> JPEG bytes with PyAV's mjpeg encoder (``quality`` 2 best .. 31)."""

    def __init__(self, *, quality: int = 5) -> None:
        if not 2 <= int(quality) <= 31:
            raise ValueError(f"JpegEncoder: quality must be 2..31, got {quality}")
        self.quality = int(quality)
        self._ctx: dict[tuple[int, int], Any] = {}

    def __call__(self, image: torch.Tensor) -> bytes:
        import av

        img = image[:, : image.shape[1] // 2 * 2, : image.shape[2] // 2 * 2]
        h, w = int(img.shape[1]), int(img.shape[2])
        ctx = self._ctx.get((w, h))
        if ctx is None:
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
            ctx.time_base = Fraction(1, 30)
            ctx.qmin = ctx.qmax = self.quality
            ctx.open()
            self._ctx = {(w, h): ctx}           # one size at a time: a new size replaces it
        frame = av.VideoFrame.from_ndarray(img.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
        packets = ctx.encode(frame.reformat(format="yuvj420p"))
        return b"".join(bytes(p) for p in packets)


class Viewer:
    """Composes and encodes what a :class:`ViewSink` kept; call it on one thread (the encoder's)."""

    def __init__(self, sink: ViewSink, *, tile_size: tuple[int, int] = (1280, 720), quality: int = 5) -> None:
        self.sink, self.tile_size = sink, (int(tile_size[0]), int(tile_size[1]))
        self.encode = JpegEncoder(quality=quality)
        self._cache: dict[Any, tuple[tuple, bytes, dict]] = {}

    def jpeg(self, source: str | None) -> tuple[bytes, dict] | None:
        """The newest JPEG of ``source`` (its id as text) or of all sources tiled (None);
        None when there is no frame yet. ``dict``: ``{"source", "ntp_ms", "seqs"}``."""
        shots = self.sink.shots()
        if source is not None:
            shots = {k: v for k, v in shots.items() if str(k) == source}
        if not shots:
            return None
        ids = sorted(shots, key=str)
        key = tuple((str(k), shots[k].seq) for k in ids)
        hit = self._cache.get(source)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        for s in shots.values():
            if s.event is not None:
                s.event.synchronize()
        if source is not None:
            image = shots[ids[0]].image.cpu()
        else:
            rows, cols = grid_for(len(ids))
            image = torch.zeros(3, self.tile_size[1], self.tile_size[0], dtype=torch.uint8)
            by_shape: dict[tuple, list[int]] = {}
            for slot, k in enumerate(ids):
                by_shape.setdefault(tuple(shots[k].image.shape), []).append(slot)
            for slots in by_shape.values():
                batch = torch.stack([shots[ids[s]].image.cpu() for s in slots])
                tile(batch, slots, rows, cols, self.tile_size, out=image)
        data = self.encode(image)
        ntp = max((shots[k].info.ntp_ns for k in ids), default=0)
        meta = {"source": source, "ntp_ms": ntp / 1e6, "seq": max(s.seq for s in shots.values())}
        self._cache[source] = (key, data, meta)
        if len(self._cache) > 256:
            self._cache.clear()
        return data, meta
