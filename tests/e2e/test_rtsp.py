"""RTSP sources against a real GStreamer RTSP server on 127.0.0.1 (``rtsp_server.py``).

The server runs under the system Python (Debian's GStreamer bindings; ``scripts/install-ci-deps.sh``).
Without it these tests skip, unless ``VIDFLOW_REQUIRE_GST=1`` turns the skip into a failure (CI).
Connection-refused tests need no server and always run.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rtsp_server import RtspServer, free_port  # noqa: E402

from vidflow.errors import StreamUnavailable  # noqa: E402
from vidflow.mux import Muxer  # noqa: E402
from vidflow.pipeline import Pipeline  # noqa: E402
from vidflow.sources.uri import RtspSource  # noqa: E402
from vidflow.testing import FakeSource, MemorySink  # noqa: E402

CPU = torch.device("cpu")
BACKOFF = (0.25, 1.0)


def _take(src: RtspSource, n: int, *, timeout: float = 20.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    for f in src.frames(device=CPU, source_id=0):
        out.append(f)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_reads_a_live_stream(gst, transport):
    with RtspServer(width=320, height=240) as srv:
        src = RtspSource(srv.url(), transport=transport, backoff=BACKOFF)
        gen = src.frames(device=CPU, source_id=0)
        frames = [next(gen) for _ in range(20)]
        assert src.state == "running" and src.connects == 1 and src.reconnects == 0
        gen.close()                                      # the consumer leaves: the source has ended
        assert src.state == "ended"
        f = frames[-1]
        assert f.format == "rgb" and tuple(f.data.shape) == (3, 240, 320)
        assert [x.info.frame_num for x in frames] == list(range(20))
        pts = [x.info.pts for x in frames]
        assert all(b > a for a, b in zip(pts, pts[1:]))
        assert abs((pts[-1] - pts[0]) / 19 - 1 / 30) < 0.01   # 30 fps stream timestamps


class _Recorder:
    """Pulls a two-camera pipeline in a thread, noting each frame's source, number and receipt time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline
        self.rows: list[tuple[int, int, float, float]] = []   # (source_id, frame_num, pts, receipt s)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for batch in self.p:
                for f in batch.frames:
                    self.rows.append((f.source_id, f.frame_num, f.pts, f.ntp_ns / 1e9))
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            self.error = e

    def frames_of(self, sid: int) -> list[tuple[int, int, float, float]]:
        return [r for r in list(self.rows) if r[0] == sid]

    def wait_frames(self, sid: int, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames_of(sid)) < n:
            assert time.monotonic() < deadline, f"source {sid}: fewer than {n} frames in {timeout} s"
            assert self.error is None, self.error
            time.sleep(0.02)

    def fps_between(self, sid: int, t0: float, t1: float) -> float:
        n = sum(1 for r in self.frames_of(sid) if t0 <= r[3] < t1)
        return n / (t1 - t0)


def _wait_connected_after(src: RtspSource, t: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if src.connected_at is not None and src.connected_at > t and src.state == "running":
            return src.connected_at - t
        time.sleep(0.01)
    raise AssertionError(f"no reconnection within {timeout} s: {src.stats()}")


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
def test_reconnects_after_server_fault_while_other_stream_keeps_its_rate(gst, fault):
    with RtspServer() as a, RtspServer() as b:
        src_a = RtspSource(a.url(), backoff=BACKOFF, read_timeout=1.0, connect_timeout=2.0, stall_timeout=2.0)
        src_b = RtspSource(b.url(), backoff=BACKOFF)
        p = Pipeline([src_a, src_b], muxer=Muxer(batch_size=2, max_wait_ms=10), device="cpu", queue_size=30)
        rec = _Recorder(p)
        rec.t.start()
        try:
            rec.wait_frames(0, 30)
            rec.wait_frames(1, 30)
            n_before = len(rec.frames_of(0))
            t_fault = time.time()
            if fault == "sigkill":
                a.kill()
                time.sleep(2.0)                 # down for a while: refused connections, backoff grows
                a.start()
            else:
                a.freeze()
                time.sleep(3.0)                 # silent: read timeout, then connects that hang
                a.thaw()
            back = time.monotonic()
            delay = _wait_connected_after(src_a, back, timeout=10.0)
            rec.wait_frames(0, n_before + 30)
            t_end = time.time()
        finally:
            p.stop()
            rec.t.join(timeout=15)
        assert rec.error is None, rec.error
        stats = src_a.stats()
        assert delay <= 2 * BACKOFF[1], (delay, stats)          # reconnected within twice the backoff cap
        assert stats["reconnects"] >= 1 and stats["connects"] >= 2, stats
        assert stats["last_error"] == "", stats                          # recovered: no stale error
        states = [st for _, st, _ in src_a.transitions]
        lost = max(i for i, st in enumerate(states) if st in ("reconnecting", "stalled"))
        assert "running" in states[lost:], states                        # lost, then back
        rows_a = rec.frames_of(0)
        nums = [r[1] for r in rows_a]
        assert all(n2 > n1 for n1, n2 in zip(nums, nums[1:]))                # numbering continues
        assert nums[-1] + 1 - len(nums) <= p.summary.sources[0].dropped     # gaps are counted drops
        assert all(r2[2] > r1[2] for r1, r2 in zip(rows_a, rows_a[1:]))      # pts stays monotonic
        fps_b = rec.fps_between(1, t_fault, t_end)
        print(f"\n{fault}: reconnected {delay:.2f} s after the server was back; stream B {fps_b:.1f} fps "
              f"over {t_end - t_fault:.1f} s; A {stats}")
        assert abs(fps_b - 30.0) <= 3.0, f"stream B ran at {fps_b:.1f} fps while A was down"
        assert p.summary.sources[1].errors == 0


def test_wrong_path_is_retried_with_backoff_and_reported(gst, caplog):
    with RtspServer(mounts=("/cam",)) as srv:
        src = RtspSource(srv.url("/nope"), backoff=(0.1, 0.4), max_retries=3)
        with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
            with pytest.raises(StreamUnavailable) as ei:
                _take(src, 1)
    assert "404" in str(ei.value) and "gave up after 3 retries" in str(ei.value)
    assert src.state == "failed" and src.reconnects == 0 and src.connects == 0     # reconnects: successful ones
    delays = [float(x) for x in re.findall(r"retrying in ([\d.]+) s", caplog.text)]
    assert delays == [0.1, 0.2, 0.4]


def test_connection_refused_is_retried_with_backoff_and_reported(caplog):
    port = free_port()   # nothing listens there
    src = RtspSource(f"rtsp://127.0.0.1:{port}/cam", backoff=(0.05, 0.2), max_retries=4)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
        with pytest.raises(StreamUnavailable) as ei:
            _take(src, 1)
    elapsed = time.monotonic() - t0
    assert "Connection refused" in str(ei.value) and "source 0" in str(ei.value)
    assert src.reconnects == 0 and src.state == "failed"
    assert sum(1 for _, st, _ in src.transitions if st == "reconnecting") == 4
    delays = [float(x) for x in re.findall(r"retrying in ([\d.]+) s", caplog.text)]
    assert delays == [0.05, 0.1, 0.2, 0.2]
    assert elapsed >= sum(delays)


def test_refused_camera_fails_alone_in_a_pipeline():
    port = free_port()
    sink = MemorySink(keep_images=False)
    cam = RtspSource(f"rtsp://127.0.0.1:{port}/cam", backoff=(0.05, 0.1), max_retries=2)
    p = Pipeline([FakeSource(40), cam], muxer=Muxer(batch_size=4, max_wait_ms=5), sinks=[sink], device="cpu")
    with pytest.raises(StreamUnavailable) as ei:
        p.run()
    assert ei.value.source_id == 1
    assert [f.frame_num for f in sink.frames_of(0)] == list(range(40))
    assert p.summary.sources[1].state == "failed" and p.summary.sources[0].state == "ended"


def test_slow_consumer_is_back_pressure_not_a_stall(gst):
    """Holding the generator longer than stall_timeout is not a silent camera."""
    with RtspServer() as srv:
        src = RtspSource(srv.url(), stall_timeout=0.5, read_timeout=0.5, backoff=BACKOFF)
        got = 0
        for _ in src.frames(device=CPU, source_id=0):
            got += 1
            if got in (5, 10):
                time.sleep(1.5)        # three times the stall timeout, consumer side
            if got == 30:
                break
        assert src.stalls == 0 and src.connects == 1, src.stats()


def test_slow_pipeline_drops_are_counted_not_reported_as_stall(gst):
    def slow(batch):
        time.sleep(0.15)
        return batch
    slow.name = "slow"

    with RtspServer() as srv:
        src = RtspSource(srv.url(), stall_timeout=1.0, backoff=BACKOFF)
        p = Pipeline([src], muxer=Muxer(batch_size=1, max_wait_ms=5), stages=[slow], device="cpu", queue_size=2)
        n = 0
        for _ in p:
            n += 1
            if n == 20:
                state = p.snapshot().sources[0].state
                p.stop()
        assert p.summary.sources[0].dropped > 0
        assert src.stalls == 0 and src.connects == 1 and state == "running", src.stats()


def test_close_stops_a_source_waiting_in_backoff():
    src = RtspSource(f"rtsp://127.0.0.1:{free_port()}/cam", backoff=(30.0, 30.0))
    done = threading.Event()

    def consume():
        for _ in src.frames(device=CPU, source_id=0):
            pass
        done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while src.state != "reconnecting":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    src.close()
    assert done.wait(2.0), "frames() did not return after close() during a 30 s backoff"
    assert src.state == "ended"


def test_wrong_password_is_reported_without_it(gst, caplog):
    secret = "n0t-Th1s-0ne"
    with RtspServer(user="admin", password="right-one") as srv:
        ok = RtspSource(srv.url(user="admin", password="right-one"), backoff=BACKOFF)
        assert len(_take(ok, 5)) == 5                    # the right password works
        bad = RtspSource(srv.url(user="admin", password=secret), backoff=(0.05, 0.05), max_retries=1)
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(StreamUnavailable) as ei:
                _take(bad, 1)
    assert "401" in str(ei.value)
    text = str(ei.value) + repr(ei.value) + caplog.text + str(bad.stats()) + repr(bad)
    assert secret not in text and "admin:***@" in text


def test_rtsp_sources_in_a_decode_process(gst):
    """UriSource moves to a decode process: a live camera's frames arrive (RGB through shared
    memory), its state comes back from the worker, and a refused camera fails alone, by name."""
    port = free_port()
    with RtspServer(width=320, height=240) as srv:
        cam = RtspSource(srv.url(), backoff=BACKOFF)
        bad = RtspSource(f"rtsp://user:secret@127.0.0.1:{port}/cam", backoff=(0.05, 0.1), max_retries=2)
        p = Pipeline([cam, bad], muxer=Muxer(batch_size=2, max_wait_ms=20), sinks=[MemorySink()],
                     device="cpu", decode_processes=1, strict=False)
        rows = []
        state = None
        for batch in p:
            rows += [(f.source_id, f.frame_num) for f in batch.frames]
            assert tuple(batch.images.shape[1:]) == (3, 240, 320)
            if state is None and sum(1 for r in rows if r[0] == 0) >= 20 and p.summary.sources[1].state == "failed":
                state = p.snapshot().sources[0].state
                p.stop()
        got = [n for s, n in rows if s == 0]
        assert len(got) >= 20 and all(b > a for a, b in zip(got, got[1:]))   # live: drops allowed, no reorder
        assert state == "running" and cam.connects == 1
        err = p.summary.sources[1].error
        assert isinstance(err, StreamUnavailable) and err.source_id == 1 and "secret" not in str(err)
