"""Stopping without loss, in process: the signal watcher (first signal drains, second stops now,
handlers restored), a sink's queue dropped on ``abort()``, and a torn MP4 fragment cut off after
a failed write so the file still decodes (injected ENOSPC, and every cut point of a real file)."""

from __future__ import annotations

import errno
import os
import signal
import threading

import av
import numpy as np
import pytest

from tests.e2e._faultsinks import SlowSink
from tests.unit._sinkdata import batches
from vidflow._signals import GracefulStop
from vidflow.errors import SinkError
from vidflow.sinks._writers import PyAvWriter, complete_mp4_end
from vidflow.testing import wait_until


def test_first_signal_drains_second_stops_now():
    calls: list[bool] = []
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop(calls.append, timeout=120, grace=120) as gs:
        assert gs.installed and gs.exit_code is None
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: calls == [True], what="the graceful stop")
        os.kill(os.getpid(), signal.SIGINT)           # a second signal, of either kind
        wait_until(lambda: calls == [True, False], what="the stop now")
    assert gs.signum == signal.SIGTERM and gs.exit_code == 143 and gs.count == 2
    assert signal.getsignal(signal.SIGTERM) is before   # handlers restored


def test_stop_timeout_without_a_second_signal():
    calls: list[bool] = []
    with GracefulStop(calls.append, timeout=0.05, grace=120) as gs:
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(lambda: calls == [True, False], what="the stop timeout to pass")
    assert gs.exit_code == 130


def test_no_signal_no_stop():
    calls: list[bool] = []
    with GracefulStop(calls.append, timeout=0.01, grace=0.01) as gs:
        pass
    assert calls == [] and gs.signum is None and gs.exit_code is None


def test_outside_the_main_thread_no_handlers():
    out = {}

    def body():
        with GracefulStop(lambda d: None) as gs:
            out["installed"] = gs.installed

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out == {"installed": False}


def test_abort_drops_queued_writes_and_close_still_finishes():
    sink = SlowSink(delay=0.2, queue_size=32)
    bs = list(batches(12))
    for b in bs:
        sink.write(b)
    dropped = sink.abort()
    assert dropped >= 1
    sink.close()
    st = sink.stats()
    assert st["state"] == "closed" and st["dropped"] == dropped and st["written"] + dropped == len(bs)


# -- MP4: a failed write never leaves a torn fragment ---------------------------------------
def _frames(n, w=96, h=64):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def _decode(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp4") / "full.mp4"
    wr = PyAvWriter(path, 96, 64, 30.0, "h264", None, fragmented=True, keyframe_s=0.2, timing="rate")
    for f in _frames(60):
        wr.write(f)
    wr.close()
    return path


def test_every_cut_point_salvages_to_a_decodable_prefix(fragmented, tmp_path):
    data = fragmented.read_bytes()
    assert complete_mp4_end(fragmented) == len(data) and _decode(fragmented) == 60
    last, seen = 0, set()
    for cut in range(0, len(data), max(1, len(data) // 97)):
        p = tmp_path / "cut.mp4"
        p.write_bytes(data[:cut])
        end = complete_mp4_end(p)
        assert end <= cut
        if end == 0:
            continue
        os.truncate(p, end)
        n = _decode(p)                     # no "Invalid data": the torn fragment is gone
        assert last <= n <= 60
        last = n
        seen.add(n)
    assert len(seen) >= 5                  # fragments of 6 frames: many distinct prefixes


def test_injected_enospc_mid_fragment_leaves_a_decodable_file(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    wr = PyAvWriter(path, 96, 64, 30.0, "h264", None, fragmented=True, keyframe_s=0.2, timing="rate")
    frames = _frames(40)
    for f in frames[:30]:
        wr.write(f)
    wait_until(lambda: os.path.getsize(path) > 1000, what="fragments on disk")
    real = PyAvWriter._write

    def full_disk(self, rgb, pts):
        with open(self.path, "ab") as f:  # the disk takes half a fragment, then is full
            f.write(b"\x00\x00\x40\x00moof" + b"\x00" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PyAvWriter, "_write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        wr.write(frames[30])
    monkeypatch.setattr(PyAvWriter, "_write", real)
    wr.close()                             # after a failure: nothing more to write, no error
    n = _decode(path)
    assert 0 < n <= 30


def _tmpfs(tmp_path, size):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the injected ENOSPC covers it")
    return mnt


def test_video_sink_on_a_full_tmpfs(tmp_path):
    from tests.unit.test_video_sink import scene_batches
    from vidflow.sinks.video import VideoSink

    mnt = _tmpfs(tmp_path, "48k")
    try:
        sink = VideoSink(mnt / "v", tiled=False, encoder="pyav", keyframe_s=0.2)
        for b in scene_batches(60, 1):
            sink.write(b)
        with pytest.raises(SinkError, match="No space left"):
            sink.close()
        assert sink.stats()["state"] == "failed"
        n = _decode(mnt / "v" / "0.mp4")                   # cut back to its last complete fragment
        assert 0 < n < 60
    finally:
        import subprocess
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("tail", [b'{"source_id": 0, "fra', b"", b"x" * 70_000])
def test_append_after_a_kill_cuts_the_partial_line(tmp_path, caplog, tail):
    import json

    from vidflow.sinks.jsonl import JsonlSink

    path = tmp_path / "f.jsonl"
    good = b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(good + tail)                  # what a write cut short by SIGKILL leaves
    sink = JsonlSink(path, append=True)
    for b in batches(2):
        sink.write(b)
    sink.close()
    data = path.read_bytes()
    assert data.startswith(good) and data.endswith(b"\n")
    lines = [json.loads(x) for x in data.splitlines()]
    assert len(lines) == 2 + sink.lines == 2 + 8
    assert any("removed a partial last line" in r.getMessage() for r in caplog.records) == bool(tail)


def test_stop_pipeline_uses_drain_and_timeout_where_the_pipeline_takes_them():
    from vidflow._runner import stop_pipeline

    class Sink:
        aborted = 0

        def abort(self):
            self.aborted += 1

    class New:
        def __init__(self):
            self.calls, self.sinks = [], [Sink(), object()]

        def stop(self, drain: bool = True, timeout: float | None = None):
            self.calls.append((drain, timeout))

    class Old(New):
        def stop(self):
            self.calls.append(())

    for cls, first, second in ((New, (True, 3.0), (False, 3.0)), (Old, (), ())):
        p = cls()
        stop_pipeline(p, True, 3.0)
        assert p.calls == [first] and p.sinks[0].aborted == 0      # a drain leaves the sinks' queues
        stop_pipeline(p, False, 3.0)
        assert p.calls == [first, second] and p.sinks[0].aborted == 1
