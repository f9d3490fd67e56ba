"""JsonlSink faults: a full disk mid-write never leaves a partial last line (injected ENOSPC, and a
real small tmpfs where mounting one is allowed); the failed sink is isolated while the pipeline
and the other sinks go on, and the run still reports it; free space warning at start."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess

import pytest

from tests.unit._sinkdata import batches
from vidflow import Muxer, Pipeline
from vidflow.errors import SinkError
from vidflow.sinks.jsonl import JsonlSink
from vidflow.testing import FakeSource, MemorySink


def _lines_ok(path):
    text = path.read_bytes()
    assert text == b"" or text.endswith(b"\n"), text[-80:]
    return [json.loads(x) for x in text.splitlines()]


def test_injected_enospc_cuts_the_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    bs = list(batches(4))
    sink.write(bs[0])
    sink.write(bs[1])
    real = os.write

    def flaky(fd, data):
        if fd > 2 and os.path.realpath(f"/proc/self/fd/{fd}") == str(path):
            real(fd, bytes(data[: len(data) // 2]))   # half a batch lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    from tests.unit._brokers import wait_until
    wait_until(lambda: sink.stats()["written"] == 2, what="two batches written")
    monkeypatch.setattr(os, "write", flaky)
    sink.write(bs[2])
    wait_until(lambda: sink.failed, what="the sink to fail")
    monkeypatch.setattr(os, "write", real)
    sink.write(bs[3])                                  # isolated: dropped and counted
    st = sink.stats()
    assert st["state"] == "failed" and "No space left" in st["error"] and st["dropped"] == 1
    with pytest.raises(SinkError, match="jsonl.*No space left"):
        sink.close()
    recs = _lines_ok(path)
    assert len(recs) == 8 == sink.lines                # the two complete batches, nothing partial


def _tmpfs(tmp_path, size="24k"):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the injected-ENOSPC test covers it")
    return mnt


def test_full_tmpfs_isolated_others_keep_going(tmp_path, caplog):
    mnt = _tmpfs(tmp_path)
    try:
        full = JsonlSink(mnt / "frames.jsonl", name="jsonl-small-disk")
        other = MemorySink(keep_images=False)
        with caplog.at_level(logging.WARNING):
            pipe = Pipeline([FakeSource(400), FakeSource(400)], Muxer(batch_size=8, max_wait_ms=20), [], [full, other],
                            device="cpu")
            with pytest.raises(SinkError, match="jsonl-small-disk"):
                pipe.run()
        assert [f.frame_num for f in other.frames_of(0)] == list(range(400))   # the other sink got everything
        assert full.stats()["state"] == "failed"
        recs = _lines_ok(mnt / "frames.jsonl")
        assert 0 < len(recs) < 800 and len(recs) == full.lines
        assert any("free on the disk" in r.getMessage() for r in caplog.records)   # 24 kB < 1 GB threshold
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_unwritable_path_fails_with_its_name(tmp_path):
    (tmp_path / "f").write_text("x")
    sink = JsonlSink(tmp_path / "f" / "out.jsonl", on_error="stop")
    sink.write(next(batches(1)))
    from tests.unit._brokers import wait_until
    wait_until(lambda: sink.failed, what="failure")
    with pytest.raises(SinkError, match="cannot open"):
        sink.write(next(batches(1)))
    sink.close()


def test_other_formats(tmp_path):
    with JsonlSink(tmp_path / "v1.jsonl", format="vidflow.v1") as s:
        for b in batches(2):
            s.write(b)
        s.end_source(0)
    recs = _lines_ok(tmp_path / "v1.jsonl")
    assert recs[0]["schema"] == "vidflow.v1" and recs[-1]["end-of-stream"] and len(recs) == 9
