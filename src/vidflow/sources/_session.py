"""One pass over one open demuxer: packets -> decoder -> ``SourceFrame``s, the loop every source shares.

``run_session`` gates packets to the first keyframe (a live stream joined mid-GOP, a re-created
decoder), counts damage (packets the decoder rejects or the demuxer flags, frames it conceals)
and applies the ``on_corrupt`` policy (``keep``: deliver concealed frames, counted; ``skip``: drop
them, counted as ``dropped``; ``fail``: the source fails with a ``DecodeError`` naming the frame).
On NVDEC it handles the two failures a stream can cause: NVDEC refusing the stream at its first
packets (:class:`NvdecRefused`: the caller falls back to FFmpeg and opens again) and a new SPS
NVDEC cannot reconfigure to mid-stream (the decoder is re-created, larger, and decoding restarts
at the next keyframe; after three failed re-creations the source falls back to FFmpeg).
:class:`Timeline` keeps ``frame_num`` counting and ``pts`` monotonic across passes and reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

from ..batch import FrameInfo
from ..errors import DecodeError
from ..frame import SourceFrame
from ._demux import Demuxer, starts_picture_anew
from ._reconnect import StallClock
from ._status import SourceStatus
from .decoders import Decoded, Decoder, DecoderChoice, FfmpegDecoder, PacketRejected

__all__ = ["run_session", "Timeline", "NvdecRefused", "Stalled", "ON_CORRUPT", "check_on_corrupt"]

ON_CORRUPT = ("keep", "skip", "fail")
_GATE_MAX = 600          # packets waited for a keyframe before decoding whatever comes


def check_on_corrupt(v: Any, owner: str) -> str:
    if v not in ON_CORRUPT:
        raise ValueError(f"{owner}: on_corrupt must be one of {ON_CORRUPT}, got {v!r}")
    return str(v)


class NvdecRefused(Exception):
    """NVDEC failed at a stream's first packets: decode it with FFmpeg (the choice was told)."""


class Stalled(Exception):
    """No frame for longer than the stall clock allows."""


class Timeline:
    """``frame_num`` and ``pts`` of a source across passes (files) and connections (live).

    Files: the container's own pts plus ``offset`` (a loop adds the clip's duration). Live: each
    connection's pts start one frame after the last one delivered; a pts going back or missing
    (RTP jumps, no timestamps) becomes the previous one plus a frame."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.num = 0
        self.offset = 0.0
        self.last: float | None = None       # last pts delivered (with offset)
        self._first: float | None = None     # first raw pts of this pass / connection
        self._pass_first: float | None = None
        self.dur = 1 / 30

    def begin(self, fps: float) -> None:
        self.dur = 1.0 / fps if fps > 0 else 1 / 30
        self._first = self._pass_first = None
        if self.live and self.last is not None:
            self.offset = self.last + self.dur

    def stamp(self, raw: float | None) -> float:
        if self.live:
            if raw is not None and self._first is None:
                self._first = raw
            pts = None if raw is None or self._first is None else self.offset + raw - self._first
            if pts is None or (self.last is not None and pts <= self.last):
                pts = self.offset if self.last is None else self.last + self.dur
        else:
            if raw is None:
                raw = (self.last - self.offset + self.dur) if self.last is not None else 0.0
            pts = raw + self.offset
            if self._pass_first is None:
                self._pass_first = raw
        self.last = pts
        return pts

    def end_pass(self) -> None:
        """A file's pass ended: the next one continues after it (``loop=True``)."""
        if self.last is not None and self._pass_first is not None:
            self.offset = self.last + self.dur - self._pass_first


def _bigger(stream: Any) -> tuple[int, int]:
    cc = stream.codec_context
    return min(8192, max(2 * int(cc.width or 0), 1920)), min(8192, max(2 * int(cc.height or 0), 1088))


def run_session(demux: Demuxer, choice: DecoderChoice, holder: list, st: SourceStatus, *, sid: Any,
                stop: threading.Event, on_corrupt: str, timeline: Timeline, first_use: bool,
                stall: StallClock | None = None) -> Generator[SourceFrame, None, int]:
    """Frames of one open ``demux`` (see the module text); returns the number delivered.
    ``holder[0]``: the decoder, kept across calls (NVDEC reused on a loop pass); the caller closes
    it. ``first_use``: no frame was decoded on this source yet (NVDEC may still be refused)."""
    info = demux.info
    dec: Decoder = choice.make(demux.stream, holder[0])
    holder[0] = dec
    st.backend = dec.name
    timeline.begin(info.fps)
    produced = 0
    since_keyframe_wait = 0
    gate = True
    recreated = 0

    def emit(d: Decoded) -> Iterator[SourceFrame]:
        nonlocal produced
        st.decoded += 1
        if d.corrupt:
            st._damage("corrupt", sid, timeline.num, "the decoder concealed damage in it")
            if on_corrupt == "fail":
                raise DecodeError(f"frame {timeline.num} is corrupt (on_corrupt='fail'): {st.last_error}",
                                  source_id=sid, uri=st.uri)
            if on_corrupt == "skip":
                st.dropped += 1
                return
        pts = timeline.stamp(d.pts)
        frame_info = FrameInfo(sid, timeline.num, pts, time.time_ns(), d.width, d.height)
        if d.format == "rgb":
            frame = SourceFrame(frame_info, d.data, "rgb")
        else:
            frame = SourceFrame(frame_info, d.data, "nv12", "bt709" if info.matrix == "bt709" else "bt601",
                                info.full_range)
        timeline.num += 1
        produced += 1
        st.delivered += 1
        if stall is not None:
            stall.frame()
        yield frame
        if stall is not None:
            stall.resume()

    def rejected(e: BaseException) -> None:
        st._damage("decode_error", sid, timeline.num, str(e))
        if on_corrupt == "fail":
            raise DecodeError(f"decode error at frame {timeline.num} (on_corrupt='fail'): {e}",
                              source_id=sid, uri=st.uri) from None

    for packet in demux.packets():
        if stop.is_set():
            return produced
        if stall is not None and stall.stalled():
            raise Stalled(f"no {'frame' if stall.got_frame else 'first frame'} for {stall.silent_for():.1f} s")
        if not packet.size:
            continue                                       # the demuxer's flush packet: flush() below
        if gate:
            if not starts_picture_anew(packet, info.codec) and since_keyframe_wait < _GATE_MAX:
                since_keyframe_wait += 1
                continue
            gate, since_keyframe_wait = False, 0
        if packet.is_corrupt:
            rejected(PacketRejected("the demuxer flagged the packet as damaged"))
        try:
            out = dec.decode(packet)
        except PacketRejected as e:
            if dec.name != "nvdec":
                rejected(e)
                continue
            if produced == 0 and first_use:
                raise NvdecRefused(str(e)) from None
            rejected(e)                                    # a new SPS NVDEC cannot take, or damage
            recreated += 1
            dec.close()
            if recreated > 3:
                choice.refuse(f"{e} (after {recreated - 1} re-created decoders)")
                dec = FfmpegDecoder(demux.stream, max_pixels=choice.max_pixels, threads=choice.threads)
            else:
                from ._nvdec import NvdecDecoder
                dec = NvdecDecoder(demux.stream, choice.device, max_size=_bigger(demux.stream),
                                   low_latency=choice.low_latency)
                dec.alloc = choice.alloc
            holder[0] = dec
            st.backend = dec.name
            gate = True
            continue
        if out:
            recreated = 0
        for d in out:
            yield from emit(d)
        if stop.is_set():
            return produced
    try:
        tail = dec.flush()
    except PacketRejected as e:
        rejected(e)
        tail = []
    for d in tail:
        yield from emit(d)
    return produced
