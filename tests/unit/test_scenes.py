"""Synthetic scenes: determinism, ground truth sanity, clips written with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidflow.scenes import CLASS_NAMES, Scene, load_ground_truth, make_clip


def test_render_is_deterministic_per_seed_and_frame():
    a, oa = Scene(320, 240, seed=4).render(7)
    b, ob = Scene(320, 240, seed=4).render(7)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and oa == ob
    c, _ = Scene(320, 240, seed=5).render(7)
    assert not np.array_equal(a, c)
    # rendering order does not matter
    s = Scene(320, 240, seed=4)
    s.render(30)
    assert np.array_equal(s.render(7)[0], a)


def test_ground_truth_is_sane_over_a_clip():
    w, h = 640, 360
    s = Scene(w, h, seed=11, fps=30)
    first = s.boxes(0)
    assert 3 <= len(first) <= 13
    k = w / 1920
    for i in range(0, 600, 7):
        objs = s.boxes(i)
        assert [o["object_id"] for o in objs] == list(range(len(first)))
        for o, o0 in zip(objs, first):
            x1, y1, x2, y2 = o["bbox"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert 50 * k * 0.69 <= max(x2 - x1, y2 - y1) <= 260 * k + 1e-6
            assert (o["class_id"], o["color"]) == (o0["class_id"], o0["color"])
            assert o["label"] == CLASS_NAMES[o["class_id"]]
    moved = [a["bbox"] != b["bbox"] for a, b in zip(s.boxes(0), s.boxes(5))]
    assert all(moved)


def test_num_objects_and_shapes_drawn_where_the_boxes_say():
    s = Scene(640, 480, seed=2, num_objects=1)
    img, objs = s.render(3)
    assert len(objs) == 1
    o = objs[0]
    x1, y1, x2, y2 = o["bbox"]
    # a point surely inside every shape: horizontally centred, 2/3 down (triangle centroid)
    cx, cy = int((x1 + x2) / 2), int(y1 + (y2 - y1) * 0.66)
    assert np.abs(img[cy, cx].astype(int) - np.array(o["color"])).max() <= 5
    with pytest.raises(ValueError, match="num_objects"):
        Scene(64, 64, num_objects=(5, 2))
    with pytest.raises(ValueError, match="width and height"):
        Scene(8, 64)


def test_noise_is_bounded():
    s = Scene(320, 240, seed=9, num_objects=0)
    a, _ = s.render(0)
    clean = s._background(0).astype(int)
    d = a.astype(int) - clean
    assert d.min() >= -5 and d.max() <= 5 and d.std() > 2


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts", ".h264"])
def test_make_clip_containers(tmp_path, suffix):
    clip = make_clip(tmp_path / f"c{suffix}", width=160, height=96, frames=12, fps=25, seed=3)
    with av.open(clip.path) as f:
        frames = list(f.decode(video=0))
    assert len(frames) == 12 == clip.frames
    assert (frames[0].width, frames[0].height) == (160, 96)
    gt = load_ground_truth(clip.path)
    assert [g["frame_num"] for g in gt] == list(range(12))
    assert gt[3]["pts"] == pytest.approx(3 / 25)
    assert gt == load_ground_truth(clip.gt_path)
    assert {"bbox", "class_id", "label", "object_id"} <= set(gt[0]["objects"][0])


def test_make_clip_bframes_and_colour_tags(tmp_path):
    clip = make_clip(tmp_path / "b.mp4", width=1280, height=720, frames=10, seed=1, bframes=True)
    with av.open(clip.path) as f:
        frames = list(f.decode(video=0))
    assert any(fr.pict_type == av.video.frame.PictureType.B for fr in frames)
    assert frames[0].colorspace == 1 and frames[0].color_range == 1     # BT.709, limited
    clip = make_clip(tmp_path / "p.mp4", width=320, height=240, frames=10, seed=1, bframes=False)
    with av.open(clip.path) as f:
        frames = list(f.decode(video=0))
    assert not any(fr.pict_type == av.video.frame.PictureType.B for fr in frames)
    with pytest.raises(ValueError, match="suffix"):
        make_clip(tmp_path / "x.gif")
