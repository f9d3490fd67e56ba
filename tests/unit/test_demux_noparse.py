"""MPEG-TS without FFmpeg's parser (``fflags=noparse``: no one-frame wait for the next access
unit): its packets carry no keyframe flag, so the keyframe gate looks into the bitstream."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.e2e.ts_server import encode_big_pictures
from vidflow.sources._demux import starts_picture_anew
from vidflow.sources.uri import UriSource

N, GOP = 40, 10
NOPARSE = {"fflags": "noparse"}


def _encode(path: Path, codec: str) -> Path:
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream(codec, rate=30)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        s.options = {"g": str(GOP), "bf": "0"} if codec == "libx264" else {
            "x265-params": f"keyint={GOP}:min-keyint={GOP}:bframes=0:log-level=none"}
        for i in range(N):
            a = np.zeros((96, 160, 3), np.uint8)
            a[..., 0] = (i * 9) % 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def clip(request, tmp_path_factory):
    return _encode(tmp_path_factory.mktemp("noparse") / f"{request.param}.ts", request.param)


def test_without_the_parser_packets_lose_the_keyframe_flag_but_the_bitstream_tells(clip):
    with av.open(str(clip)) as c:
        flagged = [i for i, p in enumerate(c.demux(c.streams.video[0])) if p.size and p.is_keyframe]
    with av.open(str(clip), options=NOPARSE) as c:
        s = c.streams.video[0]
        packets = [p for p in c.demux(s) if p.size]
        codec = s.codec_context.name
    assert len(packets) == N and len(flagged) >= N // GOP
    assert not any(p.is_keyframe for p in packets)            # what made a UriSource deliver nothing
    assert [i for i, p in enumerate(packets) if starts_picture_anew(p, codec)] == flagged


def test_a_source_without_the_parser_delivers_every_frame(clip):
    with_parser = list(UriSource(str(clip), decoder="ffmpeg").frames())
    without = list(UriSource(str(clip), decoder="ffmpeg", options=NOPARSE).frames())
    assert len(with_parser) == len(without) == N
    for a, b in zip(with_parser, without):
        assert np.array_equal(a.data.numpy(), b.data.numpy())


def _decode_all(demux):
    cc = demux.stream.codec_context
    n = sum(len(cc.decode(p)) for p in demux.packets() if p.size)
    return n + len(cc.decode(None))


def test_low_delay_reads_mpegts_without_the_parser_and_other_formats_with_it(clip, tmp_path):
    from vidflow.sources._demux import Demuxer
    kw = dict(uri="x", source_id=0, max_pixels=1 << 24)
    with Demuxer(str(clip), low_delay=True, **kw) as d:
        assert d.parser is False and d.info.fps == 30 and _decode_all(d) == N
    raw = tmp_path / ("clip.h264" if "264" in clip.name else "clip.hevc")
    with av.open(str(clip)) as c, av.open(str(raw), "w", format=raw.suffix[1:]) as out:
        s = c.streams.video[0]
        o = out.add_stream_from_template(s)
        for p in c.demux(s):
            if p.size:
                p.stream = o
                out.mux(p)
    with Demuxer(str(raw), low_delay=True, **kw) as d:      # an elementary stream needs the parser
        assert d.parser is True and _decode_all(d) == N
    with Demuxer(str(clip), low_delay=True, options={"fflags": "+genpts"}, **kw) as d:   # the user's fflags win
        assert d.parser is True


def test_low_delay_joins_the_pieces_of_a_picture_the_demuxer_cut(tmp_path):
    """Without the parser a PES over 200 KiB came out as several packets, the later ones without
    timestamps; NVDEC's low latency took each as a whole picture ("Decode Error" at every
    keyframe of 1080p live H.264 on the H200, 70 % of frames unreadable). The demux layer joins
    them: each packet is one picture, byte for byte the parser's."""
    from vidflow.sources._demux import Demuxer
    clip = encode_big_pictures(tmp_path / "big.ts")
    with av.open(str(clip), options=NOPARSE) as c:
        raw = [p for p in c.demux(c.streams.video[0]) if p.size]
    assert len(raw) > 4 and sum(p.pts is None for p in raw) >= 4      # the cut this guards against
    with av.open(str(clip)) as c:
        parsed = [(bytes(p), p.pts) for p in c.demux(c.streams.video[0]) if p.size]
    with Demuxer(str(clip), uri="x", source_id=0, max_pixels=1 << 24, low_delay=True) as d:
        assert d.parser is False
        joined = [(bytes(p), p.pts) for p in d.packets() if p.size]
    assert len(parsed) == 4 and joined == parsed
    frames = list(UriSource(str(clip), decoder="ffmpeg", options=NOPARSE).frames())
    assert len(frames) == 4


def test_joining_is_bounded(monkeypatch, tmp_path):
    """A PES that never ends is handed on in bounded parts, not held in memory."""
    from vidflow.sources import _demux
    monkeypatch.setattr(_demux, "_PES_PIECES", 2)
    clip = encode_big_pictures(tmp_path / "big.ts", n=1)
    with av.open(str(clip), options=NOPARSE) as c:
        raw = [p.size for p in c.demux(c.streams.video[0]) if p.size]
    with _demux.Demuxer(str(clip), uri="x", source_id=0, max_pixels=1 << 24, low_delay=True) as d:
        sizes = [p.size for p in d.packets() if p.size]
    assert len(raw) >= 3 and sum(sizes) == sum(raw) and sizes[0] == raw[0] + raw[1]
