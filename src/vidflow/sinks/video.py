"""``VideoSink``: annotated frames to H.264/HEVC MP4, one file per source or one tiled mosaic.

On the batch device the sink draws (optional, on a copy), tiles or crops each frame, and starts
one copy to the host (into pinned memory, asynchronously, on CUDA): that copy is the encoder's
input and the only time a full frame leaves the device. Encoding runs on a worker thread fed
by a bounded queue, so ``write`` returns as soon as the copy is queued; when the encoder falls
behind, ``write`` waits (back-pressure, no frame is lost). A failure on the worker is raised as
``SinkError`` from the next ``write`` or from ``close``.

The encoder is NVENC through PyNvVideoCodec when ``encoder="nvenc"`` (or ``"auto"`` and the GPU
has one: :func:`nvenc_available`), else FFmpeg's libx264/libx265 through PyAV. Output is
yuv420p, BT.709 limited range, tagged as such in the stream.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..batch import Batch
from ..errors import SinkError
from .tiler import Tiler, grid_for

__all__ = ["VideoSink", "nvenc_available"]

_CODECS = {"h264": ("libx264", "h264"), "hevc": ("libx265", "hevc")}
_ENCODERS = ("auto", "nvenc", "pyav")


@functools.lru_cache(maxsize=1)
def nvenc_available() -> bool:
    """Whether PyNvVideoCodec is importable and can open an NVENC session on this GPU (the H100
    and H200 have no NVENC: False there). Probed once, on a throwaway thread: PyNvVideoCodec may
    make a CUDA context of its own current on the calling thread, and torch work on that thread
    would then run in the wrong context ("invalid resource handle")."""
    if not torch.cuda.is_available():
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            import PyNvVideoCodec as nvc  # noqa: N813

            enc = nvc.CreateEncoder(256, 256, "NV12", True, codec="h264")
            del enc
            result.append(True)
        except Exception:  # noqa: BLE001 - any failure means "no usable NVENC"
            result.append(False)

    t = threading.Thread(target=probe, name="vidflow-nvenc-probe", daemon=True)
    t.start()
    t.join(timeout=30)
    return bool(result and result[0])


class _PyAvWriter:
    """One MP4 file written by FFmpeg (libx264/libx265) through PyAV; input RGB ``[H,W,3]``."""

    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str, bitrate: int | None) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        names = [n for n in _CODECS[codec] if n in av.codecs_available]
        if not names:
            raise SinkError(f"no {codec} encoder in this FFmpeg build (looked for {', '.join(_CODECS[codec])})")
        self.container = av.open(str(path), mode="w")
        opts = {"preset": "veryfast"} if names[0] in ("libx264", "libx265") else {}
        self.stream = self.container.add_stream(names[0], rate=Fraction(fps).limit_denominator(1001), options=opts)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if bitrate:
            self.stream.bit_rate = int(bitrate)
        cc = self.stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
        self.n = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
        frame.pts = self.n
        self.n += 1
        for p in self.stream.encode(frame):
            self.container.mux(p)

    def close(self) -> None:
        for p in self.stream.encode(None):
            self.container.mux(p)
        self.container.close()


class _NvencWriter:
    """NVENC through PyNvVideoCodec: NV12 host input, Annex-B output remuxed into MP4 by PyAV
    at close. Input is NV12 ``[H*3//2, W]`` uint8 (converted on the device before the copy)."""


    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str, bitrate: int | None) -> None:
        import PyNvVideoCodec as nvc  # noqa: N813

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.codec = path, fps, codec
        self.raw_path = path.with_suffix(path.suffix + f".{codec}")
        kw = {"codec": codec, "fps": str(round(fps)), "preset": "p4"}
        if bitrate:
            kw["bitrate"] = str(int(bitrate))
        self.enc = nvc.CreateEncoder(width, height, "NV12", True, **kw)
        self.raw = open(self.raw_path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, nv12: np.ndarray) -> None:
        self.raw.write(bytes(self.enc.Encode(nv12)))

    def close(self) -> None:
        import av

        self.raw.write(bytes(self.enc.EndEncode()))
        self.raw.close()
        tb = Fraction(1, 1) / Fraction(self.fps).limit_denominator(1001)
        with av.open(str(self.raw_path), format=self.codec) as src, av.open(str(self.path), "w") as dst:
            ins = src.streams.video[0]
            out = dst.add_stream_from_template(ins)
            out.time_base = tb
            for i, pkt in enumerate(p for p in src.demux(ins) if p.size):
                pkt.pts = pkt.dts = i
                pkt.time_base = tb
                pkt.stream = out
                dst.mux(pkt)
        os.remove(self.raw_path)


def _rgb_to_nv12(img: torch.Tensor) -> torch.Tensor:
    """uint8 ``[3,H,W]`` RGB -> uint8 ``[H*3//2, W]`` NV12, BT.709 limited range (H, W even)."""
    x = img.float()
    r, g, b = x[0], x[1], x[2]
    y = 16 + 0.1826 * r + 0.6142 * g + 0.0620 * b
    u = 128 - 0.1006 * r - 0.3386 * g + 0.4392 * b
    v = 128 + 0.4392 * r - 0.3989 * g - 0.0403 * b
    uv = torch.stack([u, v], -1)  # [H,W,2]
    h, w = y.shape
    uv = uv.view(h // 2, 2, w // 2, 2, 2).mean((1, 3)).reshape(h // 2, w)
    return torch.cat([y, uv]).round_().clamp_(0, 255).to(torch.uint8)


class VideoSink:
    """Write batches to MP4.

    ``path``: with ``tiled=True`` the output file (e.g. ``out/annotated.mp4``); with
    ``tiled=False`` a folder (one ``<source_id>.mp4`` per source) or a pattern containing
    ``{source_id}``. ``fps``: output frame rate. ``tiled``: one ``rows x cols`` mosaic of
    ``size=(width, height)`` (rows/cols default to the squarest grid for the sources of the first
    batch); else one file per source at the size of its frame in the batch image.
    ``draw``: draw boxes and captions (``ops.draw.Annotate``) on a copy of the images first (leave
    it False when an ``Annotate`` stage already drew). ``codec``: ``"h264"`` or ``"hevc"``.
    ``bitrate``: bits/s (``None``: the encoder's default quality). ``encoder``: ``"auto"``
    (NVENC when available, else PyAV), ``"nvenc"``, ``"pyav"``. ``queue_size``: frames waiting for
    the encoder before ``write`` blocks.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float = 30, tiled: bool = True, rows: int | None = None,
                 cols: int | None = None, size: tuple[int, int] | list[int] = (1280, 720), draw: bool = True,
                 codec: Literal["h264", "hevc"] = "h264", bitrate: int | None = None,
                 encoder: Literal["auto", "nvenc", "pyav"] = "auto", queue_size: int = 8,
                 name: str = "video") -> None:
        if codec not in _CODECS:
            raise ValueError(f"codec: expected one of {sorted(_CODECS)}, got {codec!r}")
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder: expected one of {list(_ENCODERS)}, got {encoder!r}")
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if (rows is None) != (cols is None):
            raise ValueError("rows and cols: give both or neither")
        if len(size) != 2 or size[0] < 2 or size[1] < 2:
            raise ValueError(f"size must be (width, height), got {size}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.path = str(path)
        if tiled and "{source_id}" in self.path:
            raise ValueError("path: a {source_id} pattern needs tiled=False")
        self.fps, self.tiled, self.rows, self.cols = float(fps), bool(tiled), rows, cols
        self.size = (int(size[0]) // 2 * 2, int(size[1]) // 2 * 2)  # yuv420p needs even sizes
        self.draw, self.codec, self.bitrate, self.encoder, self.name = draw, codec, bitrate, encoder, name
        self.frames_written = 0
        self.files: dict[int | str, Path] = {}
        self._tiler: Tiler | None = None
        self._annotate = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._writers: dict[Any, Any] = {}
        self._error: BaseException | None = None
        self._closed = False
        self._nvenc: bool | None = None
        self._thread = threading.Thread(target=self._work, name=f"vidflow-{name}", daemon=True)
        self._thread.start()

    # -- producer side (pipeline thread) --------------------------------------------------
    def _file(self, key: Any) -> Path:
        if self.tiled:
            return Path(self.path)
        if "{source_id}" in self.path:
            return Path(self.path.format(source_id=key))
        return Path(self.path) / f"{key}.mp4"

    def _use_nvenc(self, device: torch.device) -> bool:
        if self._nvenc is None:
            if self.encoder == "nvenc":
                if device.type != "cuda" or not nvenc_available():
                    raise SinkError("encoder='nvenc' but PyNvVideoCodec/NVENC is not available on this device")
                self._nvenc = True
            else:
                self._nvenc = self.encoder == "auto" and device.type == "cuda" and nvenc_available()
        return self._nvenc

    def _submit(self, key: Any, img: torch.Tensor) -> None:
        """Queue ``img`` uint8 ``[3,H,W]`` (any device) for file ``key``: starts the host copy."""
        if self._use_nvenc(img.device):
            src = _rgb_to_nv12(img)
        else:
            src = img.permute(1, 2, 0)
        if img.is_cuda:
            host = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(src, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = torch.empty(src.shape, dtype=torch.uint8).copy_(src), None  # always a copy
        self.files.setdefault(key, self._file(key))
        self._put((key, host, event))

    def _put(self, item: Any) -> None:
        while True:
            self._raise_worker_error()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, SinkError):
                raise err
            raise SinkError(f"{self.name}: encoder failed: {type(err).__name__}: {err}") from err

    def write(self, batch: Batch) -> None:
        """Draw/tile/crop ``batch`` on its device and queue the frames for encoding."""
        if self._closed:
            raise SinkError(f"{self.name}: write after close")
        if self.draw and len(batch.objects):
            if self._annotate is None:
                from ..ops.draw import Annotate

                self._annotate = Annotate()
            batch = self._annotate(batch.replace(images=batch.images.clone()))
        if self.tiled:
            if self._tiler is None:
                rows, cols = (self.rows, self.cols) if self.rows else grid_for(len({f.source_id for f in batch.frames}))
                self._tiler = Tiler(rows, cols, self.size)
            for mosaic in self._tiler.write(batch):
                self._submit("tiled", mosaic)
            return
        w, h = batch.size
        for i, f in enumerate(batch.frames):
            x0, y0, x1, y1 = f.region if f.region is not None else (0, 0, w, h)
            x0, y0 = max(0, math.ceil(x0)), max(0, math.ceil(y0))
            x1, y1 = min(w, math.floor(x1)), min(h, math.floor(y1))
            x1, y1 = x0 + (x1 - x0) // 2 * 2, y0 + (y1 - y0) // 2 * 2
            self._submit(f.source_id, batch.images[i, :, y0:y1, x0:x1])

    # -- consumer side (worker thread) ----------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self._error is not None:
                continue  # drain after a failure; the error is raised on the producer side
            key, host, event = item
            try:
                if event is not None:
                    event.synchronize()
                arr = host.numpy()
                wr = self._writers.get(key)
                if wr is None:
                    h, w = (arr.shape[0] * 2 // 3, arr.shape[1]) if self._nvenc else arr.shape[:2]
                    cls = _NvencWriter if self._nvenc else _PyAvWriter
                    wr = self._writers[key] = cls(self.files[key], w, h, self.fps, self.codec, self.bitrate)
                wr.write(arr)
                self.frames_written += 1
            except BaseException as e:  # noqa: BLE001 - handed to the producer thread
                self._error = e

    def close(self) -> None:
        """Flush: emit a pending mosaic, finish encoding, close the files. Idempotent."""
        if self._closed:
            return
        try:
            if self._tiler is not None and self._error is None:
                for mosaic in self._tiler.flush():
                    self._submit("tiled", mosaic)
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            errors = []
            for wr in self._writers.values():
                try:
                    wr.close()
                except Exception as e:  # noqa: BLE001 - close every file, report the first failure
                    errors.append(e)
            self._writers.clear()
        self._raise_worker_error()
        if errors:
            raise SinkError(f"{self.name}: closing the video file failed: {errors[0]}") from errors[0]

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
