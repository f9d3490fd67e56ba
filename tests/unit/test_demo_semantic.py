"""vidflow's demo semantic model through Detector(head="semantic") on held-out shapes frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.scenes import Scene
from vidflow.stages.detect import Detector

ROOT = Path(__file__).resolve().parents[2]


def _class_map():
    spec = importlib.util.spec_from_file_location("train_semantic", ROOT / "scripts" / "train_semantic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.class_map


def test_demo_semantic_model_labels_held_out_frames():
    class_map = _class_map()
    det = Detector("demo", head="semantic", probabilities=True)
    correct = total = 0
    inter = torch.zeros(4)
    union = torch.zeros(4)
    for seed, (w, h) in ((901, (640, 360)), (902, (800, 600))):
        s = Scene(w, h, seed=seed)
        rgb, _ = s.render(17)
        b = Batch(images=torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous(),
                  frames=(FrameInfo(0, 17, 0.0, width=w, height=h),))
        out = det(b)
        cmap = out.tensors["detect.class_map"][0]
        assert cmap.shape == (h, w) and cmap.dtype == torch.int32
        assert out.tensors["detect.class_probs"].shape == (1, h, w, 4)
        gt = torch.from_numpy(class_map(s, 17)).long()
        correct += int((cmap.long() == gt).sum())
        total += gt.numel()
        for c in range(4):
            p, t = cmap == c, gt == c
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    iou = inter / union.clamp(min=1)
    assert correct / total >= 0.95, correct / total
    assert iou[1:].mean() >= 0.6, iou.tolist()
    assert det.meta["task"] == "semantic" and det.active_head.task == "semantic"
