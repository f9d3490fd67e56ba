"""The cameras of ``vidflow bench --live``: N looping camera-like streams, MPEG-TS over TCP on
127.0.0.1, served from a separate process (``python -m vidflow.bench.live_serve``) so that its
CPU is measured apart from the pipeline's.

The clip (:func:`encode_clip`, made once and cached) is a camera-like scene (a block texture and
a moving box, H.264 or HEVC, no B-frames, a keyframe every ``gop`` frames) whose every frame
carries its own index as a barcode: ``BITS`` black/white cells across the top ``1/12`` of the
picture, the most significant bit first (:func:`barcode_cells` says where they lie). Each camera
plays the clip on ONE clock shared by all cameras: frame ``i`` of loop ``k`` is *shot* (sent) at
``epoch + k * D + i / fps`` (``D``: the clip's duration), whoever watches; its pts is that time
minus ``epoch`` plus 1 s (monotonic, across reconnects too, as a camera's clock). A client that
connects gets the stream from the next keyframe due, as from a real camera. So a frame's index
read back from its pixels gives the wall-clock time it left the camera: the bench's
glass-to-result latency (valid while that latency stays below ``D``).

The parent talks on stdin/stdout: ``READY {json}`` once listening (ports, epoch, fps, frames,
gop, duration); then each line it reads is a command: ``kill I`` (close camera I's listener and
every connection, with a reset: the camera is gone), ``start I`` (serve again on the same port),
``stat`` (answers ``STAT {json}``: packets sent per camera, connections so far, this process's
CPU seconds, how late it sent packets since the last ``stat``: p95 and max ms); end of input
stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BITS", "encode_clip", "barcode_cells", "strip_rows", "camera_picture", "Clip", "Camera", "main"]

BITS = 12                     # frame index mod 4096 in the barcode: clips up to ~136 s at 30 fps
_TB = 90000                   # MPEG-TS time base
_LATE_BINS = 1000             # lateness histogram: 1 ms bins


def strip_rows(height: int) -> int:
    """Rows of the barcode strip at the top of a picture ``height`` rows high."""
    return max(8, (height // 12) & ~1)


def barcode_cells(height: int) -> tuple[list[float], float]:
    """Where the ``BITS`` barcode cells' centres lie, as fractions of the picture (0..1): their
    ``x`` (the most significant bit first) and their common ``y``."""
    return [(j + 0.5) / BITS for j in range(BITS)], strip_rows(height) / 2 / height


def camera_picture(bg: np.ndarray, i: int) -> np.ndarray:
    """Clip frame ``i`` on the background ``bg`` (HxWx3 uint8): a moving box and the barcode."""
    h, w = bg.shape[:2]
    img = bg.copy()
    bw, bh = w // 6, h // 6
    x = (i * 7) % max(1, w - bw)
    y = h // 12 + (i * 3) % max(1, h - h // 12 - bh)
    img[y:y + bh, x:x + bw] = 255
    strip = strip_rows(h)
    for j in range(BITS):
        on = (i >> (BITS - 1 - j)) & 1
        img[:strip, j * w // BITS:(j + 1) * w // BITS] = 255 if on else 0
    return img


def encode_clip(path: str | Path, *, codec: str = "h264", width: int = 1920, height: int = 1080, fps: int = 30,
                seconds: float = 10.0, gop: int = 30, bitrate: int = 4_000_000) -> Path:
    """Write the barcoded camera clip (MPEG-TS, yuv420p, no B-frames; see the module text) once;
    an existing file is reused."""
    import av

    path = Path(path)
    if path.exists():
        return path
    frames = int(round(seconds * fps))
    if frames > 1 << BITS:
        raise ValueError(f"clip of {frames} frames: at most {1 << BITS} carry a distinct index")
    part = path.with_suffix(".part.ts")
    out = av.open(str(part), "w", format="mpegts")
    st: Any = out.add_stream({"h264": "libx264", "hevc": "libx265"}[codec], rate=fps)     # a VideoStream
    st.width, st.height, st.pix_fmt = width, height, "yuv420p"
    st.bit_rate = bitrate
    if codec == "h264":
        st.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0", "preset": "ultrafast",
                      "tune": "zerolatency"}
    else:
        st.options = {"preset": "ultrafast",
                      "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error"}
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    bg = np.kron(base, np.ones((16, 16, 1), np.uint8))[:height, :width]
    for i in range(frames):
        for p in st.encode(av.VideoFrame.from_ndarray(camera_picture(bg, i), format="rgb24")):
            out.mux(p)
    for p in st.encode():
        out.mux(p)
    out.close()
    os.replace(part, path)
    return path


class Clip:
    """The clip's packets: ``(seconds from the clip's start, bytes, keyframe)`` in decode order."""

    def __init__(self, path: str | Path, fps: int, gop: int) -> None:
        import av

        self.path, self.fps, self.gop = str(path), fps, gop
        with av.open(self.path) as c:
            s = c.streams.video[0]
            pk = [(int(p.pts), bytes(p), bool(p.is_keyframe)) for p in c.demux(s) if p.size and p.pts is not None]
            tb = float(s.time_base)
        pk.sort(key=lambda p: p[0])                  # no B-frames: decode order is display order
        t0 = pk[0][0]
        self.packets = [(round((p[0] - t0) * tb * fps) / fps, p[1], p[2]) for p in pk]
        self.frames = len(self.packets)
        self.duration = self.frames / fps
        self.keyframes = [i for i, p in enumerate(self.packets) if p[2]]
        if not self.keyframes or self.keyframes[0] != 0:
            raise ValueError(f"{self.path}: the clip must start with a keyframe")

    def next_keyframe(self, n: float) -> int:
        """The first absolute frame number >= ``n`` (loop ``k``, frame ``i``: ``k * frames + i``)
        that is a keyframe."""
        k, i = divmod(math.ceil(n), self.frames)
        j = next((f for f in self.keyframes if f >= i), None)
        return k * self.frames + j if j is not None else (k + 1) * self.frames


class Camera:
    """One stream of ``clip`` on the shared clock ``epoch`` (see the module text)."""

    def __init__(self, clip: Clip, epoch: float, port: int = 0) -> None:
        self.clip, self.epoch, self.port = clip, epoch, port
        self.sent = 0
        self.clients = 0
        self.late = [0] * (_LATE_BINS + 1)    # packets by ms sent after due (the last bin: more)
        self.late_max = 0.0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()

    def start(self) -> Camera:
        self._stop = threading.Event()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._sock = s
        threading.Thread(target=self._accept, args=(s, self._stop), daemon=True, name="cam-accept").start()
        return self

    def kill(self) -> None:
        """The camera is gone: listener closed, every connection reset."""
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self, s: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.clients += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, stop), daemon=True, name="cam-client").start()

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        import av

        clip, fps = self.clip, self.clip.fps
        f = conn.makefile("wb", buffering=0)
        try:
            # each picture leaves at once, as from a camera (no 32 kB AVIO buffering), with its
            # PES length stated so the demuxer needs not wait for the next one to end it
            out = av.open(f, "w", format="mpegts", options={"mpegts_flags": "resend_headers", "flush_packets": "1",
                                                            "omit_video_pes_length": "0"})
            with av.open(clip.path) as tmpl:
                ost = out.add_stream_from_template(tmpl.streams.video[0])
            from fractions import Fraction
            tb = ost.time_base = Fraction(1, _TB)
            # the next keyframe due on the shared clock, as a camera's stream joined now
            n = clip.next_keyframe((time.time() - self.epoch) * fps)     # absolute frame number
            mono = time.monotonic() - time.time()              # wall -> monotonic, fixed here
            while not stop.is_set():
                k, i = divmod(n, clip.frames)
                t_rel, data, key = clip.packets[i]
                shot = k * clip.duration + t_rel                  # seconds after epoch
                wait = self.epoch + shot + mono - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
                pk = av.Packet(data)
                pk.stream = ost
                pk.time_base = tb
                pk.pts = pk.dts = int(round((shot + 1.0) * _TB))
                pk.is_keyframe = key
                out.mux(pk)
                late = (time.monotonic() - (self.epoch + shot + mono)) * 1e3
                self.late[min(_LATE_BINS, max(0, int(late)))] += 1
                self.late_max = max(self.late_max, late)
                self.sent += 1
                n += 1
        except (OSError, ValueError, av.error.FFmpegError):
            pass                         # the client went away, or kill() reset it
        finally:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                conn.close()


def _lateness(cams: list[Camera]) -> tuple[int | None, float]:
    """p95 (ms, a bin's upper edge) and max of how late the cameras sent since the last call
    (then reset): above a few ms, the camera process cannot keep its schedule."""
    hist = [0] * (_LATE_BINS + 1)
    worst = 0.0
    for c in cams:
        h, c.late = c.late, [0] * (_LATE_BINS + 1)
        hist = [a + b for a, b in zip(hist, h)]
        worst, c.late_max = max(worst, c.late_max), 0.0
    total, acc = sum(hist), 0
    for ms, k in enumerate(hist):
        acc += k
        if total and acc >= 0.95 * total:
            return ms + 1, round(worst, 1)
    return None, round(worst, 1)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vidflow.bench.live_serve", description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--codec", choices=("h264", "hevc"), default="h264")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidflow-live"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    gop = a.fps
    t = time.monotonic()
    path = encode_clip(Path(a.workdir) / f"cam_{a.codec}_{a.width}x{a.height}_{a.fps}_{a.clip_seconds:g}s_"
                       f"{a.bitrate}_v2.ts", codec=a.codec, width=a.width, height=a.height, fps=a.fps,
                       seconds=a.clip_seconds, gop=gop, bitrate=a.bitrate)
    clip = Clip(path, a.fps, gop)
    epoch = float(int(time.time()))
    cams = [Camera(clip, epoch).start() for _ in range(a.streams)]
    print("READY " + json.dumps({"ports": [c.port for c in cams], "epoch": epoch, "fps": a.fps, "frames": clip.frames,
                                 "gop": gop, "duration": clip.duration, "clip": str(path),
                                 "clip_bytes": os.path.getsize(path), "prepare_s": round(time.monotonic() - t, 1)}),
          flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "kill":
            cams[int(arg)].kill()
        elif cmd == "start":
            cams[int(arg)].start()
        elif cmd == "stat":
            p95, worst = _lateness(cams)
            print("STAT " + json.dumps({"sent": [c.sent for c in cams], "clients": [c.clients for c in cams],
                                        "cpu_s": _cpu_s(), "t": time.monotonic(), "late_ms_p95": p95,
                                        "late_ms_max": worst}), flush=True)
    for c in cams:
        c.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
