"""``vidflow bench --live``'s parts on the CPU: the cameras' barcode read back by the glass clock
(through letterboxing), its send-time arithmetic, lost-frame counting, the process tree; and
NVDEC's low-latency choice (``low_latency_mode``) on real PyAV streams with and without B-frames."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.bench.live_meter import GlassClock, StreamCount, descendants, proc_table, tree_cpu_s
from vidflow.bench.live_serve import BITS, camera_picture, barcode_cells, encode_clip
from vidflow.ops.geometry import letterbox_placement
from vidflow.sources._nvdec import low_latency_mode
from vidflow.sources.uri import UriSource

W, H, FPS, FRAMES = 640, 360, 30, 90


def _batch(indices: list[int], ntp_ns: int, *, size: tuple[int, int] = (640, 640)) -> Batch:
    """Letterbox camera pictures of clip frames ``indices`` into a ``size`` batch, as the muxer does."""
    bg = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    place = letterbox_placement((W, H), size)
    nw, nh = place.new_size
    x0, y0 = (size[0] - nw) // 2, (size[1] - nh) // 2
    imgs = torch.full((len(indices), 3, size[1], size[0]), 114, dtype=torch.uint8)
    frames = []
    for k, i in enumerate(indices):
        pic = torch.from_numpy(camera_picture(bg, i)).permute(2, 0, 1)[None].float()
        small = torch.nn.functional.interpolate(pic, size=(nh, nw), mode="bilinear", align_corners=False)
        imgs[k, :, y0:y0 + nh, x0:x0 + nw] = small[0].round().clamp(0, 255).to(torch.uint8)
        frames.append(FrameInfo(k % 2, i, 0.0, ntp_ns, W, H, region=(x0, y0, x0 + nw, y0 + nh)))
    return Batch(imgs, tuple(frames))


def test_glass_clock_reads_each_frames_index_and_times_it_from_its_send():
    epoch = time.time() - 100.0                     # 100 s ago: loop 33 of a 3 s clip, frame 10
    clock = GlassClock(epoch=epoch, fps=FPS, frames=FRAMES, source_height=H)
    now = time.time()
    k = int((now - epoch) // 3.0)
    i_now = int(((now - epoch) - 3.0 * k) * FPS)
    sent = [(i_now - d) % FRAMES for d in (12, 3, 2)]   # sent ~0.4 s, ~0.1 s and ~0.07 s ago
    clock.open(at=now - 0.2)                         # the first one before the window: not counted
    clock.write(_batch(sent, time.time_ns()))
    clock.shut()
    lat, streams, unreadable, span = clock.collect()
    assert unreadable == 0 and 0.19 < span < 60
    assert len(lat) == 2 and all(0 < x < 3000 for x in lat), lat
    assert lat[0] > lat[1]                            # the older frame waited longer
    assert sorted(streams) == [0, 1] and all(s.seen == 1 for s in streams.values())
    assert clock.ever == {0: 2, 1: 1}                 # every frame, in the window or not


def test_glass_clock_counts_frames_sent_before_the_end_that_arrive_after_it():
    epoch = time.time() - 10.0
    clock = GlassClock(epoch=epoch, fps=FPS, frames=FRAMES, source_height=H)
    now = time.time()
    i_now = int(((now - epoch) % 3.0) * FPS)
    clock.open(at=now - 5.0)
    clock.shut(at=now - 0.2)                         # frames sent in the last 0.2 s: after the window
    clock.write(_batch([(i_now - 15) % FRAMES, (i_now - 1) % FRAMES], time.time_ns()))
    lat, streams, _, _ = clock.collect()
    assert len(lat) == 1 and lat[0] > 200 and list(streams) == [0]


def test_barcode_survives_scaling_for_every_index():
    clock = GlassClock(epoch=0.0, fps=FPS, frames=1 << BITS, source_height=H)
    idx = [0, 1, 2, 5, 255, 1024, 2047, (1 << BITS) - 1]
    b = _batch(idx, 0, size=(320, 320))               # scaled down to half
    assert clock.read_indices(b.images, b.frames) == idx
    xs, y = barcode_cells(H)
    assert len(xs) == BITS and 0 < y < 0.1


def test_stream_count_lost_frames():
    c = StreamCount()
    for n in (10, 11, 12, 20, 21):
        c.add(n)
    assert (c.seen, c.first, c.last, c.lost) == (5, 10, 21, 7)
    assert StreamCount().lost == 0


def test_process_tree_cpu_counts_children_and_leaves_out_excluded():
    busy = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)"
    a = subprocess.Popen([sys.executable, "-c", busy])
    b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_s([a.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        table = proc_table()
        kids = descendants(os.getpid(), (b.pid,), table)
        assert a.pid in kids and b.pid not in kids
        assert tree_cpu_s([a.pid], table) >= 0.29
    finally:
        a.kill()
        b.kill()
        a.wait()
        b.wait()


def test_encoded_clip_carries_the_barcode(tmp_path):
    path = encode_clip(tmp_path / "cam.ts", width=W, height=H, fps=FPS, seconds=1.0, gop=FPS, bitrate=500_000)
    clock = GlassClock(epoch=0.0, fps=FPS, frames=FPS, source_height=H)
    with av.open(str(path)) as c:
        pics = [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1) for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.has_b_frames == 0
    b = Batch(torch.stack(pics), tuple(FrameInfo(0, i, 0.0, 0, W, H) for i in range(len(pics))))
    assert clock.read_indices(b.images, b.frames) == list(range(FPS))


def _ts(tmp_path, name: str, bframes: int) -> str:
    path = str(tmp_path / name)
    with av.open(path, "w", format="mpegts") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 160, 128, "yuv420p"
        st.options = {"bf": str(bframes), "g": "30", "preset": "ultrafast"}
        for i in range(20):
            a = np.full((128, 160, 3), (i * 11) % 255, np.uint8)
            a[(i * 5) % 100:(i * 5) % 100 + 20, 10:40] = 255
            for pk in st.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    return path


def test_low_latency_mode_only_without_b_frames(tmp_path):
    nvc = SimpleNamespace(DisplayDecodeLatencyType=SimpleNamespace(LOW="low", NATIVE="native"),
                          VideoPacketFlag=SimpleNamespace(ENDOFPICTURE="eop"))
    with av.open(_ts(tmp_path, "ippp.ts", 0)) as c:
        assert low_latency_mode(nvc, c.streams.video[0]) == ("low", "eop")
        assert low_latency_mode(SimpleNamespace(), c.streams.video[0]) is None     # an older PyNvVideoCodec
    with av.open(_ts(tmp_path, "ibbp.ts", 2)) as c:
        assert low_latency_mode(nvc, c.streams.video[0]) is None


def test_live_sources_default_to_low_latency():
    assert UriSource("tcp://127.0.0.1:9").low_latency is True
    assert UriSource("rtsp://cam/x").low_latency is True
    assert UriSource("clip.mp4").low_latency is False
    assert UriSource("tcp://127.0.0.1:9", low_latency=False).low_latency is False
    with pytest.raises(ValueError, match="low_latency"):
        UriSource("tcp://127.0.0.1:9", low_latency="yes")  # type: ignore[arg-type]


def test_cameras_join_at_the_next_keyframe_on_the_shared_clock(tmp_path):
    from vidflow.bench.live_serve import Clip

    clip = Clip(encode_clip(tmp_path / "cam.ts", width=160, height=128, fps=10, seconds=2.0, gop=5, bitrate=100_000),
                10, 5)
    assert clip.frames == 20 and clip.keyframes == [0, 5, 10, 15]
    assert [clip.next_keyframe(x) for x in (0, 0.5, 5, 6, 16, 19.2, 20, 41)] == [0, 5, 5, 10, 20, 20, 20, 45]
