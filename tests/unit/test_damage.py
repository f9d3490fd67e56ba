"""Damage is reported (issue 21.2): generated damaged files decode what they can, count what they
could not (``decode_errors`` / ``corrupt_frames``) with a throttled warning naming the source and
the frame, end early as ``ended`` *with* an error, and follow ``on_corrupt``; a fuzz test over
damaged packets and truncated files: never hangs, never crashes, every error names the source."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidflow.errors import DecodeError, SourceError
from vidflow.mux import Muxer
from vidflow.pipeline import Pipeline
from vidflow.sources.file import FileSource
from vidflow.sources.uri import UriSource
from vidflow.testing import FakeSource, MemorySink

N = 90


def _encode(path: Path, *, fmt: str | None = None, n: int = N) -> Path:
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.options = {"g": "30", "bf": "0"}
        for i in range(n):
            a = np.zeros((120, 160, 3), np.uint8)
            a[..., 0] = (i * 7) % 255
            a[(i * 3) % 100:(i * 3) % 100 + 20, 40:80] = 255
            a[..., 1] = np.arange(160, dtype=np.uint8)[None, :]
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _garbage(src: Path, dst: Path, *, size: int, seed: int) -> Path:
    b = bytearray(src.read_bytes())
    m = len(b) // 2
    b[m:m + size] = bytes(random.Random(seed).randrange(256) for _ in range(size))
    dst.write_bytes(bytes(b))
    return dst


def _flipped_packets(src: Path, dst: Path, *, share: float, seed: int) -> tuple[Path, int]:
    """Bit flips in ``share`` of the non-key packets (re-muxed, so the container stays valid)."""
    rng = random.Random(seed)
    flipped = 0
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        ist = i.streams.video[0]
        ost = o.add_stream_from_template(ist)
        for pk in i.demux(ist):
            if not pk.size:
                continue
            if not pk.is_keyframe and rng.random() < share:
                b = bytearray(bytes(pk))
                for _ in range(3):
                    k = rng.randrange(8, len(b))
                    b[k] ^= 1 << rng.randrange(8)
                new = av.Packet(bytes(b))
                new.pts, new.dts, new.time_base, new.is_keyframe = pk.pts, pk.dts, pk.time_base, pk.is_keyframe
                pk, flipped = new, flipped + 1
            pk.stream = ost
            o.mux(pk)
    return dst, flipped


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("damage")
    mkv, ts = _encode(d / "ok.mkv"), _encode(d / "ok.ts", fmt="mpegts")
    flips, n = _flipped_packets(mkv, d / "flips.mkv", share=0.1, seed=3)
    return {"mkv": mkv, "ts": ts, "garbage.mkv": _garbage(mkv, d / "garbage.mkv", size=4000, seed=1),
            "garbage.ts": _garbage(ts, d / "garbage.ts", size=3000, seed=2), "flips.mkv": flips, "flipped": n}


@pytest.mark.parametrize("kind", [FileSource, UriSource])
def test_a_clean_file_ends_clean(files, kind):
    src = kind(str(files["mkv"]))
    assert len(list(src.frames(device="cpu", source_id=0))) == N
    c = src.stats()
    assert (c.state, c.decode_errors, c.corrupt_frames, c.last_error) == ("ended", 0, 0, "")


@pytest.mark.parametrize("name", ["garbage.mkv", "garbage.ts"])
def test_garbage_mid_file_ends_with_an_error_not_clean(files, name, caplog):
    src = FileSource(files[name])
    with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
        got = list(src.frames(device="cpu", source_id="cam7"))
    c = src.stats()
    assert 0 < len(got) < N
    assert c.state == "ended" and c.last_error.startswith("incomplete: decoded")
    assert f"of the {N} frames" in c.last_error
    assert c.decode_errors + c.corrupt_frames >= 1
    warn = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cam7" in w and "at frame" in w for w in warn), warn         # names the source and frame
    assert any("cam7" in w and "incomplete" in w for w in warn), warn


def test_bit_flips_are_counted_as_corrupt_frames(files):
    src = FileSource(files["flips.mkv"])
    got = list(src.frames(device="cpu", source_id=0))
    c = src.stats()
    assert files["flipped"] >= 5
    assert c.corrupt_frames + c.decode_errors >= files["flipped"] // 2, c    # FFmpeg's concealment, counted
    assert len(got) == c.delivered == N - c.dropped


def test_on_corrupt_skip_keep_and_fail(files):
    keep = FileSource(files["flips.mkv"], on_corrupt="keep")
    n_keep = len(list(keep.frames(device="cpu")))
    skip = FileSource(files["flips.mkv"], on_corrupt="skip")
    n_skip = len(list(skip.frames(device="cpu")))
    assert keep.corrupt_frames > 0 and n_keep == keep.decoded
    assert skip.dropped == skip.corrupt_frames > 0 and n_skip == n_keep - skip.dropped
    fail = FileSource(files["flips.mkv"], on_corrupt="fail")
    with pytest.raises(DecodeError, match=r"source 3 .*(corrupt|decode error).*on_corrupt='fail'"):
        list(fail.frames(device="cpu", source_id=3))
    assert fail.state == "failed"
    with pytest.raises(ValueError, match="on_corrupt"):
        FileSource(files["mkv"], on_corrupt="ignore")


def test_damage_warnings_are_throttled(files, caplog):
    src = FileSource(files["flips.mkv"])
    with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
        list(src.frames(device="cpu", source_id=0))
    damage = [r for r in caplog.records if "so far" in r.getMessage()]
    assert src.corrupt_frames + src.decode_errors > 1 and len(damage) == 1      # one per 5 s per source


def test_a_damaged_file_in_a_pipeline_is_reported_in_the_summary(files):
    p = Pipeline([FakeSource(30), FileSource(files["garbage.ts"])], muxer=Muxer(batch_size=4, max_wait_ms=5),
                 sinks=[MemorySink(keep_images=False)], device="cpu")
    p.run()
    st = p.summary.sources[1]
    assert st.state == "ended" and "incomplete" in st.last_error and st.errors >= 1


# -- fuzz ------------------------------------------------------------------------------------
_DAMAGE = st.lists(st.tuples(st.sampled_from(["flip", "zero", "cut", "dup"]), st.floats(0, 1), st.integers(1, 2000)),
                   min_size=1, max_size=4)


def _damaged(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, where, size in ops:
        if not b:
            break
        k = int(where * (len(b) - 1))
        if op == "flip":
            for j in range(k, min(len(b), k + size), 97):
                b[j] ^= 0x5A
        elif op == "zero":
            b[k:k + size] = bytes(min(size, len(b) - k))
        elif op == "cut":
            del b[k:]
        else:
            b[k:k] = b[k:k + size]
    return bytes(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_DAMAGE, which=st.sampled_from(["mkv", "ts"]), kind=st.sampled_from([FileSource, UriSource]))
def test_fuzz_damaged_and_truncated_files_never_hang_or_crash(files, tmp_path, ops, which, kind):
    path = tmp_path / f"fuzz.{which}"
    path.write_bytes(_damaged(files[which].read_bytes(), ops))
    src = kind(str(path))
    result: dict = {}

    def run() -> None:
        try:
            result["n"] = len(list(src.frames(device="cpu", source_id="fz")))
        except BaseException as e:  # noqa: BLE001 - judged below
            result["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "decoding a damaged file hung"
    err = result.get("err")
    if err is not None:
        assert isinstance(err, SourceError), f"{type(err).__name__}: {err}"      # never a crash
        assert err.source_id == "fz" and "source fz" in str(err)
        assert src.state == "failed"
    else:
        assert src.state == "ended" and result["n"] >= 0
        cuts = [int(w * (len(files[which].read_bytes()) - 1)) for op, w, _ in ops if op == "cut"]
        at_boundary = which == "ts" and any(k % 188 == 0 for k in cuts)   # a valid, shorter MPEG-TS
        if result["n"] < N - 2 and not at_boundary:
            assert src.last_error, "a short file ended clean"
