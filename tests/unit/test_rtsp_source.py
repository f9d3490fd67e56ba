"""``UriSource`` / ``RtspSource`` logic that needs no RTSP server: backoff, the stall clock,
timeouts against a silent peer, reconnect on a live stream's end, argument checks."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time

import pytest

from vidflow.errors import StreamUnavailable
from vidflow.mux import Muxer
from vidflow.pipeline import Pipeline
from vidflow.scenes import make_clip
from vidflow.sources._reconnect import StallClock, backoff_delay
from vidflow.sources.uri import RtspSource, UriSource
from vidflow.testing import FakeSource, wait_until


def test_backoff_is_capped_exponential():
    assert [backoff_delay(k, 0.5, 30.0) for k in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_stall_clock_warmup_then_stall_timeout_and_consumer_time_excluded():
    clk = FakeClock()
    sc = StallClock(stall_timeout=2.0, warmup=10.0, clock=clk)
    clk.t += 9.0
    assert not sc.stalled()                 # before the first frame the warm-up allowance holds
    clk.t += 1.5
    assert sc.stalled()
    sc.frame()
    clk.t += 1.9
    assert not sc.stalled()
    clk.t += 0.2
    assert sc.stalled()                     # after a frame: stall_timeout
    sc.frame()
    clk.t += 60.0                           # the consumer held the frame for a minute (back-pressure)
    sc.resume()
    assert not sc.stalled() and sc.silent_for() == 0.0


@pytest.mark.parametrize(("kw", "match"), [
    ({"transport": "sctp"}, "transport"),
    ({"backoff": (2.0, 1.0)}, "backoff"),
    ({"backoff": (0.5,)}, "backoff"),
    ({"read_timeout": 0}, "read_timeout"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_pixels": 0}, "max_pixels"),
])
def test_bad_arguments_list_what_is_allowed(kw, match):
    with pytest.raises(ValueError, match=match):
        RtspSource("rtsp://127.0.0.1/x", **kw)


def test_live_is_guessed_from_the_scheme_and_overridable(tmp_path):
    assert UriSource("rtsp://h/x").live and UriSource("http://h/x.ts").live
    assert not UriSource(str(tmp_path / "a.mp4")).live
    assert UriSource(str(tmp_path / "a.mp4"), live=True).live
    with pytest.raises(ValueError, match="rtsp"):
        RtspSource("http://h/x")


def test_a_live_streams_end_reconnects_and_numbering_continues(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=96, height=64, frames=12, fps=30)
    src = UriSource(str(clip.path), live=True, backoff=(0.01, 0.02))
    got = []
    for f in src.frames(device="cpu", source_id=0):
        got.append(f.info)
        if len(got) == 30:
            break
    assert src.connects == 3 and src.reconnects == 2 and src.last_error == ""      # recovered: no stale error
    assert [why.split(";")[0] for _, state, why in src.transitions if state == "reconnecting"] == ["end of stream"] * 2
    assert ["lost" in why for _, state, why in src.transitions if state == "reconnecting"] == [True, True]
    assert [i.frame_num for i in got] == list(range(30))
    assert all(b.pts > a.pts for a, b in zip(got, got[1:]))
    assert abs(got[12].pts - got[11].pts - 1 / 30) < 1e-6      # continues one frame on


def test_a_file_uri_ends_at_its_end(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=96, height=64, frames=12, fps=30)
    src = UriSource(str(clip.path))
    infos = [f.info for f in src.frames(device="cpu", source_id=0)]
    assert len(infos) == 12 and src.state == "ended" and src.connects == 1
    assert infos[0].pts == 0.0 and abs(infos[-1].pts - 11 / 30) < 1e-6


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung camera)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_silent_peer_times_out_instead_of_blocking(silent_server, scheme):
    src = UriSource(f"{scheme}://127.0.0.1:{silent_server}/cam", connect_timeout=0.5, read_timeout=0.5,
                    max_retries=1, backoff=(0.05, 0.05))
    t0 = time.monotonic()
    with pytest.raises(StreamUnavailable) as ei:
        list(src.frames(device="cpu", source_id=0))
    took = time.monotonic() - t0
    assert took < 30.0, f"blocked {took:.1f} s"       # a hang guard, not a speed test
    assert "gave up after 1 retries" in str(ei.value) and "timed out" in str(ei.value)
    assert src.connects == 0
    assert src.state == "failed"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_add_remove_cycles_release_threads_files_and_memory(tmp_path):
    """100 times: add a live URI source to a running pipeline, take a few of its frames, remove it."""
    clip = make_clip(tmp_path / "c.mp4", width=96, height=64, frames=10, fps=30)
    p = Pipeline([FakeSource(None, live=True, delay=0.005)], muxer=Muxer(batch_size=4, max_wait_ms=5),
                 device="cpu")
    seen: dict = {}
    marks = {}
    cycle, current = 0, None
    for batch in p:
        for f in batch.frames:
            seen[f.source_id] = seen.get(f.source_id, 0) + 1
        if current is None:
            current = p.add_source(UriSource(str(clip.path), live=True, backoff=(0.01, 0.01)))
        elif seen.get(current, 0) >= 3:
            p.remove_source(current)
            cycle += 1
            current = None
            if cycle in (10, 100):
                time.sleep(0.2)                       # let the removed source's thread finish
                gc.collect()
                marks[cycle] = (threading.active_count(), _fds(), _rss_mb())
            if cycle == 100:
                p.stop()
    (t10, f10, m10), (t100, f100, m100) = marks[10], marks[100]
    # a removed source's thread may still be closing its demuxer: a leak never comes back down
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: threading.active_count() <= t10 and _fds() <= f10, 10, "back to the 10-cycle level")
    t100, f100 = threading.active_count(), _fds()
    print(f"\nafter 10 cycles: {t10} threads, {f10} fds, {m10:.0f} MB; after 100: {t100}, {f100}, {m100:.0f} MB")
    assert t100 <= t10, f"threads grew {t10} -> {t100}"
    assert f100 <= f10, f"open files grew {f10} -> {f100}"
    assert m100 - m10 < 30, f"RSS grew {m100 - m10:.0f} MB over 90 cycles"
    assert all(seen.get(sid, 0) >= 3 for sid in range(1, 101))


def test_an_error_after_close_ends_a_uri_source_quietly(monkeypatch, caplog):
    src = UriSource("rtsp://user:secret@127.0.0.1:9/cam")

    def torn(self, choice, holder, sid):
        self.close()                                   # closed from another thread while it reads
        raise OSError("socket torn down")
        yield                                          # (a generator, as the real one)

    monkeypatch.setattr(UriSource, "_connections", torn)
    with caplog.at_level("DEBUG", logger="vidflow.sources"):
        assert list(src.frames(source_id="c")) == []
    assert src.state == "ended" and not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert any("after close: OSError: socket torn down" in r.getMessage() for r in caplog.records)
    assert "secret" not in caplog.text
