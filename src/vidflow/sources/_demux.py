"""The one demux layer under every source (PyAV): open, check, yield packets with timestamps.

``Demuxer(target, ...)`` opens a file path or any URI FFmpeg's protocols read, with options and
``(connect, read)`` timeouts (PyAV's interrupt callback), and checks the stream before anything
is decoded: a video stream exists, its declared size is within ``max_pixels`` (the decoder is
told the same limit, for a later, larger SPS). ``info`` describes the stream
(:class:`StreamInfo`); ``packets()`` yields ``av.Packet``s of the video stream, the last one the
demuxer's empty flush packet. Every message names the source and never carries a password
(:func:`describe` strips the file name PyAV appends, :func:`~vidflow.errors.redact_uri` the rest).

``low_delay=True`` (``UriSource(low_latency=True)``, the default for live ones, on ``TS_SCHEMES``):
an MPEG-TS stream is read
without FFmpeg's parser (``fflags=noparse``). Each PES packet already holds one access
unit, but the parser hands it out only once the next one starts: one frame interval (33 ms at
30 fps) of latency for nothing. Without it packets carry no keyframe flag, so the keyframe gate
asks :func:`starts_picture_anew`. ``fpsprobesize=0`` too: opening does not hold back the first
~20 frames to estimate the frame rate (which then came out late, in a burst, after every
reconnect); the rate comes from the SPS (``codec_context.framerate``). Any other format (a raw H.264 elementary stream needs the
parser to cut it into pictures) is opened again with the parser; ``fflags`` in ``options`` wins.

Errors: ``StreamUnavailable`` (cannot open or read: missing file, refused, timed out, a read
failing mid-stream) or ``DecodeError`` (opened, but nothing to decode: no video stream, too many
pixels, not a video). :class:`ReadTimeout` (a ``StreamUnavailable``) when a read took longer
than the read timeout, so a live source can tell a silent peer from a broken one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av

from ..errors import DecodeError, StreamUnavailable, redact_uri
from ..frame import ColorMatrix
from .decoders import stream_color

__all__ = ["Demuxer", "StreamInfo", "ReadTimeout", "describe", "LIVE_SCHEMES", "scheme_of", "network_options",
           "starts_picture_anew", "TS_SCHEMES"]

#: URI schemes that are live streams (reconnect, drop-oldest) unless told otherwise
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt", "hls", "mms")


#: schemes that usually carry MPEG-TS (read without the parser with ``low_delay``)
TS_SCHEMES = ("tcp", "udp", "srt")


#: libavformat's MPEG-TS demuxer hands out at most this much of one PES as one packet when it
#: reads without the parser (mpegts.c ``MAX_PES_PAYLOAD``); a packet within a few hundred bytes
#: of it (its PES header) may go on in the next one
_PES_MAX = 200 * 1024
_PES_CUT = _PES_MAX - 1024
#: at most this many pieces are joined (~50 MB: bounded memory on a stream that never ends a PES)
_PES_PIECES = 256


def _joined(parts: list[Any]) -> Any:
    """One packet of the pieces of a PES the demuxer cut (see :meth:`Demuxer.packets`)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    packet = av.Packet(b"".join(bytes(p) for p in parts))
    packet.stream = first.stream
    packet.time_base = first.time_base
    packet.pts, packet.dts = first.pts, first.dts
    packet.is_keyframe = first.is_keyframe
    return packet


class ReadTimeout(StreamUnavailable):
    """A read (or the open) took longer than its timeout: the peer went quiet."""


def scheme_of(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def describe(e: BaseException) -> str:
    """An FFmpeg/OS error as text without the file name PyAV appends (it may hold a password)."""
    msg = getattr(e, "strerror", None) or str(e)
    return redact_uri(f"{type(e).__name__}: {msg}")


def network_options(scheme: str, *, transport: str, read_timeout: float) -> dict[str, str]:
    """FFmpeg's own socket timeouts for a network ``scheme`` (the interrupt callback is the
    outer bound): RTSP's ``timeout`` (``stimeout`` before libavformat 59) and transport, else
    ``rw_timeout``. RTSP probes only 0.5 s: the SDP names the codec, the first keyframe the rest."""
    read_us = str(int(read_timeout * 1e6))
    if scheme in ("rtsp", "rtsps"):
        fmt_major = av.library_versions.get("libavformat", (59,))[0]
        return {"rtsp_transport": transport, ("timeout" if fmt_major >= 59 else "stimeout"): read_us,
                "analyzeduration": "500000"}
    if scheme in LIVE_SCHEMES:
        return {"rw_timeout": read_us}
    return {}


#: NAL unit types a decoder can start at: H.264 IDR (5) and SPS (7); HEVC IRAP (16-23) and VPS/SPS (32, 33)
_H264_START = frozenset({5, 7})
_HEVC_START = frozenset({16, 17, 18, 19, 20, 21, 22, 23, 32, 33})


def starts_picture_anew(packet: Any, codec: str) -> bool:
    """Whether a decoder can start at ``packet``: the demuxer flagged it a keyframe, or (H.264 /
    HEVC in Annex B) it holds an IDR/IRAP picture or a sequence header. Without FFmpeg's parser
    (``fflags=noparse``, which removes its one-frame wait for the next access unit) MPEG-TS
    packets carry no keyframe flag, so a source waiting for a keyframe looks into the bitstream."""
    if packet.is_keyframe:
        return True
    if codec not in ("h264", "hevc"):
        return False
    data = bytes(packet)
    starts = _H264_START if codec == "h264" else _HEVC_START
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        head = data[i + 3]
        kind = head & 0x1F if codec == "h264" else (head >> 1) & 0x3F
        if kind in starts:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


@dataclass(frozen=True)
class StreamInfo:
    """What the container says of its first video stream. ``declared``: frames it declares (0 =
    unknown); ``duration``: seconds (0 = unknown); ``fps``: its rate (30 when it names none)."""

    codec: str
    width: int
    height: int
    pix_fmt: str | None
    fps: float
    time_base: float | None
    declared: int
    duration: float
    matrix: ColorMatrix
    full_range: bool
    truncated: bool = False      # the file ends mid-packet (an MPEG-TS whose size is no multiple of 188 / 192)

    @property
    def expected_frames(self) -> int:
        """Frames the container declares, else what its duration implies (0 = unknown)."""
        if self.declared:
            return self.declared
        return int(round(self.duration * self.fps)) if self.duration > 0 else 0


class Demuxer:
    """One open container (see the module text). ``target``: what FFmpeg opens (may hold a
    password); ``uri``: the same, redacted, for messages; ``file=True``: a local path (missing
    and unreadable files are told apart). ``timeout``: ``(connect, read)`` seconds or None."""

    def __init__(self, target: str, *, uri: str, source_id: Any, max_pixels: int,
                 options: dict[str, str] | None = None, timeout: tuple[float, float] | None = None,
                 file: bool = False, low_delay: bool = False) -> None:
        self.target, self.uri, self.source_id = target, uri, source_id
        self.low_delay = low_delay and "fflags" not in (options or {})
        self.parser = True        # FFmpeg's parser cuts the packets (False: MPEG-TS read with low_delay)
        self.max_pixels, self.options, self.timeout, self.file = max_pixels, dict(options or {}), timeout, file
        self.container: Any = None
        self.stream: Any = None
        self._info: StreamInfo | None = None
        self.opened_at: float | None = None

    @property
    def info(self) -> StreamInfo:
        """What the open container says of its video stream."""
        if self._info is None:
            raise RuntimeError("Demuxer.info: open() it first")
        return self._info

    def _unavailable(self, text: str, cls: type[StreamUnavailable] = StreamUnavailable) -> StreamUnavailable:
        return cls(text, source_id=self.source_id, uri=self.uri)

    def _undecodable(self, text: str) -> DecodeError:
        return DecodeError(text, source_id=self.source_id, uri=self.uri)

    def open(self) -> Demuxer:
        if self.file:
            self._check_file()
        if self.low_delay:
            self._open({"fpsprobesize": "0", **self.options, "fflags": "noparse"})
            if self.container.format.name.split(",")[0] == "mpegts":
                self.parser = False
            else:                                   # packets need the parser to become pictures
                self.close()
                self._open(self.options)
        else:
            self._open(self.options)
            if ("noparse" in self.options.get("fflags", "")
                    and self.container.format.name.split(",")[0] == "mpegts"):
                self.parser = False                 # the user's noparse: joined pieces too
        self.opened_at = time.monotonic()
        try:
            self._check()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, options: dict[str, str]) -> None:
        kw: dict[str, Any] = {"options": dict(options)} if options else {}
        if self.timeout is not None:
            kw["timeout"] = self.timeout
        t0 = time.monotonic()
        try:
            self.container = av.open(self.target, mode="r", **kw)
        except av.error.ExitError:
            raise self._unavailable(f"could not open: timed out after {self.timeout[0]:g} s (connect_timeout)"
                                    if self.timeout else "could not open: timed out", ReadTimeout) from None
        except (PermissionError, IsADirectoryError) as e:
            raise self._unavailable(f"cannot open: {describe(e)}") from None
        except av.error.InvalidDataError as e:
            took = time.monotonic() - t0
            if self.timeout is not None and took >= 0.95 * min(self.timeout):
                # FFmpeg's own socket timeout surfaces as a generic error (RTSP: "invalid data")
                raise self._unavailable(f"could not open: timed out, no answer in {took:.1f} s ({describe(e)})",
                                        ReadTimeout) from None
            if not self.file and scheme_of(self.target) in LIVE_SCHEMES:
                raise self._unavailable(f"could not open: {describe(e)}") from None
            raise self._undecodable(f"cannot read as video: {describe(e)}") from None
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if self.file:
                raise self._undecodable(f"cannot read as video: {describe(e)}") from None
            raise self._unavailable(f"could not open: {describe(e)}") from None

    def _check_file(self) -> None:
        path = self.target
        if not os.path.exists(path):
            parent = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(parent) and not os.access(parent, os.X_OK):
                raise self._unavailable(f"cannot open: permission denied on the directory {redact_uri(parent)}")
            raise self._unavailable("file not found")
        if os.path.isdir(path):
            raise self._unavailable("cannot open: it is a directory")
        if not os.access(path, os.R_OK):
            raise self._unavailable("cannot open: permission denied")

    def _check(self) -> None:
        """The nine checks every source used to repeat: a video stream, its size, the limit."""
        if not self.container.streams.video:
            raise self._undecodable("no video stream")
        stream = self.container.streams.video[0]
        cc = stream.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w * h > self.max_pixels:
            raise self._undecodable(f"the stream declares {w}x{h} pixels per frame, more than "
                                    f"max_pixels={self.max_pixels}; refused before decoding")
        cc.options = {**(cc.options or {}), "max_pixels": str(self.max_pixels)}   # a later, larger SPS too
        fps = float(stream.average_rate or cc.framerate or stream.guessed_rate or 0) or 30.0
        tb = float(stream.time_base) if stream.time_base else None
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if not duration and self.container.duration:
            duration = self.container.duration / 1e6          # AV_TIME_BASE
        named, full = stream_color(stream)
        matrix: ColorMatrix = "bt709" if named == "bt709" else "bt601"
        truncated = False
        if self.file and self.container.format.name == "mpegts":
            size = os.path.getsize(self.target)
            truncated = size % 188 != 0 and size % 192 != 0
        self.stream = stream
        self._info = StreamInfo(codec=cc.name, width=w, height=h, pix_fmt=cc.format.name if cc.format else None,
                               fps=fps, time_base=tb, declared=int(stream.frames or 0), duration=duration,
                               matrix=matrix, full_range=full, truncated=truncated)

    def packets(self) -> Iterator[Any]:
        """The video stream's packets in decode order, then the demuxer's flush packet. A read
        that times out raises :class:`ReadTimeout`; one that fails, ``StreamUnavailable``."""
        it = self._read()
        if self.parser:
            yield from it
            return
        # Without the parser, libavformat's MPEG-TS demuxer cuts a PES larger than its 200 KiB
        # buffer (MAX_PES_PAYLOAD) into several packets, the later ones without timestamps: a
        # large keyframe at 1080p and 4 Mbit/s already is. Each must reach the decoder as one
        # picture (NVDEC's low latency decodes every packet as a whole picture), so the pieces
        # are joined here. Only a packet of about that size waits for the next one.
        pending: list[Any] = []
        for packet in it:
            if pending:
                if packet.size and packet.pts is None and packet.dts is None:
                    pending.append(packet)              # the same PES, cut again
                    if packet.size >= _PES_CUT and len(pending) < _PES_PIECES:
                        continue
                    yield _joined(pending)
                    pending = []
                    continue
                yield _joined(pending)
                pending = []
            if packet.size >= _PES_CUT:
                pending = [packet]
                continue
            yield packet
        if pending:
            yield _joined(pending)

    def _read(self) -> Iterator[Any]:
        it = self.container.demux(self.stream)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                return
            except av.error.ExitError:
                raise self._unavailable(f"read timed out: no data for {self.timeout[1]:g} s"
                                        if self.timeout else "read timed out", ReadTimeout) from None
            except (av.error.FFmpegError, OSError) as e:
                raise self._unavailable(f"read failed: {describe(e)}") from None
            yield packet

    def close(self) -> None:
        c, self.container = self.container, None
        if c is not None:
            try:
                c.close()
            except (av.error.FFmpegError, OSError):   # closing a broken stream: nothing left to lose
                pass

    def __enter__(self) -> Demuxer:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()
