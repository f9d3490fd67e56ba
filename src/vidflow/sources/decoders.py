"""Decoders behind one protocol, and the choice between them (``decoder: auto | nvdec | ffmpeg``).

Both take compressed ``av.Packet``s from the same demuxer (:mod:`._demux`):

=============  ==========================================  ========================================
back-end       yields                                      notes
=============  ==========================================  ========================================
``ffmpeg``     RGB ``[3,H,W]`` uint8 on the CPU, equal to  frame threads; damage counted from the
               PyAV's ``to_ndarray("rgb24")``              decoder's errors and corrupt flags
``nvdec``      NV12 ``[H*3//2, W]`` uint8 on CUDA          PyNvVideoCodec (:mod:`._nvdec`), H.264,
               (copies: decoder surfaces never leave it)   HEVC, AV1, VP9 ...; 8-bit 4:2:0
=============  ==========================================  ========================================

A :class:`Decoder` has ``name``, ``decode(packet) -> [Decoded]``, ``flush() -> [Decoded]`` and
``close()``. ``decode`` raises :class:`PacketRejected` for a packet it cannot decode (the source
counts it and goes on) and ``DecodeError`` for what ends the source (a frame over ``max_pixels``).

:class:`DecoderChoice` is the one place that picks: ``auto`` on a CUDA device takes NVDEC and,
when NVDEC cannot take a source's stream (codec, profile, 4:4:4, 10-bit, size, no
PyNvVideoCodec), falls back to FFmpeg for that source with ONE warning naming the source
(password removed) and the reason; ``nvdec`` raises ``DecodeError`` instead; ``ffmpeg`` never
tries NVDEC.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple, Protocol

import torch

from ..errors import DecodeError, redact_uri
from ..ops.color import default_matrix

__all__ = ["Decoded", "Decoder", "PacketRejected", "FfmpegDecoder", "DecoderChoice", "DECODERS", "DecoderName",
           "ffmpeg_rgb", "stream_color", "check_decoder"]

log = logging.getLogger("vidflow.sources")

DecoderName = Literal["auto", "nvdec", "ffmpeg"]
DECODERS = ("auto", "nvdec", "ffmpeg")
# AVColorSpace -> matrix swscale uses (BT470BG, SMPTE170M, FCC-ish -> 601; BT709 -> 709)
_AVCOL_SPC = {1: "bt709", 5: "bt601", 6: "bt601"}


class Decoded(NamedTuple):
    """One decoded picture: ``pts`` seconds (None: the stream gave none), ``data`` (``format``
    "rgb" ``[3,H,W]`` or "nv12" ``[H*3//2, W]``), its displayed ``width`` x ``height``, and
    ``corrupt``: the decoder concealed damage in it."""

    pts: float | None
    data: torch.Tensor
    format: str
    width: int
    height: int
    corrupt: bool = False


class PacketRejected(Exception):
    """The decoder rejected one packet (corrupt data); decoding goes on with the next."""


class Decoder(Protocol):
    name: str

    def decode(self, packet: Any) -> list[Decoded]: ...

    def flush(self) -> list[Decoded]: ...

    def close(self) -> None: ...


def check_decoder(decoder: Any, owner: str) -> str:
    if decoder not in DECODERS:
        raise ValueError(f"{owner}: decoder must be one of {DECODERS}, got {decoder!r}")
    return str(decoder)


def stream_color(stream: Any) -> tuple[str, bool]:
    """``(matrix, full_range)`` from a PyAV video stream's metadata, as FFmpeg would convert it:
    unspecified matrix -> :func:`default_matrix`; unspecified range -> limited."""
    cc = stream.codec_context
    matrix = _AVCOL_SPC.get(int(cc.colorspace or 2)) or default_matrix(cc.height or 0)
    full = int(cc.color_range or 0) == 2 or (cc.format is not None and cc.format.name.startswith("yuvj"))
    return matrix, full


def ffmpeg_rgb(frame: Any) -> torch.Tensor:
    """An ``av.VideoFrame`` -> RGB ``[3, H, W]`` uint8 CPU tensor (a zero-copy HWC view), exactly
    PyAV's ``frame.to_ndarray(format="rgb24")``."""
    arr = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(arr).permute(2, 0, 1)


class FfmpegDecoder:
    """FFmpeg (PyAV) decoding of one demuxed ``stream`` on the CPU. ``threads="AUTO"`` (files):
    frame threads, which also make FFmpeg flag the frames it concealed damage in
    (``Decoded.corrupt``); ``"SLICE"`` (live streams): no frame of delay per thread."""

    name = "ffmpeg"

    def __init__(self, stream: Any, *, max_pixels: int, threads: str = "AUTO") -> None:
        self.max_pixels = max_pixels
        stream.thread_type = threads
        self._cc = stream.codec_context
        self._tb = stream.time_base          # a Fraction: flushed frames carry no time base of their own

    def _frames(self, packet: Any) -> list[Decoded]:
        import av
        try:
            frames = self._cc.decode(packet)
        except av.error.FFmpegError as e:
            raise PacketRejected(redact_uri(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")) from None
        out = []
        for fr in frames:
            if fr.width * fr.height > self.max_pixels:
                raise DecodeError(f"a frame of {fr.width}x{fr.height} exceeds max_pixels={self.max_pixels}")
            pts = fr.time if fr.time is not None and fr.time == fr.time else (
                float(fr.pts * self._tb) if fr.pts is not None and self._tb else None)
            out.append(Decoded(pts, ffmpeg_rgb(fr), "rgb", fr.width, fr.height, bool(fr.is_corrupt)))
        return out

    def decode(self, packet: Any) -> list[Decoded]:
        return self._frames(packet)

    def flush(self) -> list[Decoded]:
        try:
            return self._frames(None)
        except PacketRejected:
            return []

    def close(self) -> None:
        self._cc = None


class DecoderChoice:
    """Which decoder a source uses, decided once per source and kept across reconnects and loop
    passes (see the module text). ``make(stream, previous)`` returns a decoder for a newly
    opened ``stream`` (``previous`` NVDEC decoder reused when it can take it); ``refuse(reason)``
    is called when NVDEC failed on this source: FFmpeg from now on (or ``DecodeError`` for
    ``decoder="nvdec"``). ``alloc``: where NVDEC writes pictures (a decode process's ring);
    ``low_latency``: NVDEC's low-latency output (``NvdecDecoder``)."""

    def __init__(self, want: str, device: torch.device, *, source_id: Any, uri: str, max_pixels: int,
                 alloc: Any = None, threads: str = "AUTO", low_latency: bool = False) -> None:
        self.want, self.device, self.source_id, self.uri, self.threads = want, device, source_id, uri, threads
        self.low_latency = low_latency
        self.max_pixels, self.alloc = max_pixels, alloc
        if want == "nvdec" and device.type != "cuda":
            raise DecodeError(f"decoder='nvdec' needs a CUDA device, got {device}", source_id=source_id, uri=uri)
        self.nvdec = want != "ffmpeg" and device.type == "cuda"
        self.reason = "" if self.nvdec else ("decoder='ffmpeg'" if want == "ffmpeg" else f"device {device}")

    def refuse(self, reason: Any) -> None:
        text = redact_uri(f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else reason)
        if self.want == "nvdec":
            raise DecodeError(f"NVDEC cannot decode this stream: {text}", source_id=self.source_id, uri=self.uri)
        if self.nvdec:
            log.warning("source %s (%s): NVDEC cannot take this stream (%s); decoding with FFmpeg on the CPU",
                        self.source_id, self.uri, text)
        self.nvdec, self.reason = False, text

    def make(self, stream: Any, previous: Any = None) -> Decoder:
        if self.nvdec:
            from ._nvdec import NvdecDecoder
            if isinstance(previous, NvdecDecoder) and previous.rebind(stream):
                return previous
            if previous is not None:
                previous.close()
            try:
                dec = NvdecDecoder(stream, self.device, low_latency=self.low_latency)
                dec.alloc = self.alloc
                return dec
            except Exception as e:  # noqa: BLE001 - any NVDEC refusal falls back (or raises for "nvdec")
                self.refuse(e)
        elif previous is not None:
            previous.close()
        return FfmpegDecoder(stream, max_pixels=self.max_pixels, threads=self.threads)
