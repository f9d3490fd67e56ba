"""Live streams on NVDEC (``VIDFLOW_REQUIRE_CUDA=1``): H.264 and HEVC over MPEG-TS/TCP through
decode processes, equal (PSNR >= 40 dB) to FFmpeg's pictures of the same packets; a resolution
change and a reconnect on NVDEC; the fallback to FFmpeg for a stream NVDEC cannot take."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ts_server import TsServer, encode_big_pictures, encode_clip  # noqa: E402

from vidflow.errors import DecodeError  # noqa: E402
from vidflow.mux import Muxer  # noqa: E402
from vidflow.ops.color import to_rgb  # noqa: E402
from vidflow.pipeline import Pipeline  # noqa: E402
from vidflow.sources.uri import UriSource  # noqa: E402
from vidflow.testing import MemorySink  # noqa: E402

pytestmark = pytest.mark.gpu
W, H = 640, 360


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _reference(path) -> list[np.ndarray]:
    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("live_nvdec")
    return {
        "h264": encode_clip(d / "h264.ts", codec="h264", width=W, height=H, seconds=1.0, seed=1),
        "hevc": encode_clip(d / "hevc.ts", codec="hevc", width=W, height=H, seconds=1.0, seed=2),
        "large": encode_clip(d / "large.ts", codec="h264", width=960, height=544, seconds=1.0, seed=3),
        "big": encode_big_pictures(d / "big.ts", n=6, gop=3),
    }


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_live_on_nvdec_through_decode_processes_equals_ffmpeg(clips, cuda_device, codec):
    ref = _reference(clips[codec])
    with TsServer([clips[codec]], loop=False, pace=0) as srv:      # every packet once, from a keyframe
        src = UriSource(srv.url, decoder="nvdec", live=True, reconnect=False)
        sink = MemorySink()
        p = Pipeline([src], muxer=Muxer(batch_size=4, max_wait_ms=20, size=(W, H)), sinks=[sink],
                     device=cuda_device, decode_processes=1, queue_size=64)
        p.run()
    images = [img for b in sink.batches for img in b.images]
    assert src.backend == "nvdec"
    assert len(images) == len(ref), (len(images), len(ref))
    worst = min(_psnr(img.permute(1, 2, 0).cpu().numpy(), r) for img, r in zip(images, ref))
    assert worst >= 40.0, f"{codec}: worst frame PSNR {worst:.1f} dB"


def test_resolution_change_and_reconnect_on_nvdec(clips, cuda_device):
    srv = TsServer([clips["h264"], clips["large"]]).start()
    port = srv.port
    src = UriSource(srv.url, decoder="nvdec", backoff=(0.1, 0.5), read_timeout=2.0, stall_timeout=3.0)
    frames, sizes = [], []
    gen = src.frames(device=cuda_device, source_id=0)
    try:
        for f in gen:
            assert f.format == "nv12" and f.data.is_cuda
            rgb = to_rgb(f)                              # reads the picture: must be valid memory
            sizes.append((f.info.width, f.info.height, tuple(rgb.shape)))
            frames.append(f.info)
            if len(frames) == 70:                         # both sizes seen: the camera goes away
                srv.stop()
                srv = TsServer([clips["large"]], port=port).start()
            if len(frames) >= 100:
                break
    finally:
        gen.close()
        srv.stop()
    torch.cuda.synchronize()                             # no CUDA error left behind
    assert (W, H, (3, H, W)) in sizes and (960, 544, (3, 544, 960)) in sizes
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
    assert [i.frame_num for i in frames] == list(range(len(frames)))
    c = src.stats()
    assert c.reconnects == 1 and c.backend == "nvdec", c


def test_auto_falls_back_to_ffmpeg_for_a_stream_nvdec_cannot_take(tmp_path, cuda_device, caplog):
    path = tmp_path / "yuv444.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv444p"
        for i in range(30):
            a = np.full((240, 320, 3), (i * 8) % 255, np.uint8)
            for pk in st.encode(av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv444p")):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    with TsServer([path], loop=False, pace=0) as srv:
        src = UriSource(f"{srv.url}", live=True, reconnect=False)
        with caplog.at_level(logging.WARNING, logger="vidflow.sources"):
            frames = list(src.frames(device=cuda_device, source_id="cam444"))
    assert src.backend == "ffmpeg" and len(frames) == 30 and all(f.format == "rgb" for f in frames)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "NVDEC" in r.getMessage()]
    assert len(warnings) == 1 and "cam444" in warnings[0]
    with TsServer([path], loop=False, pace=0) as srv:
        with pytest.raises(DecodeError, match="NVDEC"):
            list(UriSource(srv.url, decoder="nvdec", live=True, reconnect=False).frames(device=cuda_device, source_id=1))


@pytest.mark.parametrize("low_delay", [False, True], ids=["parser", "noparse"])
@pytest.mark.parametrize("codec", ["h264", "hevc", "big"])
def test_low_latency_nvdec_gives_each_packets_picture_at_once_equal_to_ffmpeg(clips, cuda_device, codec, low_delay):
    """low_latency (live sources' default): NVDEC's LOW display latency + ENDOFPICTURE packets on
    a stream without B-frames: every ``decode(packet)`` returns that packet's picture, none held
    back; the pictures equal FFmpeg's. ``noparse`` is how live MPEG-TS is read; ``big`` has
    pictures the demuxer cuts in pieces without its parser (joined again by the demux layer:
    before that, 1080p live H.264 on the H200 gave "Decode Error" at every keyframe)."""
    from vidflow.sources._demux import Demuxer
    from vidflow.sources._nvdec import NvdecDecoder

    ref = _reference(clips[codec])
    demux = Demuxer(str(clips[codec]), uri=str(clips[codec]), source_id=0, max_pixels=1 << 24, options={},
                    timeout=(5.0, 5.0), file=True, low_delay=low_delay)
    demux.open()
    assert demux.parser is not low_delay
    try:
        dec = NvdecDecoder(demux.stream, cuda_device, low_latency=True)
        assert dec.low_latency, "this PyNvVideoCodec has no DisplayDecodeLatencyType.LOW / ENDOFPICTURE"
        got, per_packet = [], []
        for packet in demux.packets():
            if not packet.size:
                continue
            out = dec.decode(packet)
            per_packet.append(len(out))
            got += out
        tail = dec.flush()
        dec.close()
    finally:
        demux.close()
    assert per_packet == [1] * len(per_packet) and not tail, (per_packet[:12], len(tail))
    assert len(got) == len(ref)
    from vidflow.batch import FrameInfo
    from vidflow.frame import SourceFrame
    worst = min(_psnr(to_rgb(SourceFrame(FrameInfo(0, i, 0.0, 0, d.width, d.height), d.data, "nv12")).permute(1, 2, 0)
                      .cpu().numpy(), r) for i, (d, r) in enumerate(zip(got, ref)))
    assert worst >= 40.0, f"{codec}: worst frame PSNR {worst:.1f} dB"


def test_low_latency_is_off_for_a_stream_with_b_frames(tmp_path, cuda_device):
    from vidflow.sources._demux import Demuxer
    from vidflow.sources._nvdec import NvdecDecoder

    path = tmp_path / "bframes.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
        st.options = {"bf": "2", "g": "30"}
        for i in range(30):
            a = np.full((240, 320, 3), (i * 8) % 255, np.uint8)
            for pk in st.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    demux = Demuxer(str(path), uri=str(path), source_id=0, max_pixels=1 << 24, options={}, timeout=(5.0, 5.0),
                    file=True)
    demux.open()
    try:
        dec = NvdecDecoder(demux.stream, cuda_device, low_latency=True)
        assert not dec.low_latency
        n = sum(len(dec.decode(p)) for p in demux.packets() if p.size) + len(dec.flush())
        dec.close()
    finally:
        demux.close()
    assert n == 30

