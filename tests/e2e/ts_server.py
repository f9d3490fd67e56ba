"""Live MPEG-TS over TCP on 127.0.0.1 from PyAV, paced at the stream's frame rate (no RTSP server needed).

``encode_clip(path, ...)`` writes a camera-like test clip (a moving pattern, H.264 or HEVC, fixed
GOP) once; ``TsServer(segments)`` then serves it to every client that connects to
``tcp://127.0.0.1:PORT``: the segments' packets, remuxed into one MPEG-TS stream (no re-encode:
cheap enough for 64 streams on one host), released when their timestamps are due, in a loop, with
timestamps that keep increasing. Segments of different sizes make a resolution change mid-stream
(each segment starts with its own SPS at a keyframe). ``stop()`` closes the listener and every
client (the camera went away); ``start()`` serves again on the same port; ``freeze()`` /
``thaw()`` stop and resume sending without closing (a camera that hangs). Used by the e2e tests
(``vidflow bench --live`` has its own cameras: ``vidflow.bench.live_serve``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import av
import numpy as np

__all__ = ["encode_clip", "encode_big_pictures", "TsServer"]


def encode_clip(path: str | Path, *, codec: str = "h264", width: int = 320, height: int = 240, fps: int = 30,
                seconds: float = 2.0, gop: int = 30, seed: int = 0) -> Path:
    """A clip for serving: MPEG-TS, ``codec`` "h264" (libx264) or "hevc" (libx265), yuv420p."""
    path = Path(path)
    enc = {"h264": "libx264", "hevc": "libx265"}[codec]
    out = av.open(str(path), "w", format="mpegts")
    st = out.add_stream(enc, rate=fps)
    st.width, st.height, st.pix_fmt = width, height, "yuv420p"
    if enc == "libx264":
        st.options = {"g": str(gop), "bf": "0", "preset": "ultrafast", "tune": "zerolatency"}
    else:
        st.options = {"preset": "ultrafast", "x265-params": f"keyint={gop}:min-keyint={gop}:bframes=0:log-level=error"}
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    bg = np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width]
    n = int(round(seconds * fps))
    for i in range(n):
        img = bg.copy()
        x = (i * 7) % max(1, width - width // 6)
        y = (i * 3) % max(1, height - height // 6)
        img[y:y + height // 6, x:x + width // 6] = (255, 255, 255)
        for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in st.encode():
        out.mux(p)
    out.close()
    return path


def encode_big_pictures(path: str | Path, *, n: int = 4, gop: int = 2) -> Path:
    """H.264 noise at qp 0 in MPEG-TS, 640x480: every picture ~450 kB, more than the 200 KiB of one
    PES that the MPEG-TS demuxer hands out as one packet without its parser (as 1080p live
    keyframes at 4 Mbit/s are)."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        s.options = {"g": str(gop), "bf": "0", "qp": "0", "preset": "ultrafast", "tune": "zerolatency"}
        for _ in range(n):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


class _Segment:
    def __init__(self, path: str) -> None:
        self.path = path
        with av.open(path) as c:
            s = c.streams.video[0]
            self.tb = s.time_base
            self.fps = float(s.average_rate or s.guessed_rate or 30)
            pk = [(p.pts, p.dts, bytes(p), p.is_keyframe) for p in c.demux(s) if p.size and p.pts is not None]
        t0 = min(p[0] for p in pk)
        # (seconds from the segment's start, dts seconds, bytes, keyframe)
        self.packets = [(float((p[0] - t0) * self.tb), float(((p[1] if p[1] is not None else p[0]) - t0) * self.tb),
                         p[2], p[3]) for p in pk]
        self.duration = max(p[0] for p in self.packets) + 1.0 / self.fps


class TsServer:
    """See the module text. ``loop=False``: each client gets the segments once, then the connection
    closes (a stream that ends). ``clients``: connections served so far."""

    def __init__(self, segments: list[str | Path], *, port: int | None = None, loop: bool = True,
                 pace: float = 1.0) -> None:
        self.segments = [_Segment(str(s)) for s in segments]
        self.loop, self.pace = loop, pace
        self.port = port or 0
        self.clients = 0
        self.sent = 0                        # packets muxed to clients so far (a benchmark's "offered")
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._go = threading.Event()
        self._go.set()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> TsServer:
        self._stop = threading.Event()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.1)
        self.port = s.getsockname()[1]
        self._sock = s
        t = threading.Thread(target=self._accept, args=(s, self._stop), daemon=True, name="ts-accept")
        t.start()
        self._threads.append(t)
        return self

    def _accept(self, s: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.clients += 1
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, stop), daemon=True, name="ts-client")
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        f = conn.makefile("wb", buffering=0)
        try:
            out = av.open(f, "w", format="mpegts", options={"mpegts_flags": "resend_headers"})
            with av.open(self.segments[0].path) as tmpl:
                ost = out.add_stream_from_template(tmpl.streams.video[0])
            tb = ost.time_base = self.segments[0].tb
            t0 = time.monotonic()
            offset = 0.0
            while not stop.is_set():
                for seg in self.segments:
                    for pts, dts, data, key in seg.packets:
                        due = t0 + (offset + pts) / self.pace if self.pace else 0
                        wait = due - time.monotonic()
                        if wait > 0 and stop.wait(wait):
                            return
                        if not self._go.is_set():           # frozen: connected, sending nothing
                            while not self._go.wait(0.05):
                                if stop.is_set():
                                    return
                            t0 = time.monotonic() - (offset + pts) / self.pace if self.pace else t0
                        pk = av.Packet(data)
                        pk.stream = ost
                        pk.time_base = tb
                        pk.pts = int(round((offset + pts + 1.0) / tb))      # +1 s: never below 0
                        pk.dts = int(round((offset + dts + 1.0) / tb))
                        pk.is_keyframe = key
                        out.mux(pk)
                        self.sent += 1
                    offset += seg.duration
                if not self.loop:
                    break
            out.close()
        except (OSError, ValueError, av.error.FFmpegError):
            pass                                # the client went away, or stop() closed it
        finally:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                conn.close()

    def freeze(self) -> None:
        """Keep every connection open but send nothing (a camera that hangs)."""
        self._go.clear()

    def thaw(self) -> None:
        self._go.set()

    def stop(self) -> None:
        """Close the listener and every client connection (the camera is gone)."""
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        self._conns = []
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def __enter__(self) -> TsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
