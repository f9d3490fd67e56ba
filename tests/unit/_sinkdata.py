"""Deterministic batches for the sink tests (no model): S sources, K objects per frame."""

from __future__ import annotations

import torch

from vidflow.batch import Batch, FrameInfo, Objects

LABELS = ("box", "disc", "triangle")


def batches(n_batches: int = 5, *, sources: int = 2, per_source: int = 2, objects: int = 3, start: int = 0):
    """``n_batches`` batches; batch b holds frames ``start + b*per_source ...`` of every source."""
    for b in range(n_batches):
        frames, fi, boxes, cls, ids, conf = [], [], [], [], [], []
        for s in range(sources):
            for k in range(per_source):
                fn = start + b * per_source + k
                i = len(frames)
                frames.append(FrameInfo(s, fn, fn / 25, 1_700_000_000_000_000_000 + fn * 40_000_000, 640, 480))
                for j in range(objects):
                    fi.append(i)
                    x = 10.0 * j + fn
                    boxes.append([x, 20.0 + j, x + 30.5, 60.25 + j])
                    cls.append(j % 3)
                    ids.append(100 * s + j)
                    conf.append(0.5 + 0.1 * j)
        objs = Objects.create(frame_idx=torch.tensor(fi, dtype=torch.int64), bbox=torch.tensor(boxes).reshape(-1, 4),
                              class_id=torch.tensor(cls, dtype=torch.int64), object_id=torch.tensor(ids, dtype=torch.int64),
                              confidence=torch.tensor(conf, dtype=torch.float32),
                              attrs={"embed.vector": torch.arange(len(fi) * 8, dtype=torch.float32).reshape(-1, 8)})
        yield Batch(images=torch.zeros(len(frames), 3, 8, 8, dtype=torch.uint8), frames=tuple(frames), objects=objs,
                    labels={"objects": LABELS})


def check_in_order(msgs, sources: int, frames_per_source: int, *, eos: bool = True) -> None:
    """Every source's frames 0..n-1 exactly once and in order (after de-duplication), then EOS."""
    for s in range(sources):
        mine = [m for m in msgs if m["source-id"] == s]
        got = [m["frame-num"] for m in mine if "frame-num" in m]
        assert got == list(range(frames_per_source)), (s, got[:20], len(got))
        seqs = [m["seq"] for m in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        if eos:
            assert mine[-1].get("end-of-stream") is True
