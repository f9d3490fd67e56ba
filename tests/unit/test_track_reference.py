"""The all-streams tracker gives the same tracks as the per-source one it replaced
(``tests/reference/track_v1.py``): equal object ids on every detection, equal tracker boxes and
confidences, on generated multi-stream scenes (64 streams at once, sources repeating inside a
batch, skipped and restarted frame numbers, resets, crowds that need the Hungarian step,
appearance embeddings, ``iou=0``, ``per_class=False``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference.track_v1 import ReferenceTracker
from vidflow.batch import TRACKER_BBOX, Batch, FrameInfo, Objects
from vidflow.stages.track import Tracker


class World:
    """Objects moving with noisy constant velocity in ``sources`` streams; ``frame(s)`` gives the
    next frame's detections of source ``s``: 10 % missed, 20 % low score, a few false positives."""

    def __init__(self, sources: int, objects: int, seed: int, *, area: float = 1920.0, size=(20, 150),
                 emb: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.area = area
        self.pos = r.uniform(0, area * 0.9, (sources, objects, 2))
        self.vel = r.normal(0, 4, (sources, objects, 2))
        self.size = r.uniform(size[0], size[1], (sources, objects, 2))
        self.cls = r.integers(0, 3, (sources, objects))
        self.emb = None
        if emb:
            e = r.normal(size=(sources, objects, emb))
            self.emb = e / np.linalg.norm(e, axis=2, keepdims=True)
        self.fnum = np.zeros(sources, dtype=np.int64)

    def frame(self, s: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        r, n = self.rng, self.pos.shape[1]
        self.vel[s] += r.normal(0, 0.3, (n, 2))
        self.pos[s] = np.clip(self.pos[s] + self.vel[s], 0, self.area * 0.9)
        keep = r.random(n) > 0.1
        b = np.c_[self.pos[s], self.pos[s] + self.size[s]][keep] + r.normal(0, 1.5, (int(keep.sum()), 4))
        c = np.where(r.random(len(b)) < 0.2, r.uniform(0.1, 0.5, len(b)), r.uniform(0.5, 1.0, len(b)))
        k = self.cls[s][keep]
        e = None if self.emb is None else self.emb[s][keep] + r.normal(0, 0.1, (len(b), self.emb.shape[2]))
        nfp = int(r.integers(0, 3))
        if nfp:
            p = r.uniform(0, self.area * 0.9, (nfp, 2))
            b = np.r_[b, np.c_[p, p + 30]]
            c = np.r_[c, r.uniform(0.2, 0.7, nfp)]
            k = np.r_[k, r.integers(0, 3, nfp)]
            if e is not None:
                e = np.r_[e, r.normal(size=(nfp, e.shape[1]))]
        num = int(self.fnum[s])
        self.fnum[s] += 1
        return num, b, c, k, e


def make_batch(rows: list[tuple], emb: bool) -> Batch:
    """``rows``: ``[(source_id, frame_num, boxes, conf, cls, emb), ...]``, one per frame."""
    fi = np.concatenate([np.full(len(r[2]), j) for j, r in enumerate(rows)]) if rows else np.zeros(0)
    cat = (lambda i, w: np.concatenate([r[i] for r in rows]).reshape(-1, *w)) if rows else \
        (lambda i, w: np.zeros((0, *w)))
    objs = Objects.create(frame_idx=torch.from_numpy(fi.astype(np.int64)),
                          bbox=torch.tensor(cat(2, (4,)), dtype=torch.float32),
                          confidence=torch.tensor(cat(3, ()), dtype=torch.float32),
                          class_id=torch.from_numpy(cat(4, ()).astype(np.int64)))
    if emb:
        objs = objs.with_attrs(**{"embed.vector": torch.tensor(np.concatenate([r[5] for r in rows]),
                                                               dtype=torch.float32)})
    infos = tuple(FrameInfo(s, n, n / 30, 0, 1920, 1080) for s, n, *_ in rows)
    return Batch(images=torch.zeros(len(rows), 3, 4, 4, dtype=torch.uint8), frames=infos, objects=objs)


def assert_same(new: Tracker, old: ReferenceTracker, batches) -> int:
    """Feed both trackers; every batch's ids equal exactly, boxes/confidences to 1e-9. Returns
    the number of tracked detections (so a scene that tracks nothing fails)."""
    tracked = 0
    for i, b in enumerate(batches):
        if callable(b):                # an action between batches (reset, ...)
            b(new), b(old)
            continue
        a, r = new(b).objects, old(b).objects
        assert torch.equal(a.object_id, r.object_id), f"batch {i}: ids differ"
        torch.testing.assert_close(a.attrs[TRACKER_BBOX], r.attrs[TRACKER_BBOX], rtol=0, atol=1e-9)
        torch.testing.assert_close(a.tracker_confidence, r.tracker_confidence, rtol=0, atol=1e-9)
        tracked += int((a.object_id >= 0).sum())
    return tracked


def scene(sources: int, objects: int, n_batches: int, bs: int, seed: int, *, order: str = "round",
          emb: int = 0, skip: float = 0.0, restart_at: int | None = None, str_ids: bool = False, **kw):
    w = World(sources, objects, seed, emb=emb, **kw)
    rng = np.random.default_rng(seed + 1000)
    sid = (lambda s: f"cam-{s}") if str_ids else (lambda s: s)
    out, k = [], 0
    for bi in range(n_batches):
        if restart_at is not None and bi == restart_at:
            w.fnum[: sources // 2] = 0                  # half the sources start over (a looped file)
        rows = []
        for _ in range(bs):
            s = k % sources if order == "round" else int(rng.integers(0, sources))
            k += 1
            if skip and rng.random() < skip:
                w.fnum[s] += int(rng.integers(1, 4))     # frames the muxer dropped
            num, b, c, cl, e = w.frame(s)
            rows.append((sid(s), num, b, c, cl, e))
        out.append(make_batch(rows, emb > 0))
    return out


def test_64_streams_at_once_give_the_per_source_tracks():
    batches = scene(64, 15, 30, 64, seed=1)
    assert assert_same(Tracker(), ReferenceTracker(), batches) > 64 * 15 * 10


def test_sources_repeating_in_a_batch_with_skipped_and_restarted_frames():
    batches = scene(6, 12, 50, 16, seed=2, order="random", skip=0.2, restart_at=25, str_ids=True)
    assert assert_same(Tracker(), ReferenceTracker(), batches) > 1000


def test_crowds_that_need_the_hungarian_step():
    # 40 big objects in a small area: many frames have competing pairs
    batches = scene(8, 40, 30, 8, seed=3, area=500.0, size=(60, 160))
    assert assert_same(Tracker(min_hits=2, max_age=10), ReferenceTracker(min_hits=2, max_age=10), batches) > 1000


@pytest.mark.parametrize("kw", [{"appearance": "embed.vector", "appearance_weight": 0.6, "iou": 0.1},
                                {"iou": 0.0, "per_class": False}, {"high": 0.6, "low": 0.3, "min_hits": 1}])
def test_options_give_the_per_source_tracks(kw):
    batches = scene(12, 10, 30, 12, seed=4, emb=8 if "appearance" in kw else 0, area=900.0)
    assert assert_same(Tracker(**kw), ReferenceTracker(**kw), batches) > 500


def test_resets_and_new_sources_mid_run():
    batches = scene(10, 10, 40, 10, seed=5)
    plan = batches[:10] + [lambda t: t.reset(3)] + batches[10:20] + [lambda t: t.reset()] + batches[20:]
    assert assert_same(Tracker(), ReferenceTracker(), plan) > 1000
    # a source that appears later gets ids from 0 as in the old tracker
    late = scene(3, 5, 10, 3, seed=6, str_ids=True)
    new, old = Tracker(), ReferenceTracker()
    assert_same(new, old, batches[:5])
    assert_same(new, old, late)
    for s in ("cam-0", 0, 9):
        torch.testing.assert_close(new.tracks(s)["bbox"], old.tracks(s)["bbox"], rtol=0, atol=1e-4)
        assert torch.equal(new.tracks(s)["object_id"], old.tracks(s)["object_id"])
