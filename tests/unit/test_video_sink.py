"""sinks.video: per-source and tiled MP4 output; decoded frames show boxes where the ground truth
says (pixel test); worker errors surface; argument checks."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.errors import SinkError
from vidflow.ops.draw import PALETTE
from vidflow.scenes import CLASS_NAMES, Scene
from vidflow.sinks.video import VideoSink, nvenc_available

W, H = 640, 480


def scene_batches(n_frames=6, sources=2):
    """Batches of rendered scene frames whose objects are the ground truth (tracked ids)."""
    scenes = [Scene(W, H, seed=10 + s, num_objects=5) for s in range(sources)]
    for i in range(n_frames):
        imgs, fi, boxes, cls, ids = [], [], [], [], []
        for s, sc in enumerate(scenes):
            rgb, objs = sc.render(i)
            imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
            for o in objs:
                fi.append(s), boxes.append(o["bbox"]), cls.append(o["class_id"]), ids.append(o["object_id"])
        frames = tuple(FrameInfo(s, i, i / 30, width=W, height=H) for s in range(sources))
        objects = Objects.create(frame_idx=torch.tensor(fi), bbox=torch.tensor(boxes), class_id=torch.tensor(cls),
                                 object_id=torch.tensor(ids))
        yield Batch(images=torch.stack(imgs).contiguous(), frames=frames, objects=objects,
                    labels={"objects": CLASS_NAMES})


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def edge_error(img: np.ndarray, bbox, color, ox=0, oy=0, scale=1.0) -> float:
    """Mean abs difference between ``color`` and the pixels on the middle of the box's top and
    left edges (2 px lines), after mapping the box by ``scale`` and offset."""
    x1, y1, x2, y2 = (np.array(bbox) * scale + [ox, oy, ox, oy]).round().astype(int)
    top = img[y1:y1 + 2, x1 + 8:x2 - 8].reshape(-1, 3)
    left = img[y1 + 20:y2 - 8, x1:x1 + 2].reshape(-1, 3)  # below the caption
    px = np.concatenate([top, left]).astype(np.float32)
    # median over pixels: robust to other objects' outlines crossing this one
    return float(np.median(np.abs(px - np.array(color, np.float32)).mean(1)))


def _testable(o) -> bool:
    """Big enough to sample its edges, and its caption sits above it (not over its top edge)."""
    x1, y1, x2, y2 = o["bbox"]
    return x2 - x1 >= 30 and y2 - y1 >= 40 and y1 >= 14


def test_per_source_files_show_boxes_where_ground_truth_says(tmp_path):
    batches = list(scene_batches())
    before = [b.images.clone() for b in batches]
    with VideoSink(tmp_path / "cams", tiled=False, fps=30) as sink:
        for b in batches:
            sink.write(b)
    for b, img in zip(batches, before):
        assert torch.equal(b.images, img)  # the sink draws on a copy
    assert sink.frames_written == 12
    for s in range(2):
        frames = decode(tmp_path / "cams" / f"{s}.mp4")
        assert len(frames) == 6 and frames[0].shape == (H, W, 3)
        scene = Scene(W, H, seed=10 + s, num_objects=5)
        errs, base = [], []
        for i in (0, 5):
            rgb, objs = scene.render(i)
            for o in objs:
                if not _testable(o):
                    continue
                color = PALETTE[o["object_id"] % len(PALETTE)]
                errs.append(edge_error(frames[i], o["bbox"], color))
                base.append(edge_error(rgb, o["bbox"], color))  # same pixels without drawing
        assert errs, "no box large enough to test"
        # the box colour is on the box's edges (4:2:0 chroma on a busy background blurs 2 px
        # lines, so "much closer than before drawing" rather than exact)
        for e, b0 in zip(errs, base):
            assert e < 0.6 * b0 and e < 50, (errs, base)


def test_tiled_file(tmp_path):
    out = tmp_path / "tiled.mp4"
    with VideoSink(out, rows=1, cols=2, size=(2 * W, H), fps=30) as sink:
        for b in scene_batches():
            sink.write(b)
    frames = decode(out)
    assert len(frames) == 6 and frames[0].shape == (H, 2 * W, 3)
    scene = Scene(W, H, seed=11, num_objects=5)  # source 1 -> the right cell, at (W, 0)
    rgb, objs = scene.render(3)
    big = [o for o in objs if _testable(o)]
    assert big
    for o in big:
        color = PALETTE[o["object_id"] % len(PALETTE)]
        e, b0 = edge_error(frames[3], o["bbox"], color, ox=W), edge_error(rgb, o["bbox"], color)
        assert e < 0.6 * b0 and e < 50, (e, b0)


def test_pattern_and_no_draw(tmp_path):
    b = next(scene_batches(1, 1))
    with VideoSink(str(tmp_path / "cam-{source_id}.mp4"), tiled=False, draw=False) as sink:
        sink.write(b)
    frame = decode(tmp_path / "cam-0.mp4")[0]
    ref = b.images[0].permute(1, 2, 0).numpy().astype(np.float32)
    assert np.abs(frame.astype(np.float32) - ref).mean() < 8  # undrawn, only coding error


def test_in_place_edit_reaches_the_video(tmp_path):
    # a user edits the frame in place (numpy view through DLPack): the sink encodes the edit
    b = next(scene_batches(1, 1))
    view = np.from_dlpack(b.images[0])
    view[:, 100:140, 100:180] = np.array([255, 0, 255], np.uint8)[:, None, None]
    with VideoSink(tmp_path / "v", tiled=False, draw=False) as sink:
        sink.write(b)
    frame = decode(tmp_path / "v" / "0.mp4")[0]
    assert np.abs(frame[105:135, 105:175].astype(int) - [255, 0, 255]).mean() < 12


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="codec"):
        VideoSink(tmp_path / "a.mp4", codec="vp9")
    with pytest.raises(ValueError, match="encoder"):
        VideoSink(tmp_path / "a.mp4", encoder="x")
    with pytest.raises(ValueError, match="source_id"):
        VideoSink(tmp_path / "{source_id}.mp4", tiled=True)
    with pytest.raises(ValueError, match="rows and cols"):
        VideoSink(tmp_path / "a.mp4", rows=2)
    if not torch.cuda.is_available():
        assert nvenc_available() is False
    # no NVENC writer (it never ran anywhere): refused when built, naming the CPU encoder
    with pytest.raises(ValueError, match=r"encoder='nvenc' is not available.*encoder='pyav'"):
        VideoSink(tmp_path / "a.mp4", encoder="nvenc")
    # a failure on the encoder thread (here: the output path is a directory) surfaces as SinkError
    (tmp_path / "d.mp4").mkdir()
    sink = VideoSink(tmp_path / "d.mp4", rows=1, cols=1, encoder="pyav")
    with pytest.raises(SinkError):
        for b in scene_batches(3, 1):
            sink.write(b)
        sink.close()


# ---- faithful output: timing and size follow the sources; killed writers leave playable files --
def _frames_at(n, *, w, h, bw=None, bh=None, region=None, fps=25.0, sid=0, start=0):
    """Single-source batches of ``n`` frames: a ``w x h`` source shown in a ``bw x bh`` batch image."""
    bw, bh = bw or w, bh or h
    for i in range(start, start + n):
        img = torch.full((1, 3, bh, bw), 40, dtype=torch.uint8)
        img[:, :, :, : bw // 2] = 200
        yield Batch(images=img, frames=(FrameInfo(sid, i, i / fps, 0, w, h, region),), objects=Objects.empty("cpu"))


def _probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ts = [float(f.pts * f.time_base) for f in c.decode(s)]
        return s.codec_context.width, s.codec_context.height, ts


def test_timing_follows_the_source_pts(tmp_path):
    with VideoSink(tmp_path / "v", tiled=False, draw=False) as sink:
        for b in _frames_at(50, w=320, h=240, fps=25.0):
            sink.write(b)
    w, h, ts = _probe(tmp_path / "v" / "0.mp4")
    assert (w, h) == (320, 240) and len(ts) == 50
    assert ts[-1] - ts[0] == pytest.approx(49 / 25, abs=1e-3)      # 25 fps, 2 s: not 30 fps / 1.63 s
    with VideoSink(tmp_path / "c", tiled=False, draw=False, fps=10) as sink:   # forced constant rate
        for b in _frames_at(20, w=64, h=48, fps=25.0):
            sink.write(b)
    ts = _probe(tmp_path / "c" / "0.mp4")[2]
    assert ts[-1] - ts[0] == pytest.approx(1.9, abs=1e-3)


def test_size_follows_the_source_no_upscale_aspect_kept(tmp_path):
    # a 320x240 source the muxer scaled up to 640x480: written at 320x240 unless upscale=True
    with VideoSink(tmp_path / "a", tiled=False, draw=False) as sink:
        for b in _frames_at(3, w=320, h=240, bw=640, bh=480, region=(0, 0, 640, 480)):
            sink.write(b)
    assert _probe(tmp_path / "a" / "0.mp4")[:2] == (320, 240)
    with VideoSink(tmp_path / "b", tiled=False, draw=False, upscale=True) as sink:
        for b in _frames_at(3, w=320, h=240, bw=640, bh=480, region=(0, 0, 640, 480)):
            sink.write(b)
    assert _probe(tmp_path / "b" / "0.mp4")[:2] == (640, 480)
    # a 16:9 source letterboxed in a 4:3 batch image: the file is the 16:9 picture, no bars
    with VideoSink(tmp_path / "c", tiled=False, draw=False) as sink:
        for b in _frames_at(3, w=640, h=360, bw=640, bh=480, region=(0, 60, 640, 420)):
            sink.write(b)
    assert _probe(tmp_path / "c" / "0.mp4")[:2] == (640, 360)


def test_tiled_default_size_from_sources(tmp_path):
    out = tmp_path / "t.mp4"
    with VideoSink(out, draw=False) as sink:
        for a, b in zip(_frames_at(4, w=320, h=240, sid=0), _frames_at(4, w=320, h=240, sid=1)):
            sink.write(Batch(images=torch.cat([a.images, b.images]), frames=a.frames + b.frames,
                             objects=Objects.empty("cpu")))
    w, h, ts = _probe(out)
    assert (w, h) == (640, 240) and len(ts) == 4 and ts[-1] - ts[0] == pytest.approx(3 / 25, abs=1e-3)


def test_overlay_draws_camera_name_time_fps(tmp_path):
    for ov in (False, True):
        with VideoSink(tmp_path / f"o{ov}", tiled=False, draw=False, overlay=ov, names={0: "gate"}) as sink:
            for b in _frames_at(3, w=320, h=240):
                sink.write(b)
    plain, over = decode(tmp_path / "oFalse" / "0.mp4")[2], decode(tmp_path / "oTrue" / "0.mp4")[2]
    band = np.abs(over[2:14, 2:200].astype(int) - plain[2:14, 2:200].astype(int)).mean()
    assert band > 20 and np.abs(over[100:].astype(int) - plain[100:].astype(int)).mean() < 2


KILL_CHILD = """
import os, sys, time
sys.path[:0] = [{root!r}, {src!r}]
from tests.unit.test_video_sink import _frames_at
from vidflow.sinks.video import VideoSink
sink = VideoSink({path!r}, tiled=False, draw=False, encoder="pyav", keyframe_s=1.0)
for b in _frames_at(150, w=160, h=120, fps=25.0):
    sink.write(b)
while sink.stats()["written"] < 150:
    time.sleep(0.01)
print("written", flush=True)
time.sleep(600)
"""


def test_killed_writer_leaves_a_playable_file(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = KILL_CHILD.format(root=str(root), src=str(root / "src"), path=str(tmp_path / "k"))
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "written"
        finally:
            p.kill()                    # (leaving the block closes its stdout and waits for it)
    w, h, ts = _probe(tmp_path / "k" / "0.mp4")        # never finalised, still opens and decodes
    assert (w, h) == (160, 120)
    assert 100 <= len(ts) <= 150 and ts == sorted(ts)   # at most the last fragments (+ x264 lookahead) lost


def test_encoder_failure_is_isolated_until_close(tmp_path):
    (tmp_path / "f").write_text("not a folder")
    sink = VideoSink(tmp_path / "f" / "out.mp4", rows=1, cols=1, encoder="pyav")
    for b in scene_batches(4, 1):
        sink.write(b)                                   # never raises with on_error="isolate"
    from tests.unit._brokers import wait_until
    wait_until(lambda: sink.stats()["state"] == "failed", what="the encoder failure")
    with pytest.raises(SinkError, match="video"):
        sink.close()


def test_captions_placed_apart():
    from vidflow.sinks._labels import place_labels

    # five boxes stacked 4 px apart: their "above" spots collide, the placement spreads them
    boxes = np.array([[50, 40 + 4 * i, 150, 100 + 4 * i] for i in range(5)], np.float32)
    wh = np.full((5, 2), (60, 10), np.float32)
    pos = place_labels(boxes, wh, np.zeros(5, int), (320, 240))
    rects = [(x, y, x + 60, y + 10) for x, y in pos]
    for i in range(5):
        assert 0 <= rects[i][0] and rects[i][2] <= 320 and 0 <= rects[i][1] and rects[i][3] <= 240
        for j in range(i):
            a, b = rects[i], rects[j]
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    # other frames don't collide with this one
    pos2 = place_labels(boxes[[0, 0]], wh[:2], np.array([0, 1]), (320, 240))
    assert np.array_equal(pos2[0], pos2[1])


def test_small_source_captions_stay_legible(tmp_path):
    # a 160x120 source shown 4x larger in the batch: captions are drawn 4x so that the written
    # 160x120 file still has 8 px glyphs (a caption band of >= 8 rows in the box colour)
    img = torch.full((1, 3, 480, 640), 128, dtype=torch.uint8)
    objs = Objects.create(frame_idx=torch.tensor([0]), bbox=torch.tensor([[40.0, 50.0, 120.0, 110.0]]),
                          class_id=torch.tensor([0]), object_id=torch.tensor([3]))
    b = Batch(images=img, frames=(FrameInfo(0, 0, 0.0, 0, 160, 120, (0, 0, 640, 480)),), objects=objs,
              labels={"objects": ("box",)})
    with VideoSink(tmp_path / "s", tiled=False) as sink:
        sink.write(b)
    frame = decode(tmp_path / "s" / "0.mp4")[0]
    assert frame.shape == (120, 160, 3)
    color = np.array(PALETTE[3 % len(PALETTE)], np.float32)
    rows = [y for y in range(0, 50) if (np.abs(frame[y, 40:100].astype(np.float32) - color).mean(1) < 40).mean() > 0.3]
    assert len(rows) >= 8, rows
