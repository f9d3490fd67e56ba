"""``VideoSink``: annotated frames to H.264/HEVC MP4, one file per source or one tiled mosaic.

On the batch device, in ``write``: draw boxes and captions (optional, on a copy), cut each
source's frame out of the batch image (its ``FrameInfo.region``) or tile the sources, add the
overlay (camera name, time, fps; optional), and start one copy to the host (pinned memory,
asynchronous on CUDA). Encoding and muxing run on the sink's worker
(:class:`~vidflow.sinks.base.ThreadedSink`: started on the first write; ``when_full="block"``
by default, so no frame is lost; a failure is isolated or stops the pipeline per ``on_error``).

Faithful by default: timestamps are the sources' own ``pts`` (so a 25 fps source gives a 25 fps
file of the same duration; ``fps=`` forces a constant rate), each file has its source's size
(a frame the muxer scaled up is scaled back down; ``upscale=True`` keeps the batch size), captions stay legible (glyphs >= 8 px in the file,
placed apart: ``sinks/_labels.py``), the aspect ratio is kept (letterboxed cells in the mosaic), and the mosaic's cells have the size of
the largest source, capped at ``max_size``. Output is fragmented MP4 (a keyframe and fragment
every ``keyframe_s``): a killed process leaves a file that plays up to its last fragment, a
failed write (a full disk) cuts the torn last fragment off, so the file still opens and decodes;
``close()`` finalises it. A disk with less than 1 GiB free gets a warning when a file is opened. yuv420p, BT.709 limited range, tagged as such.

The encoder is FFmpeg's libx264/libx265 through PyAV (on the host, after one copy of each frame).
``encoder="nvenc"`` is refused with an error naming ``"pyav"``: an NVENC writer was written once but
never ran (the H100/H200 have no NVENC), so it was removed until a machine with NVENC can test one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .._preflight import warn_low_space
from ..batch import Batch
from ..errors import SinkError
from ._writers import CODECS, PyAvWriter, nvenc_available
from .base import ThreadedSink
from .tiler import Tiler, grid_for

__all__ = ["VideoSink", "nvenc_available"]

_ENCODERS = ("auto", "pyav")


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


class VideoSink(ThreadedSink):
    """Write batches to MP4.

    ``path``: with ``tiled=True`` the output file; with ``tiled=False`` a folder (one
    ``<source_id>.mp4`` per source) or a pattern containing ``{source_id}``. ``fps``: ``None``
    (default) follows the sources' timestamps; a number forces that constant rate. ``rows`` / ``cols``:
    the mosaic's grid (give both or neither; default: the smallest square grid). ``size``:
    mosaic ``(width, height)``; ``None`` = cells of the largest source's size, capped at
    ``max_size``. ``upscale``: keep frames the muxer scaled up at the batch size (default: back
    to the source's size). ``draw``: draw boxes and captions on a copy first (leave False when an
    ``Annotate`` stage already drew). ``overlay``: camera name (``names[source_id]``, else the
    id), time (wall clock when known, else pts) and measured fps on each frame or cell.
    ``codec``: ``"h264"`` / ``"hevc"``; ``bitrate`` bits/s; ``encoder``: ``"auto"`` | ``"pyav"``
    (both: FFmpeg through PyAV; ``"nvenc"`` is refused: no NVENC writer yet); ``keyframe_s``: fragment length; ``fragmented=False`` writes a classic MP4
    (not playable after a kill). ``queue_size``: batches waiting for the encoder; ``when_full`` /
    ``on_error``: see :class:`~vidflow.sinks.base.ThreadedSink`.
    """

    #: draws boxes and captions, never masks (``stages.base.ReadsMasks``)
    reads_masks = False

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, tiled: bool = True,
                 rows: int | None = None, cols: int | None = None, size: tuple[int, int] | list[int] | None = None,
                 max_size: tuple[int, int] | list[int] = (1920, 1080), upscale: bool = False, draw: bool = True,
                 overlay: bool = False, names: dict[Any, str] | None = None,
                 codec: Literal["h264", "hevc"] = "h264", bitrate: int | None = None,
                 encoder: Literal["auto", "pyav", "nvenc"] = "auto", keyframe_s: float = 1.0, fragmented: bool = True,
                 queue_size: int = 8, when_full: Literal["block", "drop_oldest"] = "block",
                 on_error: Literal["isolate", "stop"] = "isolate", name: str = "video") -> None:
        if codec not in CODECS:
            raise ValueError(f"codec: expected one of {sorted(CODECS)}, got {codec!r}")
        if encoder == "nvenc":
            raise ValueError("encoder='nvenc' is not available: the NVENC writer never ran on any machine, so "
                             "vidflow does not offer it; use encoder='pyav' (CPU encode through PyAV/FFmpeg, "
                             "what 'auto' picks)")
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder: expected one of {list(_ENCODERS)}, got {encoder!r}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0 or None, got {fps}")
        if (rows is None) != (cols is None):
            raise ValueError("rows and cols: give both or neither")
        for nm, v in (("size", size), ("max_size", max_size)):
            if v is not None and (len(v) != 2 or v[0] < 2 or v[1] < 2):
                raise ValueError(f"{nm} must be (width, height), got {v}")
        if keyframe_s <= 0:
            raise ValueError(f"keyframe_s must be > 0, got {keyframe_s}")
        super().__init__(name=name, queue_size=queue_size, when_full=when_full, on_error=on_error)
        self.path = str(path)
        if tiled and "{source_id}" in self.path:
            raise ValueError("path: a {source_id} pattern needs tiled=False")
        self.fps, self.tiled, self.rows, self.cols = fps, bool(tiled), rows, cols
        self.size = None if size is None else (_even(size[0]), _even(size[1]))
        self.max_size = (int(max_size[0]), int(max_size[1]))
        self.upscale, self.draw, self.overlay, self.names = bool(upscale), draw, bool(overlay), dict(names or {})
        self.codec, self.bitrate, self.encoder = codec, bitrate, encoder
        self.keyframe_s, self.fragmented = float(keyframe_s), bool(fragmented)
        self.frames_written = 0
        self.files: dict[int | str, Path] = {}
        self._tiler: Tiler | None = None
        self._annotate: Any = None               # ops.draw.Annotate, made on first use
        self._writers: dict[Any, Any] = {}
        self._rate: dict[Any, list[float]] = {}      # per source: [last pts, fps estimate]
        self._step_pts: dict[int, float] = {}

    # -- caller side (device work) --------------------------------------------------------
    def _file(self, key: Any) -> Path:
        if self.tiled:
            return Path(self.path)
        if "{source_id}" in self.path:
            return Path(self.path.format(source_id=key))
        return Path(self.path) / f"{key}.mp4"

    def _host(self, key: Any, img: torch.Tensor, pts: float) -> tuple:
        """Start the host copy of uint8 ``[3,H,W]`` ``img`` for file ``key``."""
        src = img.permute(1, 2, 0)
        if img.is_cuda:
            host = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(src, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = torch.empty(src.shape, dtype=torch.uint8).copy_(src), None  # always a copy
        self.files.setdefault(key, self._file(key))
        return key, host, event, pts

    def _fps_of(self, sid: Any, pts: float) -> float:
        last = self._rate.get(sid)
        if last is None:
            self._rate[sid] = [pts, 0.0]
            return 0.0
        dt = pts - last[0]
        if dt > 0:
            inst = 1.0 / dt
            last[1] = inst if last[1] == 0 else 0.9 * last[1] + 0.1 * inst
        last[0] = pts
        return last[1]

    def _overlay(self, batch: Batch) -> None:
        from ..ops.draw import draw_text

        texts, pos = [], []
        w, h = batch.size
        for i, f in enumerate(batch.frames):
            x0, y0, x1, y1 = f.region if f.region is not None else (0, 0, w, h)
            fps = self._fps_of(f.source_id, f.pts)
            t = (time.strftime("%H:%M:%S", time.gmtime(f.ntp_ns / 1e9)) + f".{f.ntp_ns // 1_000_000 % 1000:03d}"
                 if f.ntp_ns > 1e15 else f"{f.pts:9.3f}s")
            texts.append(f"{self.names.get(f.source_id, f.source_id)}  {t}  {fps:4.1f} fps")
            pos.append((max(0.0, x0) + 4, max(0.0, y0) + 4))
        scale = max(1, round((batch.frames[0].region[3] - batch.frames[0].region[1] if batch.frames[0].region
                              else h) / 360))
        draw_text(batch.images, texts, torch.tensor(pos, dtype=torch.float32), torch.arange(len(texts)),
                  scale=scale, background=(0, 0, 0))

    def _out_height(self, batch: Batch) -> tuple[float, float]:
        """(smallest output height of a frame, largest batch-to-output shrink factor)."""
        w, h = batch.size
        outs, shrink = [], 1.0
        for f in batch.frames:
            x0, y0, x1, y1 = f.region if f.region is not None else (0, 0, w, h)
            rw, rh = max(1.0, x1 - x0), max(1.0, y1 - y0)
            if self.tiled:
                t = self._tiler_for(batch)
                ch, cw = t.height // t.rows, t.width // t.cols
                oh = min(ch, cw * rh / rw)
            elif not self.upscale and f.height and rh > f.height:
                oh = f.height
            else:
                oh = rh
            outs.append(oh)
            shrink = max(shrink, rh / oh)
        return min(outs), shrink

    def _draw(self, batch: Batch) -> None:
        """Boxes and captions on the (copied) batch images, sized so that glyphs are >= 8 px and
        lines >= 1 px in the written file, captions placed apart (``sinks/_labels.py``)."""
        from ..ops.draw import Annotate
        from ._labels import colors_for, draw_annotations

        if self._annotate is None:
            self._annotate = Annotate()
        objs = batch.objects
        out_h, shrink = self._out_height(batch)
        k = math.ceil(shrink - 1e-6)
        draw_annotations(batch.images, batch.source_to_image(objs.bbox, objs.frame_idx), objs.frame_idx,
                         self._annotate.captions(batch), colors_for(objs.object_id, objs.class_id),
                         scale=max(1, round(out_h / 360)) * k, thickness=max(1, round(out_h / 240)) * k)

    def _tiler_for(self, batch: Batch) -> Tiler:
        if self._tiler is None:
            rows, cols = ((self.rows, self.cols) if self.rows and self.cols
                          else grid_for(len({f.source_id for f in batch.frames})))
            size = self.size
            if size is None:
                cw = max(f.width or batch.size[0] for f in batch.frames)
                ch = max(f.height or batch.size[1] for f in batch.frames)
                s = min(1.0, self.max_size[0] / (cw * cols), self.max_size[1] / (ch * rows))
                size = (_even(cw * cols * s), _even(ch * rows * s))
            self._tiler = Tiler(rows, cols, size)
        return self._tiler

    def _prepare(self, batch: Batch) -> list[tuple]:
        with torch.no_grad():
            if self.draw or self.overlay:
                batch = batch.replace(images=batch.images.clone())
            if self.draw and len(batch.objects):
                self._draw(batch)
            if self.overlay:
                self._overlay(batch)
            if self.tiled:
                tiler = self._tiler_for(batch)
                for f in batch.frames:
                    self._step_pts.setdefault(f.frame_num, f.pts)
                mosaics = tiler.write(batch)
                return [self._host("tiled", m, self._mosaic_pts(tiler.step - len(mosaics) + k))
                        for k, m in enumerate(mosaics)]
            items = []
            w, h = batch.size
            for i, f in enumerate(batch.frames):
                x0, y0, x1, y1 = f.region if f.region is not None else (0, 0, w, h)
                x0, y0 = max(0, math.ceil(x0)), max(0, math.ceil(y0))
                x1, y1 = min(w, math.floor(x1)), min(h, math.floor(y1))
                x1, y1 = x0 + (x1 - x0) // 2 * 2, y0 + (y1 - y0) // 2 * 2
                img = batch.images[i, :, y0:y1, x0:x1]
                if not self.upscale and f.width and f.height and (x1 - x0 > f.width or y1 - y0 > f.height):
                    img = self._shrink(img, _even(f.width), _even(f.height))
                items.append(self._host(f.source_id, img, f.pts))
            return items

    def _mosaic_pts(self, step: int) -> float:
        pts = self._step_pts.pop(step, None)
        for k in [k for k in self._step_pts if k < step]:
            del self._step_pts[k]
        return pts if pts is not None else step / (self.fps or 30.0)

    @staticmethod
    def _shrink(img: torch.Tensor, w: int, h: int) -> torch.Tensor:
        x = img[None].float() if img.is_cuda else img[None].contiguous(memory_format=torch.channels_last)
        out = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out.round_().clamp_(0, 255).to(torch.uint8)[0] if img.is_cuda else out[0]

    # -- worker side ----------------------------------------------------------------------
    def _process(self, items: list[tuple]) -> None:
        for key, host, event, pts in items:
            if event is not None:
                event.synchronize()
            arr = host.numpy()
            wr = self._writers.get(key)
            if wr is None:
                h, w = arr.shape[:2]
                self.files[key].parent.mkdir(parents=True, exist_ok=True)
                warn_low_space(self.path)
                wr = self._writers[key] = PyAvWriter(self.files[key], w, h, self.fps or 30.0, self.codec, self.bitrate,
                                              fragmented=self.fragmented, keyframe_s=self.keyframe_s,
                                              timing="rate" if self.fps else "pts")
            wr.write(arr, pts)
            self.frames_written += 1

    def _finish(self) -> None:
        errors = []
        for wr in self._writers.values():
            try:
                wr.close()
            except Exception as e:  # noqa: BLE001 - close every file, report the first failure
                errors.append(e)
        self._writers.clear()
        if errors:
            raise SinkError(f"{self.name}: closing the video file failed: {errors[0]}") from errors[0]

    def close(self) -> None:
        """Emit a pending mosaic, finish encoding, finalise the files. Idempotent."""
        if not self._closed and self._tiler is not None and self._error is None:
            mosaics = self._tiler.flush()
            if mosaics:
                step0 = self._tiler.step - len(mosaics)
                self._put("write", [self._host("tiled", m, self._mosaic_pts(step0 + k)) for k, m in enumerate(mosaics)])
        super().close()

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(frames_written=self.frames_written, files={str(k): str(v) for k, v in self.files.items()})
        return s

    def __enter__(self) -> VideoSink:
        return self

