"""Tracker: ids, birth/death, ByteTrack's low-score pass, per-source state, no input mutation."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import TRACKER_BBOX, Batch, FrameInfo, Objects
from vidflow.stages.track import Tracker


def make_batch(frames: list[tuple[int | str, int, list[tuple]]]) -> Batch:
    """``frames``: ``[(source_id, frame_num, [(x1, y1, x2, y2, conf, cls), ...]), ...]``."""
    fi, bb, cf, cl = [], [], [], []
    for i, (_, _, dets) in enumerate(frames):
        for d in dets:
            fi.append(i), bb.append(d[:4]), cf.append(d[4]), cl.append(d[5] if len(d) > 5 else 0)
    objs = Objects.create(frame_idx=torch.tensor(fi, dtype=torch.int64),
                          bbox=torch.tensor(bb, dtype=torch.float32).reshape(-1, 4),
                          confidence=torch.tensor(cf, dtype=torch.float32), class_id=torch.tensor(cl))
    infos = tuple(FrameInfo(s, n, n / 30, 0, 640, 480) for s, n, _ in frames)
    return Batch(images=torch.zeros(len(frames), 3, 8, 8, dtype=torch.uint8), frames=infos, objects=objs)


def box(x: float, y: float, s: float = 40, conf: float = 0.9, cls: int = 0) -> tuple:
    return (x, y, x + s, y + s, conf, cls)


def run(tr: Tracker, frames: list[tuple], bs: int = 4) -> list[list[int]]:
    """Feed frames in batches of ``bs``; returns the object ids per frame."""
    ids = []
    for s in range(0, len(frames), bs):
        chunk = frames[s:s + bs]
        out = tr(make_batch(chunk)).objects
        for j in range(len(chunk)):
            ids.append(out.object_id[out.frame_idx == j].tolist())
    return ids


def test_single_object_keeps_one_id_and_boxes_are_kept_apart():
    tr = Tracker()
    frames = [(0, i, [box(10 + 5 * i, 20 + 2 * i)]) for i in range(20)]
    ids = run(tr, frames)
    assert ids == [[0]] * 20
    b = make_batch([(0, 20, [box(110, 60)])])
    before = b.objects.object_id.clone()
    out = tr(b)
    assert torch.equal(b.objects.object_id, before)  # input not mutated
    assert out.objects.object_id.tolist() == [0]
    assert torch.equal(out.objects.bbox, b.objects.bbox)  # detector box kept
    tb = out.objects.attrs[TRACKER_BBOX]
    assert tb.shape == (1, 4) and (tb - b.objects.bbox).abs().max() < 5  # Kalman box close
    assert 0.5 < out.objects.tracker_confidence.item() <= 1.0


def test_min_hits_delays_ids_after_the_first_frames():
    tr = Tracker(min_hits=3)
    frames = [(0, i, [box(10 + 5 * i, 20)] + ([box(300, 300 + 3 * i)] if i >= 10 else [])) for i in range(16)]
    ids = run(tr, frames)
    assert ids[0] == [0]
    assert ids[10] == [0, -1] and ids[11] == [0, -1]  # tentative for min_hits - 1 frames
    assert ids[12:] == [[0, 1]] * 4


def test_per_source_ids_and_reset():
    tr = Tracker()
    frames = []
    for i in range(6):
        frames.append((0, i, [box(10 + 4 * i, 10), box(200, 200 + 4 * i)]))
        frames.append(("cam-b", i, [box(50, 50 + 4 * i)]))
    ids = run(tr, frames, bs=4)
    assert all(x == [0, 1] for x in ids[0::2])  # source 0 counts 0, 1
    assert all(x == [0] for x in ids[1::2])  # source "cam-b" counts from 0 on its own
    tr.reset("cam-b")
    assert len(tr.tracks("cam-b")["object_id"]) == 0 and len(tr.tracks(0)["object_id"]) == 2
    ids = run(tr, [(0, 6, [box(34, 10), box(200, 224)]), ("cam-b", 6, [box(400, 400)])], bs=2)
    assert ids == [[0, 1], [0]]


def test_low_confidence_boxes_continue_tracks_but_never_start_them():
    tr = Tracker(high=0.5, low=0.1)
    frames = [(0, i, [box(10 + 5 * i, 20, conf=0.9 if i < 5 else 0.3)]) for i in range(12)]
    frames += [(0, 12, [box(300, 300, conf=0.3)])]  # a new low box: no track
    ids = run(tr, frames)
    assert ids[:12] == [[0]] * 12
    assert ids[12] == [-1]
    # below `low`: ignored entirely
    assert run(tr, [(0, 13, [box(75, 20, conf=0.05)])]) == [[-1]]


def test_missed_frames_keep_the_id_until_max_age():
    tr = Tracker(max_age=5)
    frames = [(0, i, [box(10 + 5 * i, 20)] if not 8 <= i < 12 else []) for i in range(16)]
    ids = run(tr, frames)
    assert ids[7] == [0] and ids[12] == [0]  # 4 missed frames < max_age: same id after the gap
    frames = [(0, i, [] if 16 <= i < 24 else [box(10 + 5 * i, 20)]) for i in range(16, 30)]
    ids = run(tr, frames)
    assert ids[-1] == [1]  # 8 missed frames > max_age: a new track


def test_skipped_frame_numbers_are_predicted_over():
    tr = Tracker()
    frames = [(0, 3 * i, [box(10 + 15 * i, 20)]) for i in range(10)]  # every 3rd frame, 15 px per step
    assert run(tr, frames) == [[0]] * 10


def test_crossing_objects_keep_their_ids():
    tr = Tracker()
    frames = [(0, i, [box(20 + 12 * i, 100, s=50), box(500 - 12 * i, 110, s=50)]) for i in range(40)]
    out = run(tr, frames)
    for i, ids in enumerate(out):  # rows are in the same order: 0 goes right, 1 goes left
        assert ids == [0, 1], (i, ids)


def test_classes_do_not_match_each_other():
    tr = Tracker(min_hits=1)
    ids = run(tr, [(0, 0, [box(10, 10, cls=0)]), (0, 1, [box(12, 10, cls=1)])], bs=1)
    assert ids == [[0], [1]]
    tr = Tracker(min_hits=1, per_class=False)
    assert run(tr, [(0, 0, [box(10, 10, cls=0)]), (0, 1, [box(12, 10, cls=1)])], bs=1) == [[0], [0]]


def test_going_back_in_time_restarts_the_source():
    tr = Tracker()
    run(tr, [(0, i, [box(10 + 5 * i, 20)]) for i in range(5)])
    assert run(tr, [(0, 0, [box(300, 300)])]) == [[0]]
    assert tr.tracks(0)["bbox"].shape == (1, 4)


def test_appearance_cost_needs_the_attribute_and_separates_lookalike_boxes():
    tr = Tracker(appearance="embed.vector")
    with pytest.raises(ValueError, match="embed.vector"):
        tr(make_batch([(0, 0, [box(10, 10)])]))
    # frame 2: the objects come close together; by IoU alone each would take the other's track
    tr = Tracker(appearance="embed.vector", appearance_weight=0.9, iou=0.1, min_hits=1)
    va, vb = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    ids = []
    for i, (pa, pb) in enumerate([(0, 30), (0, 30), (18, 12)]):
        b = make_batch([(0, i, [box(100 + pa, 100, s=60), box(100 + pb, 100, s=60)])])
        b = b.replace(objects=b.objects.with_attrs(**{"embed.vector": torch.stack([va, vb])}))
        ids.append(tr(b).objects.object_id.tolist())
    assert ids == [[0, 1], [0, 1], [0, 1]]
    tr = Tracker(iou=0.1, min_hits=1)  # motion only: swapped
    got = [tr(make_batch([(0, i, [box(100 + pa, 100, s=60), box(100 + pb, 100, s=60)])])).objects.object_id.tolist()
           for i, (pa, pb) in enumerate([(0, 30), (0, 30), (18, 12)])]
    assert got[-1] == [1, 0]


def test_empty_batches_and_bad_arguments():
    tr = Tracker()
    out = tr(make_batch([(0, 0, []), (1, 0, [])]))
    assert len(out.objects) == 0 and out.objects.attrs[TRACKER_BBOX].shape == (0, 4)
    for kw in ({"iou": 1.5}, {"low": 0.6, "high": 0.5}, {"min_hits": 0}, {"appearance_weight": 2}):
        with pytest.raises(ValueError):
            Tracker(**kw)


def test_objects_of_frames_outside_the_batch_are_a_clear_error():
    b = make_batch([(0, 0, [box(10, 10)]), (1, 0, [box(50, 50)])])
    bad = b.replace(objects=b.objects.replace(frame_idx=torch.tensor([0, 2])))
    with pytest.raises(ValueError, match=r"frame_idx must index the batch's 2 frames, got values from 0 to 2 \(1 of 2"):
        Tracker()(bad)
    assert Tracker()(b).objects.object_id.tolist() == [0, 0]
