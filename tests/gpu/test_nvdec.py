"""NVDEC path (needs CUDA + PyNvVideoCodec): same frames and pts as FFmpeg, RGB close to PyAV's,
frames stay on the GPU, FFmpeg fallback for streams NVDEC cannot take, the fused convert kernel."""

from __future__ import annotations

import logging
import math
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidflow.batch import FrameInfo
from vidflow.ops.color import convert_into, to_rgb, triton_available
from vidflow.scenes import Scene, make_clip
from vidflow.sources.base import SourceFrame
from vidflow.sources._nvdec import nvdec_info
from vidflow.sources.file import FileSource

pytestmark = pytest.mark.gpu
REAL = Path(__file__).resolve().parents[1] / "data" / "real"


def _ffmpeg_reference(path):
    """(pts list, RGB [H,W,3] list) exactly as PyAV decodes and converts."""
    pts, rgb = [], []
    with av.open(str(path)) as f:
        for fr in f.decode(video=0):
            pts.append(fr.time)
            rgb.append(fr.to_ndarray(format="rgb24"))
    return pts, rgb


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("nvdec")
    return {
        "1080p_bframes.mp4": make_clip(d / "a.mp4", width=1920, height=1080, frames=24, seed=1, bframes=True).path,
        "720p.mkv": make_clip(d / "b.mkv", width=1280, height=720, frames=20, seed=2, bframes=False).path,
        "480p.ts": make_clip(d / "c.ts", width=640, height=480, frames=20, seed=3).path,
        "raw.h264": make_clip(d / "d.h264", width=640, height=480, frames=15, seed=4).path,
    }


def _real_clips():
    return sorted(REAL.glob("*.mp4")) if REAL.is_dir() else []


def _check_against_ffmpeg(path, device):
    ref_pts, ref_rgb = _ffmpeg_reference(path)
    src = FileSource(path, decoder="nvdec")
    frames = list(src.frames(device=device, source_id=7))
    assert src.backend == "nvdec"
    assert len(frames) == len(ref_pts)
    assert [f.info.frame_num for f in frames] == list(range(len(frames)))
    ours = [f.info.pts for f in frames]
    if all(p is not None for p in ref_pts):
        assert ours == pytest.approx(ref_pts, abs=1e-9)
    worst = math.inf
    for f, ref in zip(frames, ref_rgb):
        assert f.format == "nv12" and f.data.is_cuda
        rgb = to_rgb(f)
        assert rgb.is_cuda and rgb.shape == (3, ref.shape[0], ref.shape[1])
        worst = min(worst, _psnr(rgb.permute(1, 2, 0).cpu().numpy(), ref))
    assert worst >= 40.0, f"{path}: worst frame PSNR {worst:.1f} dB"
    return worst


@pytest.mark.parametrize("name", ["1080p_bframes.mp4", "720p.mkv", "480p.ts", "raw.h264"])
def test_nvdec_matches_ffmpeg_on_generated_clips(clips, cuda_device, name):
    _check_against_ffmpeg(clips[name], cuda_device)


@pytest.mark.parametrize("path", _real_clips() or [pytest.param(None, marks=pytest.mark.skip("no real clips"))],
                         ids=lambda p: p.name if p else "none")
def test_nvdec_matches_ffmpeg_on_real_clips(cuda_device, path):
    _check_against_ffmpeg(path, cuda_device)


def test_auto_falls_back_to_ffmpeg_for_444(tmp_path, cuda_device, caplog):
    path = tmp_path / "yuv444.mp4"
    scene = Scene(320, 240, seed=5)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(30))
        st.width, st.height, st.pix_fmt = 320, 240, "yuv444p"
        for i in range(6):
            vf = av.VideoFrame.from_ndarray(scene.render(i)[0], format="rgb24").reformat(format="yuv444p")
            vf.pts = i
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    src = FileSource(path)
    with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
        frames = list(src.frames(device=cuda_device, source_id="cam444"))
    assert src.backend == "ffmpeg" and len(frames) == 6
    assert all(f.format == "rgb" for f in frames)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cam444" in warnings[0].getMessage()
    with pytest.raises(Exception, match="NVDEC"):
        list(FileSource(path, decoder="nvdec").frames(device=cuda_device, source_id=1))


def test_nvdec_loop_and_close(clips, cuda_device):
    src = FileSource(clips["480p.ts"], loop=True, decoder="nvdec")
    it = src.frames(device=cuda_device, source_id=0)
    frames = [next(it) for _ in range(45)]
    assert [f.info.frame_num for f in frames] == list(range(45))
    pts = [f.info.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert torch.equal(frames[20].data, frames[0].data) and torch.equal(frames[41].data, frames[1].data)
    t = threading.Thread(target=src.close)
    t.start()
    t.join()
    assert len(list(it)) <= 1


def test_nvdec_loop_keeps_one_decoder(clips, cuda_device, monkeypatch):
    """Looping flushes the decoder and goes on with it (no new NVDEC decoder per pass); every
    pass gives the same pictures, B-frames and all, with increasing pts."""
    import vidflow.sources._nvdec as file_mod
    made = []

    class Counting(file_mod.NvdecDecoder):
        def __init__(self, *a, **k):
            made.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(file_mod, "NvdecDecoder", Counting)
    path = clips["1080p_bframes.mp4"]
    n = len(_ffmpeg_reference(path)[0])
    src = FileSource(path, loop=True, decoder="nvdec")
    it = src.frames(device=cuda_device, source_id=0)
    frames = [next(it) for _ in range(3 * n)]
    src.close()
    assert len(list(it)) <= 1
    assert len(made) == 1
    pts = [f.info.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    for i in range(n):
        assert torch.equal(frames[i].data, frames[n + i].data), f"pass 2 frame {i}"
        assert torch.equal(frames[i].data, frames[2 * n + i].data), f"pass 3 frame {i}"


def test_fused_convert_matches_cpu_path(clips, cuda_device):
    assert triton_available() or os.environ.get("VIDFLOW_NO_TRITON")
    frames = list(FileSource(clips["720p.mkv"], decoder="nvdec").frames(device=cuda_device))[:3]
    batch = torch.zeros(2, 3, 360, 640, dtype=torch.uint8, device=cuda_device)
    for f in frames:
        cpu = SourceFrame(f.info, f.data.cpu(), "nv12", f.matrix, f.full_range)
        for out in (batch[0], batch[1, :, 30:330, 40:600]):
            convert_into(f, out)
            ref = torch.zeros_like(out, device="cpu")
            convert_into(cpu, ref)
            assert (out.cpu().int() - ref.int()).abs().max() <= 1
        same = torch.empty(3, 720, 1280, dtype=torch.uint8, device=cuda_device)
        convert_into(f, same)
        assert torch.equal(same.cpu(), to_rgb(cpu))
    rgb = SourceFrame(FrameInfo(0, 0, 0.0, width=1280, height=720), same.permute(1, 2, 0).contiguous().permute(2, 0, 1))
    out = torch.empty(3, 360, 640, dtype=torch.uint8, device=cuda_device)
    convert_into(rgb, out)
    ref = torch.empty(3, 360, 640, dtype=torch.uint8)
    convert_into(SourceFrame(rgb.info, rgb.data.cpu()), ref)
    assert (out.cpu().int() - ref.int()).abs().max() <= 1


def test_nvdec_info_reports_h264(cuda_device):
    info = nvdec_info()
    assert info["available"], info["reason"]
    assert info["version"]
    h264 = info["codecs"]["h264"]
    assert "error" not in h264, h264
    assert h264.get("width_max", 4096) >= 1920, h264
