"""Train vidflow's demo semantic-segmentation model on procedural shapes scenes.

    PYTHONPATH=src python scripts/train_semantic.py --steps 600 --out src/vidflow/models

Pixel labels come from the scene geometry (the same shapes ``vidflow.scenes.Scene.render``
draws, later objects on top). Frames are letterboxed to 256x256 like the detector's input;
the loss is cross-entropy at 1/4 resolution. Writes ``demo_semantic.pt`` (a state dict) and
``demo_semantic.json`` (labels, input size, held-out pixel accuracy and per-class IoU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidflow.demo_models.semantic import CLASSES, DemoSemantic
from vidflow.ops.geometry import letterbox
from vidflow.scenes import Scene

SIZE = 256


def class_map(scene: Scene, i: int) -> np.ndarray:
    """``[H, W]`` uint8: 0 background, 1 + class id where a shape is drawn (drawing order)."""
    out = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for o, spec in zip(scene.boxes(i), scene.objects):
        x1, y1, x2, y2 = o["bbox"]
        c0, r0 = int(np.floor(x1)), int(np.floor(y1))
        c1, r1 = min(int(np.ceil(x2)), scene.width), min(int(np.ceil(y2)), scene.height)
        px = (np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :]
        py = (np.arange(r0, r1, dtype=np.float32) + 0.5)[:, None]
        inside = (px >= x1) & (px < x2) & (py >= y1) & (py < y2)
        if spec["class_id"] == 1:
            r = spec["w"] / 2
            inside &= (px - (x1 + r)) ** 2 + (py - (y1 + r)) ** 2 <= r * r
        elif spec["class_id"] == 2:
            half = (py - y1) / spec["h"] * (spec["w"] / 2)
            inside &= np.abs(px - (x1 + spec["w"] / 2)) <= half
        out[r0:r1, c0:c1][inside] = spec["class_id"] + 1
    return out


def sample(seed: int, n: int):
    rng = np.random.default_rng(seed)
    imgs, maps = [], []
    for k in range(n):
        w = int(rng.choice([480, 640, 800]))
        h = int(rng.choice([0.5625, 0.75]) * w) // 2 * 2
        s = Scene(w, h, seed=int(rng.integers(1 << 30)))
        i = int(rng.integers(0, 300))
        rgb, _ = s.render(i)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        lb, _ = letterbox(x, SIZE)
        m = torch.from_numpy(class_map(s, i))[None, None].float()
        ml, _ = letterbox(m.expand(1, 3, -1, -1).to(torch.uint8), SIZE, pad_value=255)  # 255: padding (ignored)
        imgs.append(lb[0])
        maps.append(ml[0, 0])
    return torch.stack(imgs), torch.stack(maps)


def evaluate(model, imgs, maps):
    with torch.no_grad():
        pred = model(imgs.float() / 255).argmax(1)
    tgt = F.interpolate(maps[:, None].float(), size=pred.shape[1:], mode="nearest")[:, 0].long()
    ok = tgt != 255
    acc = (pred[ok] == tgt[ok]).float().mean().item()
    ious = {}
    for c, name in enumerate(CLASSES):
        p, t = (pred == c) & ok, (tgt == c) & ok
        ious[name] = round(((p & t).sum() / (p | t).sum().clamp(min=1)).item(), 4)
    return round(acc, 4), ious


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("src/vidflow/models"))
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    imgs, maps = sample(1, args.images)
    vimgs, vmaps = sample(2, 64)
    print(f"rendered {len(imgs)} + {len(vimgs)} frames in {time.time() - t0:.0f}s")
    model = DemoSemantic(width=12)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.15)
    g = torch.Generator().manual_seed(0)
    weight = torch.tensor([0.5, 1.0, 1.0, 1.0])
    for step in range(args.steps):
        idx = torch.randint(0, len(imgs), (args.batch,), generator=g)
        x = imgs[idx].float() / 255
        if step % 2:
            x = x.flip(3)
        y = maps[idx]
        y = y.flip(2) if step % 2 else y
        out = model(x)
        tgt = F.interpolate(y[:, None].float(), size=out.shape[2:], mode="nearest")[:, 0].long()
        loss = F.cross_entropy(out, tgt, weight=weight, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    acc, ious = evaluate(model, vimgs, vmaps)
    print("held-out pixel accuracy", acc, "IoU", ious)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "demo_semantic.pt")
    info = {"labels": list(CLASSES), "input_size": [SIZE, SIZE], "task": "semantic", "width": 12,
            "trained": {"steps": args.steps, "batch": args.batch, "images": args.images, "device": "cpu",
                        "val_pixel_accuracy": acc, "val_iou": ious}}
    (args.out / "demo_semantic.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
