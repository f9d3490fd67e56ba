"""Multi-object tracking quality (py-motmetrics) on generated scenes with occlusions and crossings.

1. The tracker alone, on ground-truth boxes made noisy (jitter, 5 % misses, false positives,
   hidden objects not detected): long sequences, no video, seconds.
2. The whole pipeline (H.264 clip -> decode -> demo detector -> tracker) on two clips decoded
   side by side (90 frames each; ``VIDFLOW_MOT_FRAMES`` sets more, e.g. on a GPU).

Ground-truth objects mostly hidden by objects drawn over them (visible < 30 %) are "don't care"
(as MOTChallenge's ignore regions): they are removed, and so are hypotheses matched to them.
Targets: MOTA >= 0.9, IDF1 >= 0.85. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

motmetrics = pytest.importorskip("motmetrics")

from vidflow.batch import Batch, FrameInfo, Objects  # noqa: E402
from vidflow.ops.nms import box_iou as _box_iou  # noqa: E402
from vidflow.scenes import Scene  # noqa: E402
from vidflow.stages.track import Tracker  # noqa: E402


def visibility(boxes: np.ndarray) -> np.ndarray:
    """Approximate visible fraction of each box ``[G,4]`` (later boxes are drawn on top), ``[G]``:
    an 8x8 grid of points per box, tested against every later box at once."""
    g = len(boxes)
    if g == 0:
        return np.ones(0)
    t = (np.arange(8) + 0.5) / 8
    px = boxes[:, 0, None, None] + t[None, None, :] * (boxes[:, 2] - boxes[:, 0])[:, None, None]  # [G,1,8]
    py = boxes[:, 1, None, None] + t[None, :, None] * (boxes[:, 3] - boxes[:, 1])[:, None, None]  # [G,8,1]
    px, py = np.broadcast_to(px, (g, 8, 8)).reshape(g, 64), np.broadcast_to(py, (g, 8, 8)).reshape(g, 64)
    inside = ((px[:, :, None] >= boxes[None, None, :, 0]) & (px[:, :, None] < boxes[None, None, :, 2])
              & (py[:, :, None] >= boxes[None, None, :, 1]) & (py[:, :, None] < boxes[None, None, :, 3]))
    later = np.arange(g)[None, :] > np.arange(g)[:, None]  # [G (point owner), G (cover)]
    covered = (inside & later[:, None, :]).any(2)  # [G, 64]
    return 1 - covered.mean(1)


def box_iou(a, b):
    return _box_iou(a, b).nan_to_num(0.0)   # degenerate (zero-area) boxes: IoU 0


def mot_metrics(gt: list[list[dict]], hyp: list[tuple[np.ndarray, list[int]]], min_vis: float = 0.3) -> dict:
    """``gt[f]``: ground-truth objects of frame f (scene dicts, drawing order); ``hyp[f]``:
    ``(boxes [H,4], ids)``. Returns MOTA, IDF1, ID switches, ... (IoU >= 0.5 matches)."""
    acc = motmetrics.MOTAccumulator(auto_id=True)
    overlaps = ignored = 0
    for objs, (hb, hid) in zip(gt, hyp):
        gb = np.array([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4)
        gid = np.array([o["object_id"] for o in objs])
        hb = np.asarray(hb, dtype=np.float64).reshape(-1, 4)
        hid = np.asarray(hid)
        vis = visibility(gb)
        hidden = vis < min_vis
        overlaps += int((vis < 1).sum())
        ignored += int(hidden.sum())
        if hidden.any() and len(hb):  # drop hypotheses on ignored (hidden) ground truth
            iou_h = box_iou(torch.from_numpy(gb[hidden]), torch.from_numpy(hb)).numpy()
            iou_v = box_iou(torch.from_numpy(gb[~hidden]), torch.from_numpy(hb)).numpy()
            best_v = iou_v.max(0) if len(iou_v) else np.zeros(len(hb))
            drop = (iou_h.max(0) >= 0.5) & (iou_h.max(0) > best_v)
            hb, hid = hb[~drop], hid[~drop]
        gb, gid = gb[~hidden], gid[~hidden]
        iou = box_iou(torch.from_numpy(gb), torch.from_numpy(hb)).numpy()
        acc.update(gid.tolist(), hid.tolist(), np.where(iou >= 0.5, 1 - iou, np.nan))
    names = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "num_objects", "mostly_tracked"]
    r = motmetrics.metrics.create().compute(acc, metrics=names, name="x").to_dict("records")[0]
    return {**r, "occluded": overlaps, "ignored": ignored}


def report(what: str, r: dict) -> str:
    return (f"\n{what}: MOTA {r['mota']:.3f} IDF1 {r['idf1']:.3f} IDsw {r['num_switches']} "
            f"FP {r['num_false_positives']} FN {r['num_misses']} of {r['num_objects']} GT boxes "
            f"({r['occluded']} partly occluded, {r['ignored']} hidden >70 % ignored)")


def noisy_detections(scene: Scene, i: int, rng: np.random.Generator) -> tuple[list[dict], list[tuple]]:
    gt = scene.boxes(i)
    boxes = np.array([o["bbox"] for o in gt]).reshape(-1, 4)
    vis = visibility(boxes)
    dets = []
    for o, v in zip(gt, vis):
        if v < 0.3 or rng.random() < 0.05:  # hidden, or missed by the "detector"
            continue
        wh = np.array(o["bbox"][2:]) - np.array(o["bbox"][:2])
        b = np.array(o["bbox"]) + rng.normal(0, 0.03, 4) * np.r_[wh, wh]
        low = v < 0.6 or rng.random() < 0.15  # partly hidden objects (and some others) score low
        dets.append((*b, rng.uniform(0.15, 0.5) if low else rng.uniform(0.5, 1.0), o["class_id"]))
    if rng.random() < 0.1:  # a false positive
        x, y = rng.uniform(0, scene.width - 40), rng.uniform(0, scene.height - 40)
        dets.append((x, y, x + 30, y + 30, rng.uniform(0.2, 0.6), int(rng.integers(0, 3))))
    return gt, dets


@pytest.mark.parametrize("seed", [3, 8])
def test_tracker_on_noisy_ground_truth(seed):
    scene = Scene(1280, 720, seed=seed, num_objects=12)
    rng = np.random.default_rng(seed)
    tracker, gts, hyp, bs = Tracker(), [], [], 8
    for s in range(0, 600, bs):
        fi, dets = [], []
        for j in range(bs):
            gt, d = noisy_detections(scene, s + j, rng)
            gts.append(gt)
            fi += [j] * len(d)
            dets += d
        d = torch.tensor(dets, dtype=torch.float32).reshape(-1, 6)
        objs = Objects.create(frame_idx=torch.tensor(fi), bbox=d[:, :4], confidence=d[:, 4], class_id=d[:, 5])
        infos = tuple(FrameInfo(0, s + j, (s + j) / 30, 0, 1280, 720) for j in range(bs))
        out = tracker(Batch(images=torch.zeros(bs, 3, 4, 4, dtype=torch.uint8), frames=infos, objects=objs)).objects
        for j in range(bs):
            m = (out.frame_idx == j) & (out.object_id >= 0)
            hyp.append((out.bbox[m].numpy(), out.object_id[m].tolist()))
    r = mot_metrics(gts, hyp)
    print(report(f"noisy GT seed {seed}, 600 frames", r))
    assert r["mota"] >= 0.9 and r["idf1"] >= 0.85


def _demo_detector_available() -> bool:
    from importlib.resources import files

    return files("vidflow").joinpath("models/demo_detector.pt").is_file()


@pytest.mark.skipif(not _demo_detector_available(), reason="demo detector weights not trained yet")
def test_pipeline_with_demo_detector(tmp_path):
    from vidflow.mux import Muxer
    from vidflow.pipeline import Pipeline
    from vidflow.scenes import load_ground_truth, make_clip
    from vidflow.sources.file import FileSource
    from vidflow.stages.detect import Detector
    from vidflow.testing import MemorySink

    frames = int(os.environ.get("VIDFLOW_MOT_FRAMES", "90"))  # longer on a GPU
    clips = [make_clip(tmp_path / f"c{s}.mp4", width=640, height=480, frames=frames, seed=s, num_objects=(8, 10))
             for s in (11, 12)]
    sink = MemorySink(keep_images=False)
    pipe = Pipeline(sources=[FileSource(c.path) for c in clips], muxer=Muxer(batch_size=8, max_wait_ms=1000),
                    stages=[Detector("demo"), Tracker()], sinks=[sink], device="auto")
    pipe.run()
    for sid, clip in enumerate(clips):
        hyp: dict[int, tuple] = {}
        for b in sink.batches:
            for j, f in enumerate(b.frames):
                if f.source_id == sid:
                    m = (b.objects.frame_idx == j) & (b.objects.object_id >= 0)
                    hyp[f.frame_num] = (b.objects.bbox[m].cpu().numpy(), b.objects.object_id[m].tolist())
        assert sorted(hyp) == list(range(frames))
        gt = [row["objects"] for row in load_ground_truth(clip.gt_path)]
        r = mot_metrics(gt, [hyp[i] for i in range(frames)])
        print(report(f"demo detector + tracker on {pipe.device}, clip seed {11 + sid}, {frames} frames", r))
        assert r["mota"] >= 0.9 and r["idf1"] >= 0.85
