"""``FileSource``: anything FFmpeg reads (mp4, mkv, mov, ts, avi, raw .h264/.hevc ...).

Demuxed with PyAV; decoded on NVDEC when the pipeline device is CUDA and NVDEC takes the
stream (frames stay on the GPU as NV12), otherwise by FFmpeg on the CPU (RGB frames equal to
PyAV's own conversion). With ``decoder="auto"`` a stream NVDEC cannot take (4:4:4, 10-bit, a
codec it lacks, no PyNvVideoCodec) falls back to FFmpeg with one logged warning naming the source.

>>> src = FileSource("cam1.mp4", loop=False)
>>> for f in src.frames(device=torch.device("cuda"), source_id=0):
...     f.info.frame_num, f.info.pts, f.format, f.data.shape   # 0, 0.0, 'nv12', (1620, 1920)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import torch

from ..batch import FrameInfo
from ..errors import DecodeError, StreamUnavailable, redact_uri
from .base import DEFAULT_MAX_PIXELS, SourceFrame
from .decode import NvdecDecoder, ffmpeg_rgb, stream_color

__all__ = ["FileSource"]

log = logging.getLogger(__name__)
_DECODERS = ("auto", "nvdec", "ffmpeg")


class FileSource:
    """Frames of one video file. ``loop=True`` restarts at the end (``frame_num`` keeps
    counting, ``pts`` keeps increasing by the clip's duration). ``decoder``: ``"auto"`` (NVDEC on
    a CUDA device when it can, else FFmpeg), ``"nvdec"`` (fail if NVDEC cannot) or
    ``"ffmpeg"``. ``realtime``: replay the file like a camera: each frame is released when its
    timestamp is due (``realtime=1.0`` at the clip's own rate, ``2.0`` twice as fast), stamped
    (``ntp_ns``) at release, and the source is ``live`` (a pipeline that falls behind drops the
    oldest frames instead of slowing the file down). After ``frames()`` started, ``backend`` says which one runs. A stream declaring
    more than ``max_pixels`` pixels per frame is refused before anything is decoded. Packets the
    decoder rejects are skipped and counted (``decode_errors``); a file that ends short of the
    frames its container declares is reported (``last_error``, a logged warning)."""

    live = False
    poolable = True           # can decode in a decode process (Pipeline(decode_processes=K))

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_stop", None)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._stop = threading.Event()

    def __init__(self, path: str | os.PathLike, *, loop: bool = False,
                 decoder: Literal["auto", "nvdec", "ffmpeg"] = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 realtime: float | bool = False) -> None:
        if decoder not in _DECODERS:
            raise ValueError(f"FileSource: decoder must be one of {_DECODERS}, got {decoder!r}")
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"FileSource: max_pixels must be an int >= 1, got {max_pixels!r}")
        self.max_pixels = max_pixels
        speed = 1.0 if realtime is True else float(realtime or 0.0)
        if speed < 0:
            raise ValueError(f"FileSource: realtime must be False, True or a speed > 0, got {realtime!r}")
        self.realtime = speed
        self.live = speed > 0
        self.decode_errors = 0
        self.last_error = ""
        self.path = os.fspath(path)
        self.uri = redact_uri(self.path)
        self.loop = bool(loop)
        self.decoder = decoder
        self.backend: str | None = None
        #: internal: where NVDEC pictures are written (see ``NvdecDecoder.alloc``); a decode
        #: process sets it to hand out its ring slots
        self.frame_alloc: Any = None
        self._stop = threading.Event()

    def __repr__(self) -> str:
        rt = f", realtime={self.realtime:g}" if self.realtime else ""
        return f"FileSource({self.uri!r}, loop={self.loop}, decoder={self.decoder!r}{rt})"

    def stats(self) -> dict[str, Any]:
        """Counters the pipeline copies into its summary."""
        return {"decode_errors": self.decode_errors, "last_error": self.last_error}

    def close(self) -> None:
        """Stop ``frames()`` at the next packet (safe from any thread)."""
        self._stop.set()

    # -------------------------------------------------------------------------------------
    def _open(self, source_id: Any) -> tuple[Any, Any]:
        import av
        if not os.path.exists(self.path):
            raise StreamUnavailable("file not found", source_id=source_id, uri=self.uri)
        try:
            container = av.open(self.path)
        except (PermissionError, IsADirectoryError) as e:
            raise StreamUnavailable(f"cannot open: {e}", source_id=source_id, uri=self.uri) from e
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DecodeError(f"cannot read as video: {e}", source_id=source_id, uri=self.uri) from e
        if not container.streams.video:
            container.close()
            raise DecodeError("no video stream", source_id=source_id, uri=self.uri)
        stream = container.streams.video[0]
        cc = stream.codec_context
        if (cc.width or 0) * (cc.height or 0) > self.max_pixels:
            container.close()
            raise DecodeError(f"the stream declares {cc.width}x{cc.height} pixels per frame, more than "
                              f"max_pixels={self.max_pixels}; refused before decoding", source_id=source_id, uri=self.uri)
        cc.options = {**(cc.options or {}), "max_pixels": str(self.max_pixels)}   # a later, larger SPS too
        return container, stream

    def _pick(self, device: torch.device, source_id: Any) -> str:
        if self.decoder == "ffmpeg":
            return "ffmpeg"
        if device.type != "cuda":
            if self.decoder == "nvdec":
                raise DecodeError(f"decoder='nvdec' needs a CUDA device, got {device}",
                                  source_id=source_id, uri=self.uri)
            return "ffmpeg"
        return "nvdec"

    def _fallback(self, source_id: Any, reason: Any) -> str:
        if self.decoder == "nvdec":
            raise DecodeError(f"NVDEC cannot decode this stream: {reason}", source_id=source_id, uri=self.uri)
        log.warning("source %s (%s): NVDEC cannot take this stream (%s); decoding with FFmpeg on the CPU",
                    source_id, self.uri, redact_uri(reason))
        return "ffmpeg"

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = 0) -> Iterator[SourceFrame]:
        """Decode lazily; yields :class:`SourceFrame` (``rgb`` on the CPU from FFmpeg, ``nv12``
        on CUDA from NVDEC). Raises ``StreamUnavailable`` / ``DecodeError`` naming the source."""
        device = torch.device(device)
        backend = self._pick(device, source_id)
        nvdec: list[Any] = [None]      # the NVDEC decoder, kept across loop passes
        try:
            yield from self._passes(device, source_id, backend, nvdec)
        finally:
            self._drop(nvdec)

    def _passes(self, device: torch.device, source_id: Any, backend: str, nvdec: list[Any]) -> Iterator[SourceFrame]:
        num = 0                    # frame_num, across loops
        offset = 0.0               # added to pts on each loop
        clock0: float | None = None    # realtime: wall time of the first frame's release
        while not self._stop.is_set():
            container, stream = self._open(source_id)
            declared = int(stream.frames or 0)     # read while open: PyAV 19 refuses after close()
            first = last = None
            produced = 0
            try:
                dur = 1.0 / float(stream.guessed_rate or stream.average_rate or 30)
                matrix, full = stream_color(stream)
                if backend == "nvdec":
                    try:
                        gen = self._nvdec(container, stream, device, nvdec)
                    except Exception as e:         # noqa: BLE001 - any NVDEC refusal -> fallback
                        backend = self._fallback(source_id, e)
                        continue
                else:
                    gen = self._ffmpeg(container, stream)
                self.backend = backend
                retry = False
                while True:
                    try:
                        item = next(gen)
                    except StopIteration:
                        break
                    except Exception as e:
                        if backend == "nvdec" and produced == 0 and num == 0:
                            backend, retry = self._fallback(source_id, e), True
                            self._drop(nvdec)
                            break
                        raise DecodeError(f"decoding failed after {num} frames ({backend}): {e}",
                                          source_id=source_id, uri=self.uri) from e
                    pts, data, fmt, width, height = item
                    if pts is None:
                        pts = last + dur if last is not None else 0.0
                    first = pts if first is None else first
                    last = pts
                    if self.realtime:
                        t = (pts + offset) / self.realtime
                        if clock0 is None:
                            clock0 = time.monotonic() - t
                        wait = clock0 + t - time.monotonic()
                        if wait > 0 and self._stop.wait(wait):
                            return
                    info = FrameInfo(source_id=source_id, frame_num=num, pts=pts + offset,
                                     ntp_ns=time.time_ns(), width=width, height=height)
                    if fmt == "rgb":
                        frame = SourceFrame(info, data, "rgb")
                    else:
                        frame = SourceFrame(info, data, "nv12", matrix, full)
                    num += 1
                    produced += 1
                    yield frame
                    if self._stop.is_set():
                        return
            finally:
                container.close()
            if produced == 0:
                if retry:
                    continue                       # NVDEC refused at the first packets: FFmpeg now
                if backend == "nvdec" and num == 0:
                    backend = self._fallback(source_id, "NVDEC decoded no frames")
                    self._drop(nvdec)
                    continue
                raise DecodeError("no frames could be decoded", source_id=source_id, uri=self.uri)
            if declared and produced < declared and not self._stop.is_set():
                self.last_error = f"incomplete: decoded {produced} of the {declared} frames the container declares"
            if self.last_error and not self._stop.is_set():
                log.warning("source %s (%s): %d decode errors; %s", source_id, self.uri, self.decode_errors,
                            self.last_error)
            if not self.loop:
                return
            offset += last - first + dur

    def _ffmpeg(self, container: Any, stream: Any) -> Iterator[tuple]:
        import av

        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:      # corrupt data: skip the packet, count it
                self.decode_errors += 1
                self.last_error = f"decode error: {e}"
                continue
            for fr in decoded:
                if fr.width * fr.height > self.max_pixels:
                    raise DecodeError(f"a frame of {fr.width}x{fr.height} exceeds max_pixels={self.max_pixels}")
                yield (fr.time, ffmpeg_rgb(fr), "rgb", fr.width, fr.height)

    @staticmethod
    def _drop(nvdec: list[Any]) -> None:
        if nvdec[0] is not None:
            nvdec[0].close()
            nvdec[0] = None

    def _nvdec(self, container: Any, stream: Any, device: torch.device, nvdec: list[Any]) -> Iterator[tuple]:
        """Frames of one pass over the file. The decoder of the previous pass is kept when it can
        take this stream (``NvdecDecoder.rebind``); ``nvdec[0]`` holds it, ``frames()`` closes it."""
        dec = nvdec[0]
        if dec is None or not dec.rebind(stream):
            self._drop(nvdec)
            dec = NvdecDecoder(stream, device)     # raises when NVDEC cannot take the stream
            dec.alloc = self.frame_alloc
            nvdec[0] = dec
        tb = float(stream.time_base) if stream.time_base else None
        w, h = dec.width, dec.height

        def gen() -> Iterator[tuple]:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                for pts, nv12 in dec.decode(packet):
                    yield (pts * tb if pts is not None and tb else None, nv12, "nv12", w, h)
            for pts, nv12 in dec.decode(None):     # flush: the decoder can then take the next pass
                yield (pts * tb if pts is not None and tb else None, nv12, "nv12", w, h)
        return gen()
