"""FileSource (FFmpeg path) and SyntheticSource on the CPU."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest
import torch

from vidflow.errors import DecodeError, StreamUnavailable
from vidflow.scenes import Scene, make_clip
from vidflow.sources.base import Source
from vidflow.sources.file import FileSource
from vidflow.sources.synthetic import SyntheticSource


def _pyav(path):
    with av.open(str(path)) as f:
        return [(fr.time, fr.to_ndarray(format="rgb24")) for fr in f.decode(video=0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "1080p": make_clip(d / "a.mp4", width=1920, height=1080, frames=5, seed=1, bframes=True),
        "720p": make_clip(d / "b.mp4", width=1280, height=720, frames=7, seed=2, bframes=False),
        "480p": make_clip(d / "c.mp4", width=640, height=480, frames=12, seed=3, bframes=True),
    }


@pytest.mark.parametrize("name", ["1080p", "720p", "480p"])
def test_frames_match_pyav(clips, name):
    clip = clips[name]
    ref = _pyav(clip.path)
    src = FileSource(clip.path)
    frames = list(src.frames(device=torch.device("cpu"), source_id=4))
    assert src.backend == "ffmpeg"
    assert len(frames) == clip.frames == len(ref)
    assert [f.info.frame_num for f in frames] == list(range(clip.frames))
    pts = [f.info.pts for f in frames]
    assert pts == [t for t, _ in ref]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    for f, (_, rgb) in zip(frames, ref):
        assert f.info.source_id == 4 and (f.info.width, f.info.height) == (clip.width, clip.height)
        assert f.format == "rgb" and f.data.shape == (3, clip.height, clip.width) and f.data.device.type == "cpu"
        assert np.array_equal(f.data.permute(1, 2, 0).numpy(), rgb)
        assert f.info.ntp_ns > 0


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".h264"])
def test_other_containers(tmp_path, suffix):
    clip = make_clip(tmp_path / f"x{suffix}", width=320, height=240, frames=9, fps=25, seed=5)
    frames = list(FileSource(clip.path).frames(device="cpu"))
    assert len(frames) == 9
    pts = [f.info.pts for f in frames]
    ref = [t for t, _ in _pyav(clip.path)]
    if suffix == ".h264":                      # raw Annex B has no timestamps: frame / rate
        assert all(t is None for t in ref)
        assert pts == pytest.approx([i / 25 for i in range(9)])
    else:
        assert pts == ref
    assert all(b > a for a, b in zip(pts, pts[1:]))


def test_loop_keeps_counting(clips):
    clip = clips["480p"]
    src = FileSource(clip.path, loop=True)
    it = src.frames(device="cpu", source_id=0)
    frames = [next(it) for _ in range(30)]
    assert [f.info.frame_num for f in frames] == list(range(30))
    pts = [f.info.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert pts[12] == pytest.approx(12 / 30)
    assert torch.equal(frames[12].data, frames[0].data) and torch.equal(frames[25].data, frames[1].data)
    src.close()
    assert len(list(it)) == 0


def test_close_from_another_thread(clips):
    src = FileSource(clips["480p"].path, loop=True)
    got, started = [], threading.Event()

    def consume():
        for f in src.frames(device="cpu", source_id=1):
            got.append(f.info.frame_num)
            started.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(10)
    src.close()
    t.join(10)
    assert not t.is_alive() and len(got) >= 1


def test_errors_name_source_and_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(StreamUnavailable) as e:
        list(FileSource(missing).frames(device="cpu", source_id="cam9"))
    assert e.value.source_id == "cam9" and "nope.mp4" in str(e.value) and "cam9" in str(e.value)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video " * 200)
    with pytest.raises(DecodeError) as e:
        list(FileSource(garbage).frames(device="cpu", source_id=3))
    assert e.value.source_id == 3 and "garbage.mp4" in str(e.value)
    # a raw H.264 stream with parameter sets but no picture: opens, decodes nothing
    clip = make_clip(tmp_path / "p.ts", width=64, height=64, frames=2)
    with av.open(clip.path) as f:
        header = bytes(f.streams.video[0].codec_context.extradata)
    (tmp_path / "hdr.h264").write_bytes(header)
    with pytest.raises(DecodeError):
        list(FileSource(tmp_path / "hdr.h264").frames(device="cpu", source_id=0))
    with pytest.raises(DecodeError, match="CUDA"):
        list(FileSource(clip.path, decoder="nvdec").frames(device="cpu", source_id=0))
    with pytest.raises(ValueError, match="auto"):
        FileSource(clip.path, decoder="gpu")


def test_protocol_attributes(tmp_path):
    src = FileSource(tmp_path / "a.mp4")
    assert isinstance(src, Source) and src.live is False and src.uri.endswith("a.mp4")
    syn = SyntheticSource(64, 48, frames=2)
    assert isinstance(syn, Source) and syn.live is False


def test_synthetic_source_renders_the_scene():
    src = SyntheticSource(160, 120, frames=4, fps=10, seed=7)
    frames = list(src.frames(device="cpu", source_id=2))
    assert [f.info.frame_num for f in frames] == [0, 1, 2, 3]
    assert [f.info.pts for f in frames] == pytest.approx([0, 0.1, 0.2, 0.3])
    scene = Scene(160, 120, seed=7, fps=10)
    for i, f in enumerate(frames):
        assert f.format == "rgb" and f.data.shape == (3, 120, 160)
        assert np.array_equal(f.data.permute(1, 2, 0).numpy(), scene.render(i)[0])
    assert len(list(SyntheticSource(32, 32, frames=0).frames())) == 0
    with pytest.raises(ValueError, match="frames"):
        SyntheticSource(32, 32, frames=-1)


def test_realtime_replays_at_the_clip_rate_as_a_live_source(tmp_path):
    """realtime=3: frames are released no earlier than their timestamps / 3 (stamped at release),
    and the source is live (drop-oldest queueing). Only lower bounds: never a timing race."""
    clip = make_clip(tmp_path / "rt.mp4", width=64, height=48, frames=15, fps=30, seed=2).path
    src = FileSource(clip, realtime=3.0)
    assert src.live and not FileSource(clip).live
    got = list(src.frames(device=torch.device("cpu"), source_id=0))
    assert len(got) == 15
    t = [(f.info.ntp_ns - got[0].info.ntp_ns) / 1e9 for f in got]
    for k in range(15):
        assert t[k] >= (got[k].info.pts - got[0].info.pts) / 3.0 - 0.002, k
    with pytest.raises(ValueError, match="realtime"):
        FileSource(clip, realtime=-1)


def test_an_error_after_close_ends_the_source_quietly(tmp_path, monkeypatch, caplog):
    # a decoder torn down under a closing source (a stop, a removal) raises: that is the end of
    # the source, not a failure logged without a reason
    import vidflow.sources.file as file_mod

    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, frames=10).path
    real = file_mod.run_session

    closing: list[FileSource] = []

    def torn(*a, **kw):
        gen = real(*a, **kw)
        yield next(gen)
        for s in closing:                      # close() from another thread while it decodes
            s.close()
        raise RuntimeError("decoder gone")

    monkeypatch.setattr(file_mod, "run_session", torn)
    src = FileSource(clip)
    closing.append(src)
    it = src.frames(source_id="s")
    next(it)
    with caplog.at_level("DEBUG", logger="vidflow.sources"):
        assert list(it) == []
    assert src.state == "ended" and src.last_error == ""
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("after close: RuntimeError: decoder gone" in r.getMessage() for r in caplog.records)

    closing.clear()
    src = FileSource(clip)                     # not closed: the same error is a failure, raised
    with pytest.raises(RuntimeError, match="decoder gone"):
        list(src.frames(source_id="s"))
    assert src.state == "failed" and "decoder gone" in src.last_error
