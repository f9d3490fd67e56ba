"""vidflow's segment and pose heads on recorded raw outputs of the shapes YOLO11n-seg/-pose
models, against Ultralytics' own predictions recorded from the same outputs
(scripts/record_head_refs.py; tests/refs/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.engines.fake import FakeEngine
from vidflow.ops.masks import decode_counts, to_rle
from vidflow.ops.nms import box_iou
from vidflow.stages.detect import Detector

REFS = Path(__file__).resolve().parents[1] / "refs"


def _load(task: str):
    ref = json.loads((REFS / f"heads_{task}.json").read_text())
    with np.load(REFS / f"heads_{task}_raw.npz", allow_pickle=False) as z:
        raw = {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files}
    return ref, raw


def _run(task: str, k: int, raw: dict, size: tuple[int, int], **kw):
    outs = {"output0": raw[f"output{k}"][None]}
    if f"protos{k}" in raw:
        outs["output1"] = raw[f"protos{k}"][None]
    eng = FakeEngine(fn=lambda x: outs, input_size=(640, 640))
    w, h = size
    head = {"seg": "segment", "pose": "pose"}[task]
    det = Detector(eng, head=head, kpt_shape=(4, 3) if task == "pose" else None, **kw)
    b = Batch(images=torch.zeros(1, 3, h, w, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0, width=w, height=h),))
    return det(b).objects


def _pairs(ref: dict, objs) -> list[tuple[int, int]]:
    """One-to-one same-class matches at IoU >= 0.9 (greedy by reference confidence)."""
    rb = torch.tensor(ref["bbox"], dtype=torch.float32).reshape(-1, 4)
    rc = torch.tensor(ref["class_id"])
    iou = box_iou(rb, objs.bbox) if len(rb) and len(objs) else torch.zeros(len(rb), len(objs))
    iou[rc[:, None] != objs.class_id[None, :]] = -1
    used, out = set(), []
    for i in np.argsort(-np.asarray(ref["confidence"]), kind="stable"):
        cand = [(float(iou[i, j]), j) for j in range(len(objs)) if j not in used and iou[i, j] >= 0.9]
        if cand:
            j = max(cand)[1]
            used.add(j)
            out.append((int(i), j))
    return out


def _rle_to_mask(counts: str, w: int, h: int) -> np.ndarray:
    c = decode_counts(counts)
    flat = np.zeros(w * h, dtype=bool)
    pos, val = 0, False
    for n in c:
        flat[pos:pos + n] = val
        pos, val = pos + n, not val
    return flat.reshape(w, h).T


@pytest.mark.parametrize("k", [0, 1])
def test_segment_head_matches_ultralytics(k):
    ref, raw = _load("seg")
    fr = ref["frames"][k]
    w, h = fr["size"]
    objs = _run("seg", k, raw, (w, h))
    pairs = _pairs(fr, objs)
    assert len(pairs) >= 0.97 * max(len(fr["bbox"]), len(objs)) and len(objs) > 3
    assert objs.masks is not None and len(objs.masks) == len(objs)
    assert objs.masks.data.shape[1] < h and objs.masks.data.shape[2] < w       # box-cropped, not full frames
    full = objs.masks.full(w, h).numpy()
    ious = []
    for i, j in pairs:
        a, b = _rle_to_mask(fr["masks"][i], w, h), full[j]
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert np.mean(ious) >= 0.99, ious        # fp16-stored prototypes: a few edge pixels may flip
    # our RLE decodes to our own mask
    rle = to_rle(objs.masks, [[w, h]] * len(objs))
    assert all((_rle_to_mask(r["counts"], w, h) == full[j]).all() for j, r in enumerate(rle))


@pytest.mark.parametrize("k", [0, 1])
def test_pose_head_matches_ultralytics(k):
    ref, raw = _load("pose")
    fr = ref["frames"][k]
    w, h = fr["size"]
    objs = _run("pose", k, raw, (w, h))
    pairs = _pairs(fr, objs)
    assert len(pairs) >= 0.97 * max(len(fr["bbox"]), len(objs)) and len(objs) > 3
    assert objs.keypoints is not None and objs.keypoints.shape == (len(objs), 4, 3)
    rk = torch.tensor(fr["keypoints"])
    d = torch.stack([(rk[i, :, :2] - objs.keypoints[j, :, :2]).norm(dim=-1) for i, j in pairs])
    assert d.median() <= 0.05 and d.max() <= 0.5
    s = torch.stack([(rk[i, :, 2] - objs.keypoints[j, :, 2]).abs() for i, j in pairs])
    assert s.max() <= 1e-3


def test_segment_masks_off_and_pycocotools():
    ref, raw = _load("seg")
    fr = ref["frames"][0]
    w, h = fr["size"]
    assert _run("seg", 0, raw, (w, h), masks=False).masks is None
    cm = pytest.importorskip("pycocotools.mask")
    objs = _run("seg", 0, raw, (w, h))
    rle = to_rle(objs.masks, [[w, h]] * len(objs))
    dec = cm.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rle])
    assert (dec.transpose(2, 0, 1).astype(bool) == objs.masks.full(w, h).numpy()).all()
    assert cm.area([{"size": r["size"], "counts": r["counts"].encode()} for r in rle]).tolist() == \
        objs.masks.area().tolist()
