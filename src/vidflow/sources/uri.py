"""Live sources: RTSP cameras and any URI FFmpeg's protocols open (RTSP/RTSPS over TCP or UDP,
RTMP, HTTP(S)/HLS, SRT, UDP/TCP MPEG-TS ...), decoded on NVDEC like files (``decoder="auto"``).

``UriSource(uri)`` opens the stream through the demux layer (:mod:`._demux`), decodes it with the
source's decoder (:mod:`.decoders`: NVDEC on CUDA, frames stay on the GPU as NV12; else FFmpeg)
and yields ``SourceFrame``s. A live stream that ends, stalls, times out or cannot be reached is
opened again after a capped exponential backoff (:mod:`._reconnect`; ``(0.5, 5.0)`` s by default,
reset after a good connection; forever unless ``max_retries``); decoding restarts at a keyframe,
``frame_num`` keeps counting and ``pts`` stays monotonic. A non-live one (a plain file path)
ends at its end and raises ``SourceError`` on any failure.

Nothing blocks forever: opening is bounded by ``connect_timeout`` and each read by
``min(read_timeout, stall_timeout)`` (PyAV's interrupt callback, plus FFmpeg's own socket
timeouts). A connection with no frame for ``stall_timeout`` s (``warmup`` before its first
frame) is ``stalled``: counted, logged, and reconnected; the time the consumer holds a frame
(back-pressure) does not count. States and counters: :mod:`._status` (``stats()``). Every text
that could carry the URI (state, errors, logs, ``repr``) has its password removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Literal

import torch

from ..errors import DecodeError, SourceError, StreamUnavailable, as_source_error, redact_uri
from ..frame import SourceFrame
from ._demux import LIVE_SCHEMES, TS_SCHEMES, Demuxer, ReadTimeout, network_options, scheme_of
from ._reconnect import DEFAULT_BACKOFF, Backoff, Outage, StallClock, check_backoff
from ._session import NvdecRefused, Stalled, Timeline, check_on_corrupt, run_session
from ._status import SourceStatus, bare_message
from .base import DEFAULT_MAX_PIXELS
from .decoders import DecoderChoice, check_decoder

__all__ = ["UriSource", "RtspSource", "TRANSPORTS"]

log = logging.getLogger("vidflow.sources")

TRANSPORTS = ("tcp", "udp")


class _Lost(Exception):
    """This connection is over; ``stalled``: it went quiet (no frame in time)."""

    def __init__(self, text: str, *, stalled: bool = False) -> None:
        super().__init__(text)
        self.stalled = stalled


class UriSource(SourceStatus):
    """Decode any FFmpeg-readable URI (``rtsp://``, ``http://``, ``srt://``, ``tcp://``, a path ...).

    Args:
        uri: what FFmpeg opens. A password in it never leaves this object: ``self.uri`` is redacted.
        live: ``None`` (default) = live for network schemes (rtsp, http, udp, srt, ...), not for
            paths. Live: drop-oldest queueing, end of stream and errors reconnect. Not live: the
            end of stream ends the source, an error raises ``SourceError`` at once.
        transport: RTSP lower transport, ``"tcp"`` or ``"udp"``.
        decoder: ``"auto"`` (NVDEC on a CUDA device when it takes the stream, else FFmpeg, with
            one warning naming the source), ``"nvdec"`` (fail if it cannot) or ``"ffmpeg"``.
        connect_timeout: seconds allowed to open (connect, handshake, FFmpeg's stream probing).
        read_timeout: seconds allowed for each packet read.
        reconnect: live sources retry after a loss; ``False``: the first error raises, the
            stream's end ends the source.
        backoff: ``(initial, cap)`` seconds; retry k waits ``min(cap, initial * 2**(k-1))``; the
            count restarts after a connection that delivered frames. A connection that delivered
            frames for 10 s or more gets one quick retry (0.1 s) first (:mod:`._reconnect`).
        max_retries: consecutive failed retries before giving up (``failed``, raises); ``None`` = forever.
        stall_timeout: no frame for this long (consumer wait excluded): ``stalled``, reconnect.
        warmup: seconds allowed from opening to the first frame (a long GOP waits for a keyframe).
        max_pixels: streams declaring more pixels per frame are refused before decoding.
        options: extra FFmpeg options passed to ``av.open`` (strings).
        on_corrupt: ``"keep"`` concealed frames (counted), ``"skip"`` them, or ``"fail"``.
        low_latency: an MPEG-TS stream (``tcp://``, ``udp://``, ``srt://``) is read without FFmpeg's parser (one frame interval
            less latency, see :mod:`._demux`), and NVDEC hands each picture out as soon as it is
            decoded (PyNvVideoCodec's ``DisplayDecodeLatencyType.LOW``, each packet marked a
            whole picture) instead of holding a few for reordering; only for a stream without
            B-frames (one with them decodes as usual). ``None`` (default) = on for live sources.
    """

    poolable = True           # can decode in a decode process (Pipeline(decode_processes=K))
    _EVENTS = ("_closed",)

    def __init__(self, uri: str, *, live: bool | None = None, transport: Literal["tcp", "udp"] = "tcp",
                 decoder: Literal["auto", "nvdec", "ffmpeg"] = "auto", connect_timeout: float = 5.0,
                 read_timeout: float = 5.0, reconnect: bool = True, backoff: Sequence[float] = DEFAULT_BACKOFF,
                 max_retries: int | None = None, stall_timeout: float = 10.0, warmup: float = 20.0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, options: dict[str, str] | None = None,
                 on_corrupt: Literal["keep", "skip", "fail"] = "keep", low_latency: bool | None = None) -> None:
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"uri: expected a non-empty string, got {redact_uri(uri)!r}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: expected one of {TRANSPORTS}, got {transport!r}")
        for name, v in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout),
                        ("stall_timeout", stall_timeout), ("warmup", warmup)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: expected seconds > 0, got {v!r}")
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError(f"max_retries: expected None (forever) or an int >= 0, got {max_retries!r}")
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
            raise ValueError(f"max_pixels: expected an int >= 1, got {max_pixels!r}")
        self._url = uri
        self.uri = redact_uri(uri)
        scheme = scheme_of(uri)
        self.live = (scheme in LIVE_SCHEMES) if live is None else bool(live)
        self.transport = transport
        self.decoder = check_decoder(decoder, type(self).__name__)
        self.on_corrupt = check_on_corrupt(on_corrupt, type(self).__name__)
        if low_latency is not None and not isinstance(low_latency, bool):
            raise ValueError(f"low_latency: expected None, True or False, got {low_latency!r}")
        self.low_latency = self.live if low_latency is None else low_latency
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.reconnect = bool(reconnect)
        self.backoff = check_backoff(backoff)
        self.max_retries = max_retries
        self.stall_timeout, self.warmup = float(stall_timeout), float(warmup)
        self.max_pixels = max_pixels
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        self._ffmpeg_options = {**network_options(scheme, transport=transport, read_timeout=self.read_timeout),
                                **self.options}
        #: internal: where NVDEC pictures are written; a decode process sets it to hand out its ring slots
        self.frame_alloc: Any = None
        self.connected_at: float | None = None   # monotonic time of the last successful open
        self._declared = 0                        # frames the container declares (files), 0 = unknown
        self._truncated = False                   # a file that ends mid-packet
        self._closed = threading.Event()
        self._status_init()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, live={self.live}, state={self.state!r})"

    def close(self) -> None:
        """Stop: thread-safe; ``frames()`` returns within the read timeout (at once when waiting)."""
        self._closed.set()

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = 0) -> Iterator[SourceFrame]:
        """Yield frames until closed (live) or the end (not live); raise ``SourceError`` on giving up."""
        device = torch.device(device)
        choice = DecoderChoice(self.decoder, device, source_id=source_id, uri=self.uri,
                               max_pixels=self.max_pixels, alloc=self.frame_alloc, threads="SLICE",
                               low_latency=self.low_latency)
        holder: list[Any] = [None]
        try:
            yield from self._connections(choice, holder, source_id)
        except Exception as e:
            if self._closed.is_set():       # closed meanwhile (a stop, a removal): an end, not a failure
                log.debug("source %s (%s): after close: %s: %s", source_id, self.uri, type(e).__name__,
                          bare_message(e, source_id))
                return
            err = as_source_error(e, source_id=source_id, uri=self.uri)
            self._error(bare_message(err, source_id))
            self._enter("failed", source_id, self.last_error)
            if err is e:
                raise
            raise err from e
        finally:
            if holder[0] is not None:
                holder[0].close()
            if self.state != "failed":
                self._enter("ended", source_id, "" if self._closed.is_set() or self.live else self._end_note)

    _end_note = ""

    def _connections(self, choice: DecoderChoice, holder: list, sid: Any) -> Iterator[SourceFrame]:
        timeline = Timeline(live=self.live)
        backoff = Backoff(self.backoff)
        outage: Outage | None = None
        fps = 30.0
        while not self._closed.is_set():
            stall = StallClock(stall_timeout=self.stall_timeout, warmup=self.warmup)
            first_at: float | None = None          # this connection's first frame (monotonic)
            try:
                got = 0
                for frame in self._connection(choice, holder, sid, timeline, stall):
                    if got == 0:
                        first_at = time.monotonic()
                        backoff.reset()
                        fps = 1.0 / timeline.dur
                        if outage is not None:
                            dt, missed = outage.end()
                            self.missed_s += dt
                            self.reconnects += 1
                            self.last_error = ""                # recovered: no stale error
                            self._enter("running", sid, f"back after {dt:.1f} s, {missed} frames missed",
                                        level=logging.WARNING)
                            outage = None
                        else:
                            self._enter("running", sid, f"on {self.backend}")
                    got += 1
                    yield frame
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
                if not self.live:
                    self._report_end(sid, got)
                    return
                if not self.reconnect:
                    return
                raise _Lost("end of stream")
            except NvdecRefused as e:
                choice.refuse(e)
                holder[0].close()
                holder[0] = None
                continue                                     # FFmpeg now, at once
            except (_Lost, StreamUnavailable, DecodeError) as e:
                if self._closed.is_set():
                    return
                fatal = isinstance(e, DecodeError) and ("on_corrupt='fail'" in str(e) or "NVDEC cannot" in str(e))
                if not self.live or not self.reconnect or fatal:
                    if isinstance(e, SourceError):
                        raise
                    raise StreamUnavailable(str(e), source_id=sid, uri=self.uri) from None
                text = bare_message(e, sid)
                self._error(text)
                if outage is None:
                    outage = Outage(fps)
                stalled = isinstance(e, _Lost) and e.stalled
                if stalled:
                    self.stalls += 1
                delay = backoff.next(healthy_for=0.0 if first_at is None else time.monotonic() - first_at)
                if self.max_retries is not None and backoff.failures > self.max_retries:
                    raise StreamUnavailable(f"gave up after {backoff.failures - 1} retries; last error: {text}",
                                            source_id=sid, uri=self.uri) from None
                what = "lost" if backoff.failures == 1 else "still down"
                self._enter("stalled" if stalled else "reconnecting", sid, f"{text}; {what}, retrying in {delay:.2f} s",
                            level=logging.WARNING)
                if self._closed.wait(delay):
                    return
                if stalled:
                    self._enter("reconnecting", sid, f"attempt {backoff.failures}")

    def _connection(self, choice: DecoderChoice, holder: list, sid: Any, timeline: Timeline,
                    stall: StallClock) -> Iterator[SourceFrame]:
        demux = Demuxer(self._url, uri=self.uri, source_id=sid, max_pixels=self.max_pixels,
                        options=self._ffmpeg_options, timeout=(self.connect_timeout, min(self.read_timeout,
                                                                                         self.stall_timeout)),
                        file=not self.live and not scheme_of(self._url), low_delay=self.low_latency and scheme_of(self._url) in TS_SCHEMES)
        demux.open()
        self.connects += 1
        self.connected_at = time.monotonic()
        info = demux.info
        assert info is not None            # open() set it
        self._declared = info.expected_frames
        self._truncated = info.truncated
        stall.resume()
        gen: Generator[SourceFrame, None, int] = run_session(demux, choice, holder, self, sid=sid, stop=self._closed, on_corrupt=self.on_corrupt,
                          timeline=timeline, first_use=self.delivered == 0, stall=stall)
        try:
            yield from gen
        except Stalled as e:
            raise _Lost(f"stalled: {e}", stalled=True) from None
        except ReadTimeout as e:
            if self.live:                                    # connected, then quiet: a stall
                raise _Lost(f"stalled: no frame for {stall.silent_for():.1f} s ({bare_message(e, sid)})",
                            stalled=True) from None
            raise
        finally:
            gen.close()
            demux.close()

    def _report_end(self, sid: Any, got: int) -> None:
        """A non-live stream ended: say so when it had no frame, was short, or damaged."""
        if got == 0 and self.delivered == 0:
            why = "the stream has no decodable video frame"
            if self.decode_errors:
                why += f" ({self.decode_errors} decode errors; last: {self.last_error})"
            raise DecodeError(why, source_id=sid, uri=self.uri)
        expected = self._declared
        if expected and got < expected - max(1, int(expected * 0.02)):
            self._error(f"incomplete: decoded {got} of the {expected} frames the container declares")
        elif self._truncated:
            self._error(f"ended early after {got} frames: the file ends mid-packet (truncated)")
        self._end_note = self.last_error


class RtspSource(UriSource):
    """An RTSP camera (``rtsp://`` / ``rtsps://``); always live (``low_latency`` on unless set
    False). The options of :class:`UriSource`."""

    def __init__(self, url: str, *, transport: Literal["tcp", "udp"] = "tcp",
                 decoder: Literal["auto", "nvdec", "ffmpeg"] = "auto", connect_timeout: float = 5.0,
                 read_timeout: float = 5.0, reconnect: bool = True, backoff: Sequence[float] = DEFAULT_BACKOFF,
                 max_retries: int | None = None, stall_timeout: float = 10.0, warmup: float = 20.0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, options: dict[str, str] | None = None,
                 on_corrupt: Literal["keep", "skip", "fail"] = "keep", low_latency: bool | None = None) -> None:
        if not isinstance(url, str) or scheme_of(url) not in ("rtsp", "rtsps"):
            raise ValueError(f"url: expected an rtsp:// or rtsps:// URL, got {redact_uri(url)!r}")
        super().__init__(url, live=True, transport=transport, decoder=decoder, connect_timeout=connect_timeout,
                         read_timeout=read_timeout, reconnect=reconnect, backoff=backoff, max_retries=max_retries,
                         stall_timeout=stall_timeout, warmup=warmup, max_pixels=max_pixels, options=options,
                         on_corrupt=on_corrupt, low_latency=low_latency)
