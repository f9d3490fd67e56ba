"""Real brokers for the sink tests: mosquitto and redis-server started on free ports in a temp
folder, killable and restartable on the same port. Missing binaries skip the test, except under
CI=true (scripts/install-ci-deps.sh installs them there), where they fail it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_until(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        msg = f"{binary} not installed (scripts/install-ci-deps.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """A broker process on a fixed port: ``start()``, ``kill()`` (SIGKILL), ``start()`` again."""

    def __init__(self, argv: list[str], port: int, cwd: Path) -> None:
        self.argv, self.port, self.cwd = argv, port, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _port_open(self.port) or self.proc.poll() is not None, 15, f"{self.argv[0]} to listen")
        assert self.proc.poll() is None, f"{self.argv} exited with {self.proc.returncode}"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        wait_until(lambda: not _port_open(self.port), 10, "the port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def mosquitto(tmp: Path, *, password: tuple[str, str] | None = None) -> Server:
    binary = need("mosquitto")
    port = free_port()
    conf = [f"listener {port} 127.0.0.1", "persistence false"]
    if os.geteuid() == 0:
        conf.append("user root")     # else mosquitto drops to 'mosquitto' and can't read the temp folder
    if password:
        pw = tmp / "passwd"
        pw.write_text(f"{password[0]}:{password[1]}\n")
        subprocess.run([need("mosquitto_passwd"), "-U", str(pw)], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        conf += ["allow_anonymous false", f"password_file {pw}"]
    else:
        conf += ["allow_anonymous true"]
    (tmp / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    return Server([binary, "-c", str(tmp / "mosquitto.conf")], port, tmp)


def redis_server(tmp: Path, *, durable: bool = False) -> Server:
    """``durable``: append-only file fsynced on every write, so what redis acknowledged survives
    its SIGKILL."""
    binary = need("redis-server")
    port = free_port()
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    return Server([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", str(tmp)],
                  port, tmp)


def need_module(name: str):
    """``pytest.importorskip`` that fails instead under CI=true (the test extra installs it)."""
    if os.environ.get("CI", "").lower() == "true":
        import importlib

        try:
            return importlib.import_module(name)
        except ImportError as e:
            pytest.fail(f"{name} not installed: pip install -e '.[test]' ({e})")
    return pytest.importorskip(name)
