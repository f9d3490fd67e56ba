"""Bad input: each broken file runs beside a good one through the pipeline. The good source
finishes complete; the bad one either fails with a ``SourceError`` naming it, or (damaged but
partly decodable) delivers what it can and reports the damage. Nothing hangs, nothing is silent.

Both file readers are checked: ``UriSource`` (FFmpeg URI, what ``uri:`` cameras use) and
``FileSource`` (``file:``).
"""

from __future__ import annotations

import random
import re
import resource
from pathlib import Path

import av
import numpy as np
import pytest

from vidflow.errors import DecodeError, SourceError
from vidflow.mux import Muxer
from vidflow.pipeline import Pipeline
from vidflow.scenes import make_clip
from vidflow.sources.file import FileSource
from vidflow.sources.uri import UriSource
from vidflow.testing import MemorySink

FRAMES = 30


# ---------------------------------------------------------------------------- H.264 SPS surgery
def _unescape(b: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for x in b:
        if zeros >= 2 and x == 3:
            zeros = 0
            continue
        out.append(x)
        zeros = zeros + 1 if x == 0 else 0
    return bytes(out)


def _escape(b: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for x in b:
        if zeros >= 2 and x <= 3:
            out.append(3)
            zeros = 0
        out.append(x)
        zeros = zeros + 1 if x == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.s = "".join(f"{x:08b}" for x in data)
        self.p = 0

    def u(self, n: int) -> int:
        v = int(self.s[self.p:self.p + n], 2)
        self.p += n
        return v

    def ue(self) -> int:
        z = 0
        while self.s[self.p] == "0":
            z += 1
            self.p += 1
        self.p += 1
        v = (1 << z) - 1 + (int(self.s[self.p:self.p + z], 2) if z else 0)
        self.p += z
        return v


def _ue(v: int) -> str:
    b = f"{v + 1:b}"
    return "0" * (len(b) - 1) + b


def sps_with_size(nal: bytes, mbs_w: int, mbs_h: int) -> bytes:
    """An H.264 SPS NAL (header byte first) rewritten to declare ``16*mbs_w x 16*mbs_h`` pixels."""
    r = _Bits(_unescape(nal[1:]))
    profile = r.u(8)
    r.u(16)
    r.ue()                                              # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if r.ue() == 3:
            r.u(1)
        r.ue()
        r.ue()
        r.u(1)
        assert r.u(1) == 0, "scaling matrices are not handled"
    r.ue()                                              # log2_max_frame_num_minus4
    poc = r.ue()
    assert poc != 1, "pic_order_cnt_type 1 is not handled"
    if poc == 0:
        r.ue()
    r.ue()                                              # max_num_ref_frames
    r.u(1)
    size_at = r.p
    r.ue()
    r.ue()
    keep_from = r.p
    if not r.u(1):                                      # frame_mbs_only_flag
        r.u(1)
    r.u(1)                                              # direct_8x8_inference_flag
    crop_at = r.p
    if r.u(1):
        for _ in range(4):
            r.ue()
    rest = r.s[r.p:r.s.rindex("1")]                     # VUI etc., up to the stop bit
    bits = r.s[:size_at] + _ue(mbs_w - 1) + _ue(mbs_h - 1) + r.s[keep_from:crop_at] + "0" + rest + "1"
    bits += "0" * (-len(bits) % 8)
    return nal[:1] + _escape(bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)))


def _annexb_nals(path: Path) -> list[bytes]:
    data = path.read_bytes()
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    return [data[a + 3:b].rstrip(b"\x00") for a, b in zip(starts, starts[1:] + [len(data)])]


# ---------------------------------------------------------------------------- the bad files
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    good = make_clip(d / "good.mp4", width=160, height=128, frames=FRAMES, seed=3).path
    data = Path(good).read_bytes()
    moov = data.find(b"moov") - 4
    out: dict[str, Path] = {"good": Path(good)}

    def put(name: str, content: bytes) -> None:
        out[name] = d / name
        out[name].write_bytes(content)

    put("zero_bytes.mp4", b"")
    put("random_bytes.mp4", random.Random(1).randbytes(20_000))
    put("moov_missing.mp4", data[:moov])                                  # recording cut before its index

    fast = d / "faststart.mp4"                                            # index first, then cut the media
    with av.open(str(good)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)
    fs = fast.read_bytes()
    assert fs.find(b"moov") < fs.find(b"mdat")
    put("faststart_cut.mp4", fs[: fs.find(b"mdat") + (len(fs) - fs.find(b"mdat")) // 2])

    flipped = bytearray(data)
    rng = random.Random(2)
    mdat = data.find(b"mdat") + 4
    for _ in range(200):
        flipped[rng.randrange(mdat + 200, moov)] ^= 1 << rng.randrange(8)
    put("bit_flips.mp4", bytes(flipped))

    annexb = d / "good.h264"
    with av.open(str(good)) as src, av.open(str(annexb), "w", format="h264") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)
    nals = _annexb_nals(annexb)
    assert sum(n[0] & 31 == 7 for n in nals) >= 1
    put("huge_dimensions.h264", b"".join(
        b"\x00\x00\x00\x01" + (sps_with_size(n, 1000, 1000) if n[0] & 31 == 7 else n) for n in nals))
    put("params_only.h264", b"".join(b"\x00\x00\x00\x01" + n for n in nals if n[0] & 31 in (7, 8)) * 20)

    out["audio_only.m4a"] = d / "audio_only.m4a"
    with av.open(str(out["audio_only.m4a"]), "w") as dst:
        s = dst.add_stream("aac", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 8000
        for p in [*s.encode(fr), *s.encode(None)]:
            dst.mux(p)
    return out


def test_the_huge_header_really_declares_huge_frames(files):
    with av.open(str(files["huge_dimensions.h264"])) as c:
        cc = c.streams.video[0].codec_context
        assert cc.width * cc.height > 15000 * 15000
    same = files["good"].parent / "resized.h264"          # the SPS surgery itself keeps a stream decodable
    same.write_bytes(b"".join(b"\x00\x00\x00\x01" + (sps_with_size(n, 10, 8) if n[0] & 31 == 7 else n)
                              for n in _annexb_nals(files["good"].parent / "good.h264")))
    with av.open(str(same)) as c:
        assert c.streams.video[0].codec_context.width == 160


FATAL = ["zero_bytes.mp4", "random_bytes.mp4", "moov_missing.mp4", "huge_dimensions.h264", "params_only.h264",
         "audio_only.m4a"]
DAMAGED = ["faststart_cut.mp4", "bit_flips.mp4"]
_FILE_GAPS: dict = {}


def _make(kind: str, path: Path):
    return UriSource(str(path)) if kind == "uri" else FileSource(str(path))


def _cases(names):
    out = []
    for name in names:
        out.append(pytest.param("uri", name, id=f"uri-{name}"))
        marks = [_FILE_GAPS[name]] if name in _FILE_GAPS else []
        out.append(pytest.param("file", name, id=f"file-{name}", marks=marks))
    return out


def _run_pair(kind: str, files, name: str):
    good = _make(kind, files["good"])
    bad = _make(kind, files[name])
    sink = MemorySink(keep_images=False)
    p = Pipeline([good, bad], muxer=Muxer(batch_size=4, max_wait_ms=5), sinks=[sink], device="cpu")
    return p, sink, bad


@pytest.mark.parametrize(("kind", "name"), _cases(FATAL))
def test_broken_file_fails_alone_with_a_clear_error(kind, name, files):
    p, sink, bad = _run_pair(kind, files, name)
    with pytest.raises(SourceError) as ei:
        p.run()
    err = ei.value
    assert isinstance(err, DecodeError), repr(err)
    assert err.source_id == 1 and name in str(err)
    assert [f.frame_num for f in sink.frames_of(0)] == list(range(FRAMES))      # the good one: complete
    assert sink.frames_of(1) == []
    assert p.summary.sources[1].state == "failed" and p.summary.sources[0].state == "ended"
    if name == "huge_dimensions.h264":
        assert "max_pixels" in str(err) and "before decoding" in str(err)


@pytest.mark.parametrize(("kind", "name"), _cases(DAMAGED))
def test_damaged_file_decodes_what_it_can_and_reports_it(kind, name, files, caplog):
    p, sink, bad = _run_pair(kind, files, name)
    try:
        p.run()
        failed = None
    except SourceError as e:
        failed = e
    assert [f.frame_num for f in sink.frames_of(0)] == list(range(FRAMES))
    got = len(sink.frames_of(1))
    if failed is not None:                         # giving up is fine when it names the source
        assert failed.source_id == 1 and name in str(failed)
        return
    assert 1 <= got <= FRAMES
    reported = bad.decode_errors
    assert reported > 0 or got < FRAMES, "damage went unnoticed"
    assert getattr(bad, "last_error", None), "the damage must be reported"
    assert name in caplog.text                     # and logged, naming the file


def test_size_limit_holds_mid_stream(files):
    """A stream that starts small and switches to a huge SPS later passes the up-front check; the
    decoder's own ``max_pixels`` limit then refuses those frames before allocating them."""
    nals = _annexb_nals(files["good"].parent / "good.h264")
    path = files["good"].parent / "grows.h264"
    huge = [sps_with_size(n, 1000, 1000) if n[0] & 31 == 7 else n for n in nals]
    path.write_bytes(b"".join(b"\x00\x00\x00\x01" + n for n in nals + huge))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    src = UriSource(str(path))
    got = list(src.frames(device="cpu", source_id=7))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(got) == FRAMES and all(f.info.width == 160 for f in got)
    assert src.decode_errors > 0
    assert grown_mb < 200, f"peak memory grew {grown_mb:.0f} MB: a huge frame was allocated"


def test_a_smaller_limit_refuses_an_ordinary_clip(files):
    src = UriSource(str(files["good"]), max_pixels=100)
    with pytest.raises(DecodeError, match="max_pixels"):
        list(src.frames(device="cpu", source_id=7))
    assert src.decoded == 0
