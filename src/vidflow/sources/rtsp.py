"""Live sources that fail: RTSP cameras and any FFmpeg-readable URI, decoded with PyAV (FFmpeg).

``RtspSource(url)`` / ``UriSource(uri)`` open the stream, decode its first video stream and yield
``SourceFrame``s (``rgb`` ``[3,H,W]`` uint8). A live stream that ends, stalls, times out or
cannot be reached is opened again after a capped exponential backoff (forever by default); a
non-live one (a plain file path) ends at its end and raises ``SourceError`` on any failure.

Nothing blocks forever: opening is bounded by ``connect_timeout`` and each packet read by
``read_timeout`` (PyAV's FFmpeg interrupt callback, plus FFmpeg's own socket ``timeout`` for RTSP
and ``rw_timeout`` for other network protocols). The stall detector raises when no frame was
decoded for ``stall_timeout`` seconds (``warmup`` before the first frame of a connection, for
long GOPs); time spent waiting for the consumer (back-pressure) is not counted.

State (``source.state``): ``"connecting"`` -> ``"running"`` (first frame) -> ``"backoff"`` (lost,
waiting to retry) -> ``"connecting"`` ... ``"failed"`` (gave up, raised) / ``"ended"`` (closed, or a
non-live stream's end). Counters: ``connects``, ``reconnects``, ``decode_errors``, ``stalls``,
``frames_decoded``, ``last_error``; ``stats()`` returns them as a dict. Every text that could
carry the URI (state, errors, logs, ``repr``) goes through ``errors.redact_uri``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import av
import torch

from ..batch import FrameInfo
from ..errors import DecodeError, StreamUnavailable, redact_uri
from .base import DEFAULT_MAX_PIXELS, SourceFrame, SourceState
from .decode import ffmpeg_rgb

__all__ = ["UriSource", "RtspSource", "StallClock", "backoff_delay"]

log = logging.getLogger("vidflow.sources.rtsp")

TRANSPORTS = ("tcp", "udp")
_LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt", "hls", "mms")


def backoff_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number ``failures`` (1, 2, ...): ``min(cap, initial * 2**(failures-1))``."""
    return min(cap, initial * (2.0 ** max(0, failures - 1)))


class StallClock:
    """Decides when a connection has stalled: no frame for ``stall_timeout`` s (``warmup`` s before
    the first frame). ``pause()``/``resume()`` bracket the time the consumer holds us (a yield), which
    does not count: a slow consumer is back-pressure, not a silent camera."""

    def __init__(self, *, stall_timeout: float, warmup: float, clock=time.monotonic) -> None:
        self.stall_timeout, self.warmup, self.clock = stall_timeout, warmup, clock
        self.got_frame = False
        self.last = clock()

    def frame(self) -> None:
        self.got_frame = True
        self.last = self.clock()

    def resume(self) -> None:
        """The consumer gave control back: restart the silence count now."""
        self.last = self.clock()

    def allowance(self) -> float:
        return self.stall_timeout if self.got_frame else self.warmup

    def silent_for(self) -> float:
        return self.clock() - self.last

    def stalled(self) -> bool:
        return self.silent_for() > self.allowance()


class _Lost(Exception):
    """A connection ended or failed; ``fatal`` errors are not worth retrying on a non-live source."""

    def __init__(self, text: str, *, decode: bool = False) -> None:
        super().__init__(text)
        self.decode = decode


def _scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def _to_source_frame(frame: av.VideoFrame, info: FrameInfo, device: torch.device) -> SourceFrame:
    """Decoded PyAV frame -> ``SourceFrame`` rgb ``[3,H,W]`` uint8 on ``device`` (the FFmpeg
    back-end's conversion, ``decode.ffmpeg_rgb``; the only place that touches pixels)."""
    data = ffmpeg_rgb(frame)                                       # [3,H,W] view of HWC
    if device.type != "cpu":
        data = data.to(device)
    return SourceFrame(info=info, data=data, format="rgb")


class UriSource:
    """Decode any FFmpeg-readable URI (``rtsp://``, ``http://``, ``srt://``, a file path ...).

    Args:
        uri: what FFmpeg opens. A password in it never leaves this object: ``self.uri`` is redacted.
        live: ``None`` (default) = live for network schemes (rtsp, http, udp, srt, ...), not for
            paths. Live: drop-oldest queueing, end of stream and errors reconnect. Not live: the
            end of stream ends the source, an error raises ``SourceError`` at once.
        transport: RTSP lower transport, ``"tcp"`` or ``"udp"``.
        connect_timeout: seconds allowed to open (connect, handshake, FFmpeg's stream probing).
        read_timeout: seconds allowed for each packet read.
        reconnect: live sources retry after a loss; ``False``: the first error raises, the
            stream's end ends the source.
        backoff: ``(initial, cap)`` seconds; retry k waits ``min(cap, initial * 2**(k-1))``; the
            count restarts after a connection that delivered frames.
        max_retries: consecutive failed retries before giving up (``state="failed"``, raises);
            ``None`` = forever.
        stall_timeout: no frame for this long (consumer wait excluded) counts as a loss.
        warmup: seconds allowed from opening to the first frame (a long GOP waits for a keyframe).
        max_pixels: streams declaring more pixels per frame are refused before decoding.
        options: extra FFmpeg options passed to ``av.open`` (strings).
    """

    poolable = True           # can decode in a decode process (Pipeline(decode_processes=K))

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_closed", None)
        d.pop("_lock", None)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def __init__(self, uri: str, *, live: bool | None = None, transport: str = "tcp",
                 connect_timeout: float = 5.0, read_timeout: float = 5.0, reconnect: bool = True,
                 backoff: Sequence[float] = (0.5, 30.0), max_retries: int | None = None,
                 stall_timeout: float = 10.0, warmup: float = 20.0, max_pixels: int = DEFAULT_MAX_PIXELS,
                 options: dict[str, str] | None = None) -> None:
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"uri: expected a non-empty string, got {redact_uri(uri)!r}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: expected one of {TRANSPORTS}, got {transport!r}")
        for name, v in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout),
                        ("stall_timeout", stall_timeout), ("warmup", warmup)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{name}: expected seconds > 0, got {v!r}")
        if (not isinstance(backoff, (list, tuple)) or len(backoff) != 2 or not all(isinstance(b, (int, float)) for b in backoff)
                or not 0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff: expected (initial, cap) seconds with 0 < initial <= cap, got {backoff!r}")
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError(f"max_retries: expected None (forever) or an int >= 0, got {max_retries!r}")
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels: expected an int >= 1, got {max_pixels!r}")
        self._url = uri
        self.uri = redact_uri(uri)
        scheme = _scheme(uri)
        self.live = (scheme in _LIVE_SCHEMES) if live is None else bool(live)
        self.transport = transport
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.reconnect = bool(reconnect)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.max_retries = max_retries
        self.stall_timeout, self.warmup = float(stall_timeout), float(warmup)
        self.max_pixels = max_pixels
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        self._ffmpeg_options = self._build_options(scheme)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.state: SourceState = "connecting"
        self.connects = 0           # successful opens
        self.reconnects = 0         # attempts made after a loss or a failed attempt
        self.decode_errors = 0      # packets the decoder rejected (corrupt data); decoding goes on
        self.stalls = 0             # connections dropped by the stall detector
        self.frames_decoded = 0
        self.last_error: str | None = None
        self.state_since = time.monotonic()
        self.connected_at: float | None = None   # monotonic time of the last successful open
        self._fps = 30.0
        self._declared = 0          # frames the container declares (files), 0 = unknown

    # -- public --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, live={self.live}, state={self.state!r})"

    def stats(self) -> dict[str, Any]:
        """Counters and state, safe to log (the URI is redacted)."""
        return {"uri": self.uri, "state": self.state, "live": self.live, "connects": self.connects,
                "reconnects": self.reconnects, "decode_errors": self.decode_errors, "stalls": self.stalls,
                "frames": self.frames_decoded, "last_error": self.last_error}

    def close(self) -> None:
        """Stop: thread-safe; ``frames()`` returns within ``read_timeout`` (at once when waiting)."""
        self._closed.set()

    def frames(self, *, device: torch.device, source_id: int | str) -> Iterator[SourceFrame]:
        """Yield frames until closed (live) or the end (not live); raise ``SourceError`` on giving up.

        ``frame_num`` counts from 0 across reconnects; ``pts`` (seconds) stays monotonic across
        them too (each new connection continues one frame after the last).
        """
        device = torch.device(device)
        try:
            yield from self._frames(device, source_id)
        finally:                  # closed, ended, abandoned by the consumer: all "ended" unless failed
            if self.state != "failed":
                self._set_state("ended")

    def _frames(self, device: torch.device, source_id: int | str) -> Iterator[SourceFrame]:
        failures = 0
        num = 0
        pts_base = 0.0        # added to the connection's own pts
        last_pts = -1.0
        while not self._closed.is_set():
            self._set_state("connecting")
            got = 0
            conn = self._connection(device, source_id, num, pts_base)
            try:
                try:
                    for frame in conn:
                        if got == 0:
                            failures = 0
                            self._set_state("running")
                        got += 1
                        num += 1
                        last_pts = frame.info.pts
                        yield frame
                except (av.error.FFmpegError, OSError) as e:   # anything FFmpeg raised we did not expect
                    raise _Lost(_describe(e)) from None
                finally:
                    conn.close()
                if self._closed.is_set():
                    break
                if not self.live:
                    if num == 0:
                        raise _Lost("the stream has no decodable video frame"
                                    + (f" ({self.decode_errors} decode errors; last: {self.last_error})"
                                       if self.decode_errors else ""), decode=True)
                    self._report_end(source_id, got)
                    return
                if not self.reconnect:
                    return                 # a live stream ended and we were told not to reconnect
                raise _Lost("end of stream")
            except _Lost as e:
                if self._closed.is_set():
                    break
                text = redact_uri(str(e))
                self.last_error = text
                if not self.live or not self.reconnect:
                    self._set_state("failed")
                    cls = DecodeError if e.decode else StreamUnavailable
                    raise cls(text, source_id=source_id, uri=self.uri) from None
            pts_base = last_pts + 1.0 / self._fps if num else 0.0
            failures += 1
            if self.max_retries is not None and failures > self.max_retries:
                self._set_state("failed")
                raise StreamUnavailable(f"gave up after {failures - 1} retries; last error: {self.last_error}",
                                        source_id=source_id, uri=self.uri) from None
            delay = backoff_delay(failures, *self.backoff)
            log.warning("source %s (%s): %s; retrying in %.2f s", source_id, self.uri, self.last_error, delay)
            self._set_state("backoff")
            if self._closed.wait(delay):
                break
            self.reconnects += 1

    # -- internals -----------------------------------------------------------------------------
    def _set_state(self, state: SourceState) -> None:
        if state != self.state:
            self.state = state
            self.state_since = time.monotonic()

    def _build_options(self, scheme: str) -> dict[str, str]:
        opts: dict[str, str] = {}
        read_us = str(int(self.read_timeout * 1e6))
        if scheme in ("rtsp", "rtsps"):
            opts["rtsp_transport"] = self.transport
            # FFmpeg >= 5 (libavformat 59): "timeout" is the socket I/O timeout; before, "stimeout".
            fmt_major = av.library_versions.get("libavformat", (59,))[0]
            opts["timeout" if fmt_major >= 59 else "stimeout"] = read_us
            # FFmpeg probes a live RTSP stream for ~1 s by default; the SDP already names the codec
            # and the decoder learns the rest from the first keyframe, so reconnect faster.
            opts["analyzeduration"] = "500000"
        elif scheme in _LIVE_SCHEMES:
            opts["rw_timeout"] = read_us
        opts.update(self.options)
        return opts

    def _open(self) -> av.container.InputContainer:
        read = min(self.read_timeout, self.stall_timeout)
        t0 = time.monotonic()
        try:
            return av.open(self._url, mode="r", options=dict(self._ffmpeg_options), timeout=(self.connect_timeout, read))
        except av.error.ExitError:
            raise _Lost(f"could not open: timed out after {self.connect_timeout:g} s (connect_timeout)") from None
        except (av.error.FFmpegError, OSError) as e:
            took = time.monotonic() - t0
            if self.live and took >= 0.95 * min(self.connect_timeout, self.read_timeout):
                # FFmpeg's socket timeout surfaces as a generic error (RTSP: "invalid data")
                raise _Lost(f"could not open: timed out, no answer in {took:.1f} s ({_describe(e)})") from None
            raise _Lost(f"could not open: {_describe(e)}",
                        decode=isinstance(e, av.error.InvalidDataError)) from None

    def _connection(self, device: torch.device, source_id: int | str, num: int,
                    pts_base: float) -> Iterator[SourceFrame]:
        """One connection: open, check, demux + decode until its end; raise ``_Lost`` on failure."""
        container = self._open()
        try:
            self.connects += 1
            self.connected_at = time.monotonic()
            if not container.streams.video:
                raise _Lost("no video stream", decode=True)
            stream = container.streams.video[0]
            cc = stream.codec_context
            w, h = cc.width, cc.height
            if w * h > self.max_pixels:
                raise _Lost(f"the stream declares {w}x{h} pixels per frame, more than max_pixels="
                            f"{self.max_pixels}; refused before decoding", decode=True)
            cc.options = {**(cc.options or {}), "max_pixels": str(self.max_pixels)}
            tb = float(stream.time_base) if stream.time_base else None
            fps = float(stream.average_rate or stream.guessed_rate or 30.0)
            self._fps = fps if fps > 0 else 30.0
            self._declared = int(stream.frames or 0)
            first_pts: float | None = None
            prev_pts: float | None = None
            clock = StallClock(stall_timeout=self.stall_timeout, warmup=self.warmup)
            read_limit = min(self.read_timeout, self.stall_timeout)
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except av.error.ExitError:
                    raise self._stall_or_timeout(clock, read_limit) from None
                except (av.error.FFmpegError, OSError) as e:
                    raise _Lost(f"read failed: {_describe(e)}") from None
                if clock.stalled():
                    raise self._stall_or_timeout(clock, read_limit)
                try:
                    decoded = cc.decode(packet)
                except av.error.FFmpegError as e:
                    self.decode_errors += 1
                    self.last_error = f"decode error: {_describe(e)}"
                    continue
                for frame in decoded:
                    if frame.width * frame.height > self.max_pixels:   # a mid-stream size change
                        raise _Lost(f"frame of {frame.width}x{frame.height} exceeds max_pixels", decode=True)
                    t = frame.time if frame.time is not None else (
                        frame.pts * tb if frame.pts is not None and tb else None)
                    if t is not None and first_pts is None:
                        first_pts = t if self.live else 0.0
                    pts = None if t is None else pts_base + t - first_pts
                    if pts is None or (prev_pts is not None and pts <= prev_pts):
                        # no timestamp, or one going back (live: RTP jumps): one frame on
                        pts = pts_base if prev_pts is None else prev_pts + 1.0 / self._fps
                    prev_pts = pts
                    info = FrameInfo(source_id, num, pts, time.time_ns(), frame.width, frame.height)
                    sf = _to_source_frame(frame, info, device)
                    clock.frame()
                    self.frames_decoded += 1
                    num += 1
                    yield sf
                    clock.resume()
                    if self._closed.is_set():
                        return
        finally:
            container.close()

    def _report_end(self, source_id: int | str, got: int) -> None:
        """A non-live stream ended: say so when it was short of what it declared or had errors."""
        if self._declared and got < self._declared:
            self.last_error = f"incomplete: decoded {got} of the {self._declared} frames the container declares"
        if self.decode_errors or (self._declared and got < self._declared):
            log.warning("source %s (%s): ended after %d frames, %d decode errors; %s", source_id, self.uri, got,
                        self.decode_errors, self.last_error)

    def _stall_or_timeout(self, clock: StallClock, read_limit: float) -> _Lost:
        if clock.stalled() or clock.silent_for() >= clock.allowance():
            self.stalls += 1
            what = "first frame" if not clock.got_frame else "frame"
            return _Lost(f"stalled: no {what} for {clock.silent_for():.1f} s")
        return _Lost(f"read timed out: no data for {read_limit:g} s")


def _describe(e: BaseException) -> str:
    """An FFmpeg/OS error as text without the file name PyAV appends (which may hold a password)."""
    msg = getattr(e, "strerror", None) or str(e)
    return redact_uri(f"{type(e).__name__}: {msg}")


class RtspSource(UriSource):
    """An RTSP camera (``rtsp://`` / ``rtsps://``); always live. Same options as :class:`UriSource`."""

    def __init__(self, url: str, **kw: Any) -> None:
        if not isinstance(url, str) or _scheme(url) not in ("rtsp", "rtsps"):
            raise ValueError(f"url: expected an rtsp:// or rtsps:// URL, got {redact_uri(url)!r}")
        if kw.pop("live", True) is not True:
            raise ValueError("RtspSource is always live; use UriSource(live=False) for a non-live URI")
        super().__init__(url, live=True, **kw)
