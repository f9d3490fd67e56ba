"""Live sources on the CPU path against real servers on 127.0.0.1: HEVC (RTSP and MPEG-TS), a
resolution change mid-stream, a reconnect into a new SPS, a URI that never connects beside
cameras that run, and a camera that hangs without closing (``stalled`` within its timeout)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rtsp_server import RtspServer, free_port  # noqa: E402
from ts_server import TsServer, encode_clip  # noqa: E402

from vidflow.errors import StreamUnavailable  # noqa: E402
from vidflow.mux import Muxer  # noqa: E402
from vidflow.pipeline import Pipeline  # noqa: E402
from vidflow.sources.uri import RtspSource, UriSource  # noqa: E402
from vidflow.testing import MemorySink, wait_until  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    return {
        "small": encode_clip(d / "small.ts", width=320, height=240, seconds=1.0),
        "large": encode_clip(d / "large.ts", width=480, height=272, seconds=1.0, seed=1),
        "hevc": encode_clip(d / "hevc.ts", codec="hevc", width=320, height=240, seconds=1.0, seed=2),
    }


def _take(src, n):
    out = []
    for f in src.frames(device=CPU, source_id=0):
        out.append(f)
        if len(out) >= n:
            break
    return out


def _monotonic(frames) -> bool:
    nums = [f.info.frame_num for f in frames]
    pts = [f.info.pts for f in frames]
    return nums == list(range(nums[0], nums[0] + len(nums))) and all(b > a for a, b in zip(pts, pts[1:]))


def test_hevc_over_rtsp(gst):
    with RtspServer(width=320, height=240, codec="h265") as srv:
        src = RtspSource(srv.url(), backoff=(0.25, 1.0))
        frames = _take(src, 20)
    assert len(frames) == 20 and _monotonic(frames)
    assert tuple(frames[-1].data.shape) == (3, 240, 320) and src.backend == "ffmpeg"
    assert src.stats().decode_errors == 0 and src.state == "ended"


def test_hevc_over_mpegts(clips):
    with TsServer([clips["hevc"]]) as srv:
        src = UriSource(srv.url)
        frames = _take(src, 40)                      # past the loop point: timestamps go on
    assert _monotonic(frames) and tuple(frames[0].data.shape) == (3, 240, 320)
    assert src.stats().decode_errors == 0


def test_resolution_change_mid_stream_goes_through_the_muxer(clips):
    """320x240 for 1 s, then 480x272 (a new SPS at a keyframe), then 320x240 again: frames come at
    each size, without a reconnect, and the muxer scales every one into the same batch size."""
    with TsServer([clips["small"], clips["large"]]) as srv:
        src = UriSource(srv.url)
        sink = MemorySink()
        p = Pipeline([src], muxer=Muxer(batch_size=1, max_wait_ms=5, size=(320, 240)), sinks=[sink], device="cpu",
                     queue_size=100)
        sizes = []
        for batch in p:
            sizes += [(f.width, f.height) for f in batch.frames]
            assert tuple(batch.images.shape[1:]) == (3, 240, 320)
            if len(sizes) >= 75:
                p.stop()
    assert sizes[:30] == [(320, 240)] * 30 and sizes[30:60] == [(480, 272)] * 30 and sizes[60] == (320, 240)
    assert src.connects == 1 and src.reconnects == 0 and src.stats().decode_errors == 0


def test_reconnect_into_a_new_sps(clips, caplog):
    """The camera goes away and comes back at another size: the decoder is made anew, numbering
    and timestamps go on, one line says it is back and how much was missed."""
    srv = TsServer([clips["small"]]).start()
    port = srv.port
    src = UriSource(srv.url, backoff=(0.1, 0.5), read_timeout=2.0, stall_timeout=3.0)
    frames = []
    with caplog.at_level(logging.INFO, logger="vidflow.sources"):
        gen = src.frames(device=CPU, source_id=0)
        try:
            for f in gen:
                frames.append(f)
                if len(frames) == 20:
                    srv.stop()
                    srv = TsServer([clips["large"]], port=port).start()
                if len(frames) >= 20 and f.info.width == 480:
                    if sum(1 for x in frames if x.info.width == 480) >= 10:
                        break
        finally:
            gen.close()
            srv.stop()
    assert _monotonic(frames)
    assert {f.info.width for f in frames[:20]} == {320} and frames[-1].info.width == 480
    c = src.stats()
    assert c.reconnects == 1 and c.connects == 2 and c.last_error == "" and c.missed_s > 0
    assert "back after" in caplog.text and "frames missed" in caplog.text


def test_a_uri_that_never_connects_fails_alone_and_names_itself(clips):
    port = free_port()        # nothing listens there
    with TsServer([clips["small"]]) as srv:
        good = UriSource(srv.url)
        bad = RtspSource(f"rtsp://admin:s3cret-pw@127.0.0.1:{port}/cam", backoff=(0.05, 0.1), max_retries=2)
        p = Pipeline([good, bad], muxer=Muxer(batch_size=2, max_wait_ms=10), sinks=[MemorySink()], device="cpu",
                     strict=False)
        n = 0
        for batch in p:
            n += sum(1 for f in batch.frames if f.source_id == 0)
            if n >= 45 and p.summary.sources[1].state == "failed":
                p.stop()
    err = p.summary.sources[1].error
    assert isinstance(err, StreamUnavailable) and err.source_id == 1
    assert "s3cret-pw" not in str(err) and "admin:***@" in str(err) and "gave up after 2 retries" in str(err)
    assert "s3cret-pw" not in repr(bad) + str(bad.stats())
    assert n >= 45 and p.summary.sources[0].error is None


def test_a_camera_that_hangs_is_stalled_within_its_timeout_then_comes_back(clips):
    """The server keeps the connection open and sends nothing: the source says ``stalled`` (no
    frame for its stall timeout, by its own clock) instead of waiting forever, and reconnects once
    the camera sends again; the others' queue is not the reason (back-pressure is not a stall)."""
    with TsServer([clips["small"]]) as srv:
        src = UriSource(srv.url, stall_timeout=1.0, read_timeout=1.0, backoff=(0.1, 0.2))
        p = Pipeline([src], muxer=Muxer(batch_size=1, max_wait_ms=5), sinks=[MemorySink()], device="cpu")
        it = iter(p)
        for _ in range(5):
            next(it)
        srv.freeze()
        wait_until(lambda: src.stalls > 0, timeout=20, what="the stalled state")
        stalled = [why for _, st, why in src.transitions if st == "stalled"]
        srv.thaw()
        wait_until(lambda: src.reconnects >= 1 and src.state == "running", timeout=20, what="back to running")
        p.stop()
        for _ in it:
            pass
    assert src.stats().stalls == 1 and src.stats().last_error == ""
    assert len(stalled) == 1 and "no frame for" in stalled[0]
    silent = float(re.search(r"no frame for ([\d.]+) s", stalled[0]).group(1))
    assert silent <= src.stall_timeout + src.read_timeout, stalled     # detected within its timeout


def test_rtsp_camera_back_at_another_size(gst):
    """An RTSP camera restarts with another resolution (a new SPS): the source reconnects, the
    decoder is made anew, numbering and timestamps go on."""
    a = RtspServer(width=320, height=240).start()
    b = None
    src = RtspSource(a.url(), backoff=(0.1, 0.5), read_timeout=1.0, stall_timeout=2.0, connect_timeout=2.0)
    frames = []
    gen = src.frames(device=CPU, source_id=0)
    try:
        for f in gen:
            frames.append(f)
            if len(frames) == 15:
                a.kill()
                b = RtspServer(port=a.port, width=480, height=272).start()
            if sum(1 for x in frames if x.info.width == 480) >= 10:
                break
    finally:
        gen.close()
        a.stop()
        if b is not None:
            b.stop()
    assert _monotonic(frames)
    assert {f.info.width for f in frames[:15]} == {320} and tuple(frames[-1].data.shape) == (3, 272, 480)
    assert src.stats().reconnects == 1 and src.stats().last_error == ""
