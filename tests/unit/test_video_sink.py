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
    assert nvenc_available() is (False if not torch.cuda.is_available() else nvenc_available())
    sink = VideoSink(tmp_path / "a.mp4", encoder="nvenc")
    with pytest.raises(SinkError, match="nvenc"):
        sink.write(next(scene_batches(1, 1)))
    sink.close()
    # a failure on the encoder thread (here: the output path is a directory) surfaces as SinkError
    (tmp_path / "d.mp4").mkdir()
    sink = VideoSink(tmp_path / "d.mp4", rows=1, cols=1, encoder="pyav")
    with pytest.raises(SinkError):
        for b in scene_batches(3, 1):
            sink.write(b)
        sink.close()
