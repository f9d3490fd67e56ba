"""The video sink's encoder: FFmpeg (libx264/libx265) through PyAV; whether this GPU has NVENC (for
``vidflow info``: vidflow has no NVENC writer, see :mod:`vidflow.sinks.video`)."""

from __future__ import annotations

import functools
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SinkError

__all__ = ["nvenc_available", "PyAvWriter", "CODECS", "complete_mp4_end"]

_CODECS = {"h264": ("libx264", "h264"), "hevc": ("libx265", "hevc")}
CODECS = _CODECS


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


def complete_mp4_end(path: str | os.PathLike) -> int:
    """Where a fragmented MP4 stops being whole: the end of its last complete ``moof`` + ``mdat``
    pair (or of the ``moov`` before any fragment; 0 without one). Cutting the file there leaves
    one that opens and decodes to its last complete fragment (a write that failed part-way, a
    full disk, leaves a torn fragment that stops decoders with "Invalid data")."""
    good = offset = 0
    moov = moof = False
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) == 16:
                n = int.from_bytes(head[8:16], "big")
            if n < 8 or offset + n > size:          # torn (or to-end-of-file) box: the file ends here
                break
            offset += n
            if kind == b"moov":
                moov, good = True, offset
            elif kind == b"moof":
                moof = True
            elif kind == b"mdat" and moov and moof:
                moof, good = False, offset
            elif kind in (b"ftyp", b"free", b"skip") and not moov:
                pass
            elif kind == b"mfra" and not moof:
                good = offset
    return good if moov else 0


class _PyAvWriter:
    """One MP4 file written by FFmpeg (libx264/libx265) through PyAV; input RGB ``[H,W,3]``.

    ``fragmented``: fragmented MP4 (``movflags=frag_keyframe+empty_moov``, packets flushed as
    written) with a keyframe every ``keyframe_s``: a killed writer leaves a file that plays up to
    its last complete fragment. Timestamps: ``pts`` seconds of each frame (``timing="pts"``:
    the source's own timing, so duration and rate follow it) or frame count / ``fps``."""

    _TB = Fraction(1, 90000)

    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str, bitrate: int | None, *,
                 fragmented: bool = True, keyframe_s: float = 1.0, timing: str = "pts") -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        names = [n for n in _CODECS[codec] if n in av.codecs_available]
        if not names:
            raise SinkError(f"no {codec} encoder in this FFmpeg build (looked for {', '.join(_CODECS[codec])})")
        fmt_opts = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"} if fragmented else {}
        self.container = av.open(str(path), mode="w", format="mp4", options=fmt_opts)
        gop = max(1, round(fps * keyframe_s))
        opts = {"preset": "veryfast", "g": str(gop)} if names[0] in ("libx264", "libx265") else {}
        # (PyAV types add_stream as any kind of stream; a video codec's is a VideoStream)
        stream: Any = self.container.add_stream(names[0], rate=Fraction(fps).limit_denominator(1001), options=opts)
        self.stream = stream
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if bitrate:
            stream.bit_rate = int(bitrate)
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
        cc.gop_size = gop
        self.timing, self.fps = timing, float(fps)
        if timing == "pts":
            cc.time_base = self._TB
            self.stream.time_base = self._TB
        self.n = 0
        self._last: int | None = None
        self.path, self.fragmented, self.failed = path, fragmented, False

    def _salvage(self) -> None:
        """After a failed write: close what can be closed, then cut a torn last fragment off."""
        self.failed = True
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the disk may still be full; the cut below matters
            pass
        self._cut()

    def _cut(self) -> int:
        """Cut the file back to its last complete fragment (FFmpeg does not always report a
        write that failed part-way, e.g. the trailer on a full disk); returns the bytes cut."""
        if not self.fragmented:
            return 0
        try:
            end, size = complete_mp4_end(self.path), os.path.getsize(self.path)
            if end < size:
                os.truncate(self.path, end)
                return size - end
        except OSError:
            pass
        return 0

    def write(self, rgb: np.ndarray, pts: float = 0.0) -> None:
        try:
            self._write(rgb, pts)
        except BaseException:
            self._salvage()
            raise

    def _write(self, rgb: np.ndarray, pts: float) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
        if self.timing == "pts":
            t = round(pts * 90000)
            if self._last is not None and t <= self._last:     # a loop or a jump back: keep time moving
                t = self._last + round(90000 / self.fps)
            frame.pts, self._last = t, t
            frame.time_base = self._TB
        else:
            frame.pts = self.n
        self.n += 1
        for p in self.stream.encode(frame):
            self.container.mux(p)

    def close(self) -> None:
        if self.failed:
            return
        try:
            for p in self.stream.encode(None):
                self.container.mux(p)
            self.container.close()
        except BaseException:
            self._salvage()
            raise
        cut = self._cut()
        if cut:
            raise SinkError(f"{self.path}: the end of the file could not be written (disk full?); "
                            f"cut back to its last complete fragment ({cut} bytes removed)")


PyAvWriter = _PyAvWriter
