"""``FileSource``: anything FFmpeg reads (mp4, mkv, mov, ts, avi, raw .h264/.hevc ...).

Demuxed by the shared demux layer (:mod:`._demux`); decoded on NVDEC when the pipeline device is
CUDA and NVDEC takes the stream (frames stay on the GPU as NV12), otherwise by FFmpeg on the CPU
(RGB frames equal to PyAV's own conversion). With ``decoder="auto"`` a stream NVDEC cannot take
falls back to FFmpeg with one logged warning naming the source (:mod:`.decoders`).

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

from ..errors import DecodeError, StreamUnavailable, redact_uri
from ..frame import SourceFrame
from ._demux import Demuxer
from ._session import NvdecRefused, Timeline, check_on_corrupt, run_session
from ._status import SourceStatus, bare_message
from .base import DEFAULT_MAX_PIXELS
from .decoders import DecoderChoice, check_decoder

log = logging.getLogger("vidflow.sources")

__all__ = ["FileSource"]


def _short(produced: int, expected: int) -> bool:
    """Fewer frames than the container declares / its duration implies (1 frame + 2% of slack:
    a duration rounds, the last frame's length is a guess)."""
    return expected > 0 and produced < expected - max(1, int(expected * 0.02))


class FileSource(SourceStatus):
    """Frames of one video file.

    Args:
        path: the file.
        loop: restart at the end (``frame_num`` keeps counting, ``pts`` keeps increasing).
        decoder: ``"auto"`` (NVDEC on a CUDA device when it can, else FFmpeg), ``"nvdec"`` (fail
            if NVDEC cannot) or ``"ffmpeg"``. After ``frames()`` started, ``backend`` says which runs.
        max_pixels: a stream declaring more pixels per frame is refused before decoding.
        realtime: replay the file like a camera: each frame is released when its timestamp is due
            (``1.0`` at the clip's own rate, ``2.0`` twice as fast), stamped (``ntp_ns``) at
            release, and the source is ``live`` (a pipeline that falls behind drops the oldest
            frames instead of slowing the file down).
        on_corrupt: ``"keep"`` concealed frames (counted), ``"skip"`` them (counted as dropped),
            or ``"fail"`` the source at the first damage.

    Damage is counted (``stats()``: ``decode_errors``, ``corrupt_frames``) with a throttled
    warning naming the source and the frame; a file that ends short of the frames its container
    declares or its duration implies, or whose reading failed mid-way, is ``ended`` with
    ``last_error`` saying so (not a clean end).
    """

    live = False
    poolable = True           # can decode in a decode process (Pipeline(decode_processes=K))
    _EVENTS = ("_stop",)

    def __init__(self, path: str | os.PathLike, *, loop: bool = False,
                 decoder: Literal["auto", "nvdec", "ffmpeg"] = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 realtime: float | bool = False, on_corrupt: Literal["keep", "skip", "fail"] = "keep") -> None:
        self.decoder = check_decoder(decoder, "FileSource")
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
            raise ValueError(f"FileSource: max_pixels must be an int >= 1, got {max_pixels!r}")
        if not isinstance(loop, bool):
            raise ValueError(f"FileSource: loop must be True or False, got {loop!r}")
        self.on_corrupt = check_on_corrupt(on_corrupt, "FileSource")
        self.max_pixels = max_pixels
        speed = 1.0 if realtime is True else float(realtime or 0.0)
        if speed < 0:
            raise ValueError(f"FileSource: realtime must be False, True or a speed > 0, got {realtime!r}")
        self.realtime = speed
        self.live = speed > 0
        self.path = os.fspath(path)
        self.uri = redact_uri(self.path)
        self.loop = loop
        #: internal: where NVDEC pictures are written; a decode process sets it to hand out its ring slots
        self.frame_alloc: Any = None
        self._stop = threading.Event()
        self._status_init()

    def __repr__(self) -> str:
        rt = f", realtime={self.realtime:g}" if self.realtime else ""
        return f"FileSource({self.uri!r}, loop={self.loop}, decoder={self.decoder!r}{rt})"

    def close(self) -> None:
        """Stop ``frames()`` at the next packet (safe from any thread)."""
        self._stop.set()

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = 0) -> Iterator[SourceFrame]:
        """Decode lazily; yields :class:`SourceFrame` (``rgb`` on the CPU from FFmpeg, ``nv12``
        on CUDA from NVDEC). Raises ``StreamUnavailable`` / ``DecodeError`` naming the source."""
        device = torch.device(device)
        choice = DecoderChoice(self.decoder, device, source_id=source_id, uri=self.uri,
                               max_pixels=self.max_pixels, alloc=self.frame_alloc)
        holder: list[Any] = [None]
        try:
            yield from self._passes(choice, holder, source_id)
        except Exception as e:
            if self._stop.is_set():         # closed meanwhile (a stop, a removal): an end, not a failure
                log.debug("source %s (%s): after close: %s: %s", source_id, self.uri, type(e).__name__,
                          bare_message(e, source_id))
                return
            self._error(bare_message(e, source_id))
            self._enter("failed", source_id, self.last_error)
            raise
        finally:
            if holder[0] is not None:
                holder[0].close()
            if self.state not in ("ended", "failed"):
                self._enter("ended", source_id)

    def _passes(self, choice: DecoderChoice, holder: list, sid: Any) -> Iterator[SourceFrame]:
        timeline = Timeline(live=False)
        clock0: float | None = None
        while not self._stop.is_set():
            demux = Demuxer(self.path, uri=self.uri, source_id=sid, max_pixels=self.max_pixels, file=True)
            demux.open()
            self.connects += 1
            info = demux.info
            produced = 0
            broken = ""
            try:
                gen = run_session(demux, choice, holder, self, sid=sid, stop=self._stop, on_corrupt=self.on_corrupt,
                                  timeline=timeline, first_use=self.delivered == 0)
                while True:
                    try:
                        frame = next(gen)
                    except StopIteration as stop:
                        produced = stop.value or 0
                        break
                    except NvdecRefused as e:
                        choice.refuse(e)
                        holder[0].close()
                        holder[0] = None
                        produced = -1
                        break
                    except DecodeError as e:
                        if e.source_id is None:
                            raise DecodeError(str(e), source_id=sid, uri=self.uri) from None
                        raise
                    except StreamUnavailable as e:        # a read failing mid-file ends it, with the error
                        if self.delivered == 0:
                            raise
                        broken = bare_message(e, sid)
                        break
                    if produced == 0:
                        self._enter("running", sid, f"{info.codec} {info.width}x{info.height} on {self.backend}")
                    produced += 1
                    if self.realtime:
                        t = frame.info.pts / self.realtime
                        if clock0 is None:
                            clock0 = time.monotonic() - t
                        wait = clock0 + t - time.monotonic()
                        if wait > 0 and self._stop.wait(wait):
                            return
                        frame = SourceFrame(frame.info.replace(ntp_ns=time.time_ns()), frame.data, frame.format,
                                            frame.matrix, frame.full_range)
                    yield frame
                    if self._stop.is_set():
                        return
            finally:
                demux.close()
            if produced < 0:
                continue                                    # NVDEC refused it: FFmpeg, from the start
            if produced == 0 and self.delivered == 0:
                why = "no frames could be decoded"
                if self.decode_errors:
                    why += f" ({self.decode_errors} decode errors; last: {self.last_error})"
                raise DecodeError(why, source_id=sid, uri=self.uri)
            if info.truncated and not broken:
                broken = "the file ends mid-packet (truncated)"
            self._end_of_pass(sid, produced, info.expected_frames, info.declared, broken)
            if not self.loop or produced == 0:
                if self.last_error and self.state != "ended":
                    self._enter("ended", sid, self.last_error)
                return
            timeline.end_pass()

    def _end_of_pass(self, sid: Any, produced: int, expected: int, declared: int, broken: str) -> None:
        if self._stop.is_set():
            return
        seen = produced + (self.dropped if not self.loop else 0)
        if broken:
            self._error(f"ended early after {produced} frames: {broken}")
        elif _short(seen, expected):
            what = "declares" if declared else "duration implies"
            self._error(f"incomplete: decoded {produced} of the {expected} frames the container {what}")
