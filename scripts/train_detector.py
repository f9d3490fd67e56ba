#!/usr/bin/env python
"""Train vidflow's demo detector on generated "shapes" scenes (vidflow.scenes).

Deterministic for a given --seed on a given machine: the data set (scene seeds, frame indices,
frame sizes) and the batch order come from seeded generators. Writes ``demo_detector.pt`` (a
float16 ``state_dict``) and ``demo_detector.json`` to --out, then prints AP50 on held-out scenes.

    python scripts/train_detector.py --out $OUT --device cuda            # GPU, ~3 min on an H100
    python scripts/train_detector.py --out /tmp/d --device cpu --steps 50 --scenes 40   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vidflow.demo_models.detector import STRIDE, DemoDetector  # noqa: E402
from vidflow.heads.yolo import decode  # noqa: E402
from vidflow.ops.geometry import letterbox, letterbox_placement  # noqa: E402
from vidflow.scenes import CLASS_NAMES, Scene  # noqa: E402

SIZE = 320
ASPECTS = ((4, 3), (16, 9), (1, 1), (3, 4), (21, 9))


def _specs(n_scenes: int, frames_per_scene: int, seed: int,
           max_width: int = 1920) -> list[tuple[int, int, int, list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_scenes):
        aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
        w = int(rng.integers(320, max_width + 1)) // 2 * 2
        h = max(64, int(round(w * ah / aw)) // 2 * 2)
        frames = sorted(rng.choice(300, size=frames_per_scene, replace=False).tolist())
        out.append((seed * 100_003 + k, w, h, frames))
    return out


def _render(spec: tuple[int, int, int, list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One scene -> [(uint8 [3,S,S] letterboxed image, float32 [M,5] x1,y1,x2,y2,cls in input px)]."""
    torch.set_num_threads(1)
    seed, w, h, frames = spec
    scene = Scene(w, h, seed=seed)
    p = letterbox_placement((w, h), (SIZE, SIZE))
    sx, sy = p.scale
    out = []
    for i in frames:
        rgb, objs = scene.render(i)
        img, _ = letterbox(torch.from_numpy(rgb).permute(2, 0, 1)[None], (SIZE, SIZE))
        boxes = np.array([[o["bbox"][0] * sx + p.left, o["bbox"][1] * sy + p.top, o["bbox"][2] * sx + p.left,
                           o["bbox"][3] * sy + p.top, o["class_id"]] for o in objs], np.float32).reshape(-1, 5)
        out.append((img[0].numpy(), boxes))
    return out


def build(specs, workers: int):
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_render, specs, chunksize=4)
    items = [it for part in parts for it in part]
    images = torch.from_numpy(np.stack([im for im, _ in items]))
    m = max(len(b) for _, b in items)
    gt = torch.zeros(len(items), m, 5)
    valid = torch.zeros(len(items), m, dtype=torch.bool)
    for k, (_, b) in enumerate(items):
        gt[k, :len(b)] = torch.from_numpy(b)
        valid[k, :len(b)] = True
    return images, gt, valid


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching xyxy boxes ``[..., 4]``."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + 1e-7
    clt, crb = torch.minimum(a[..., :2], b[..., :2]), torch.maximum(a[..., 2:], b[..., 2:])
    carea = (crb - clt).clamp(min=0).prod(-1) + 1e-7
    iou = inter / union
    return iou - (carea - union) / carea, iou


def losses(model, x, gt, valid, num_classes: int):
    out, ltrb, logits, anchors = model(x)
    ltrb, logits, anchors = ltrb.float(), logits.float(), anchors.float()
    b, n = logits.shape[:2]
    ax, ay = anchors[:, 0], anchors[:, 1]                              # [N]
    x1, y1, x2, y2, cls = (gt[..., i] for i in range(5))               # [B,M]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    inside = ((ax > x1[..., None]) & (ax < x2[..., None]) & (ay > y1[..., None]) & (ay < y2[..., None]))
    r = 2.0 * STRIDE
    centre = ((ax - cx[..., None]).abs() < r) & ((ay - cy[..., None]).abs() < r)
    gw = math.ceil(x.shape[3] / STRIDE)
    near = ((cy / STRIDE).floor().clamp(0, x.shape[2] // STRIDE - 1) * gw
            + (cx / STRIDE).floor().clamp(0, gw - 1)).long()           # [B,M]
    cand = (inside & centre) | F.one_hot(near, n).bool()
    cand &= valid[..., None]
    area = ((x2 - x1) * (y2 - y1))[..., None].expand_as(cand)
    area = torch.where(cand, area, torch.full_like(area, float("inf")))
    best = area.argmin(1)                                              # [B,N] gt index
    pos = cand.any(1)                                                  # [B,N]
    tgt = torch.gather(gt, 1, best[..., None].expand(b, n, 5))         # [B,N,5]
    npos = pos.sum().clamp(min=1).float()
    # classification: sigmoid focal loss against one-hot targets on positives
    t = torch.zeros_like(logits)
    t[pos] = F.one_hot(tgt[pos][:, 4].long(), num_classes).to(t.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    alpha = 0.25 * t + 0.75 * (1 - t)
    l_cls = (alpha * (1 - pt) ** 2 * ce).sum() / npos
    # boxes: GIoU on positives
    a = anchors[None].expand(b, n, 2)[pos]
    pb = torch.cat([a - ltrb[pos][:, :2], a + ltrb[pos][:, 2:]], 1)
    g, iou = giou(pb, tgt[pos][:, :4])
    l_box = (1 - g).sum() / npos
    return l_cls, l_box, iou.mean()


def augment(x: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, gen: torch.Generator,
            gen_dev: torch.Generator):
    """float [B,3,S,S] 0..255 -> augmented 0..1; hflip (boxes too), colour gain, blur, noise."""
    b = x.shape[0]
    dev = x.device
    flip = torch.rand(b, generator=gen, device="cpu").to(dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    w = x.shape[3]
    fx1 = torch.where(flip[:, None], w - gt[..., 2], gt[..., 0])
    fx2 = torch.where(flip[:, None], w - gt[..., 0], gt[..., 2])
    gt = torch.stack([fx1, gt[..., 1], fx2, gt[..., 3], gt[..., 4]], -1)
    gain = (1 + 0.08 * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1)).to(dev)
    off = (8 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)).to(dev)
    x = x * gain + off
    blur = (torch.rand(b, generator=gen) < 0.3).to(dev)
    xb = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    x = torch.where(blur[:, None, None, None], xb, x)
    x = x + torch.randn(x.shape, generator=gen_dev, device=dev) * 2.0
    return (x.clamp(0, 255) / 255), gt, valid


def ap50(model, images, gt, valid, device, conf=0.01) -> dict[str, float]:
    """VOC-style all-point AP at IoU 0.5 per class on letterboxed images."""
    from vidflow.ops.nms import box_iou
    model.eval()
    recs = {c: [] for c in range(len(CLASS_NAMES))}
    ngt = {c: 0 for c in range(len(CLASS_NAMES))}
    with torch.inference_mode():
        for s in range(0, len(images), 64):
            x = images[s:s + 64].to(device).float() / 255
            det = decode(model(x), format="yolov8", conf=conf, iou=0.7, max_det=300)
            det = type(det)(*(t.cpu() for t in det))
            for k in range(x.shape[0]):
                g = gt[s + k][valid[s + k]].cpu()
                d = det.frame_idx == k
                for c in recs:
                    gc = g[g[:, 4] == c][:, :4]
                    ngt[c] += len(gc)
                    m = d & (det.class_id == c)
                    bx, sc = det.bbox[m], det.confidence[m]
                    used = torch.zeros(len(gc), dtype=torch.bool)
                    iou = box_iou(bx, gc) if len(gc) and len(bx) else None
                    for j in range(len(bx)):
                        tp = False
                        if iou is not None:
                            v, i = iou[j].masked_fill(used, -1).max(0)
                            if v >= 0.5:
                                used[i] = True
                                tp = True
                        recs[c].append((float(sc[j]), tp))
    out = {}
    for c, r in recs.items():
        r.sort(key=lambda t: -t[0])
        tp = np.cumsum([t for _, t in r])
        fp = np.cumsum([not t for _, t in r])
        rec = tp / max(ngt[c], 1)
        prec = tp / np.maximum(tp + fp, 1)
        mrec = np.concatenate([[0], rec, [1]])
        mpre = np.concatenate([[1], prec, [0]])
        mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
        i = np.where(mrec[1:] != mrec[:-1])[0]
        out[CLASS_NAMES[c]] = float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--scenes", type=int, default=2400)
    ap.add_argument("--frames-per-scene", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-width", type=int, default=1920,
                    help="widest training frame (frames of 320..max-width px; 1080p needs 1920)")
    ap.add_argument("--time-limit", type=float, default=0, help="stop early after this many seconds")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    t0 = time.time()
    images, gt, valid = build(_specs(args.scenes, args.frames_per_scene, args.seed, args.max_width), args.workers)
    v_images, v_gt, v_valid = build(_specs(max(args.scenes // 20, 8), 3, args.seed + 777, args.max_width), args.workers)
    print(json.dumps({"event": "data", "train": len(images), "val": len(v_images), "s": round(time.time() - t0, 1)}),
          flush=True)
    images, gt, valid = images.to(dev), gt.to(dev), valid.to(dev)
    model = DemoDetector(num_classes=len(CLASS_NAMES)).to(dev).train()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    warm = min(200, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warm, 1))
                                              * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    gen_dev = torch.Generator(device=dev).manual_seed(args.seed)
    t1 = time.time()
    step = 0
    for step in range(args.steps):
        idx = torch.randint(len(images), (args.batch,), generator=gen).to(dev)
        x, g, v = augment(images[idx].float(), gt[idx], valid[idx], gen, gen_dev)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            l_cls, l_box, miou = losses(model, x, g.float(), v, len(CLASS_NAMES))
        loss = l_cls + 2.0 * l_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(json.dumps({"step": step, "cls": round(l_cls.item(), 4), "box": round(l_box.item(), 4),
                              "iou": round(miou.item(), 3), "s": round(time.time() - t1, 1)}), flush=True)
        if args.time_limit and time.time() - t0 > args.time_limit:
            print(json.dumps({"event": "time limit", "step": step}), flush=True)
            break
    os.makedirs(args.out, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(args.out, "demo_detector.pt"))
    # evaluate exactly what ships: the float16 weights loaded back into a float32 model
    model = DemoDetector(num_classes=len(CLASS_NAMES))
    model.load_state_dict(torch.load(os.path.join(args.out, "demo_detector.pt"), weights_only=True))
    model = model.to(dev)
    res = ap50(model, v_images, v_gt, v_valid, dev)
    info = {"labels": list(CLASS_NAMES), "input_size": [SIZE, SIZE], "format": "yolov8", "width": 1,
            "stride": STRIDE, "trained": {"steps": step + 1, "batch": args.batch, "seed": args.seed,
                                          "images": len(images), "device": str(dev),
                                          "val_ap50": {k: round(v, 4) for k, v in res.items()}}}
    with open(os.path.join(args.out, "demo_detector.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps({"event": "done", "val_ap50": res, "map50": sum(res.values()) / len(res),
                      "s": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
