"""A GStreamer RTSP test server on 127.0.0.1, run as a subprocess of the tests.

Two halves in one file:

* ``main()`` is the server. It needs GStreamer's Python bindings from Debian
  (``python3-gst-1.0``, ``gir1.2-gst-rtsp-server-1.0``, plugins good/ugly; see
  ``scripts/install-ci-deps.sh``), which exist only for the *system* Python, so it is run as
  ``/usr/bin/python3 tests/e2e/rtsp_server.py --port N [--mount /s1 ...]``. Each mount serves a
  live 30 fps H.264 (or ``--codec h265``: HEVC) test pattern (``videotestsrc is-live=true ! x264enc ! rtph264pay``), optionally
  behind HTTP basic auth (``--user``/``--password``). It prints ``READY <port>`` once listening.

* ``RtspServer`` is the handle the tests (any Python, no ``gi`` import) use to start it, wait
  for it, SIGKILL / SIGSTOP / SIGCONT it and start it again on the same port.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("VIDFLOW_GST_PYTHON", "/usr/bin/python3")
HERE = Path(__file__).resolve()


def gst_available() -> str | None:
    """``None`` when the server can run here, else the reason it cannot."""
    if not Path(SYSTEM_PYTHON).exists() and shutil.which(SYSTEM_PYTHON) is None:
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') if Gst.ElementFactory.find(e) is None];"
        "print(' '.join(missing))"
    )
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"GStreamer probe failed: {e}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server bindings missing (run scripts/install-ci-deps.sh): {last}"
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()}"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """Runs ``main()`` in a subprocess; ``url(mount)`` gives the stream address.

    ``kill()`` sends SIGKILL, ``freeze()`` SIGSTOP, ``thaw()`` SIGCONT, ``start()`` (re)starts it on
    the same port. Use as a context manager so the process never outlives the test.
    """

    def __init__(self, *, port: int | None = None, mounts: tuple[str, ...] = ("/test",),
                 width: int = 320, height: int = 240, fps: int = 30, gop: int = 30, codec: str = "h264",
                 user: str | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.mounts = mounts
        self.args = ["--port", str(self.port), "--width", str(width), "--height", str(height),
                     "--fps", str(fps), "--gop", str(gop), "--codec", codec]
        for m in mounts:
            self.args += ["--mount", m]
        if user is not None:
            self.args += ["--user", user, "--password", password or ""]
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str | None = None, *, user: str | None = None, password: str | None = None) -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}{mount or self.mounts[0]}"

    def start(self, *, timeout: float = 20.0) -> RtspServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        if self.proc is not None:          # killed before: close its pipes, the new process gets new ones
            self._close_pipes()
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            if not line and self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"RTSP server did not start (last line {line!r}): {err[-2000:]}")

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("server not running")
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, then reap the process so the port is free again."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._close_pipes()
        self.proc = None

    def _close_pipes(self) -> None:
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", action="append", default=None)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=30)
    p.add_argument("--codec", choices=("h264", "h265"), default="h264")
    p.add_argument("--user")
    p.add_argument("--password", default="")
    a = p.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    if a.codec == "h265":
        enc = (f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} ! video/x-h265,profile=main ! "
               "rtph265pay name=pay0 pt=96 config-interval=1")
    else:
        enc = (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} threads=1 ! "
               "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1")
    launch = (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={a.width},"
              f"height={a.height},framerate={a.fps}/1 ! {enc} )")
    mounts = server.get_mount_points()
    for m in a.mount or ["/test"]:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        if a.user is not None:
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("user", "media.factory.access", True)
            perms.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(perms)
        mounts.add_factory(m, factory)
    if a.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        print(f"FAILED to listen on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    GLib.timeout_add(200, lambda: True)  # wake the loop so SIGTERM is handled promptly
    print(f"READY {a.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
