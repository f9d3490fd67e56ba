"""Train vidflow's demo embedder (``vidflow.demo_models.embedder``) on synthetic scene crops.

An identity is one object of one ``vidflow.scenes.Scene`` (its shape and colour). Crops are cut
with the same op the ``Embedder`` stage uses (``vidflow.ops.crops.crop_resize``) from frames
rendered at several resolutions, at random times (other positions, backgrounds, overlaps), with
box jitter like a detector's; mostly hidden objects are skipped. Loss: supervised contrastive
(temperature 0.1) on batches of P identities x K crops. CPU, 2 threads, a few minutes.

    python scripts/train_embedder.py                 # writes src/vidflow/models/demo_embedder.pt/.json
    python scripts/train_embedder.py --steps 200 --out /tmp/e.pt   # quick try

Evaluation printed at the end (held-out scenes): identities enrolled from one "camera" (a scene)
are searched in another camera showing the same objects with other motion and background.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vidflow.demo_models.embedder import EMBED_DIM, INPUT_SIZE, WEIGHTS, DemoEmbedder
from vidflow.ops.crops import crop_resize
from vidflow.scenes import Scene


def visible_fraction(boxes: list[list[float]], k: int) -> float:
    """Approximate visible fraction of box ``k`` (objects later in the list are drawn on top)."""
    x1, y1, x2, y2 = boxes[k]
    area = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
    g = 8  # sample a g x g grid of points in the box
    xs = x1 + (np.arange(g) + 0.5) / g * (x2 - x1)
    ys = y1 + (np.arange(g) + 0.5) / g * (y2 - y1)
    px, py = np.meshgrid(xs, ys)
    covered = np.zeros_like(px, dtype=bool)
    for b in boxes[k + 1:]:
        covered |= (px >= b[0]) & (px < b[2]) & (py >= b[1]) & (py < b[3])
    return float(1 - covered.mean()) if area > 0 else 0.0


def scene_crops(scene: Scene, frames: list[int], rng: np.random.Generator, jitter: float, min_vis: float = 0.5):
    """Crops ``[M,3,64,64]`` uint8 and object ids ``[M]`` of ``scene`` at ``frames``."""
    out, ids = [], []
    for i in frames:
        rgb, objs = scene.render(int(i))
        img = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        boxes = [o["bbox"] for o in objs]
        keep = [k for k in range(len(objs)) if visible_fraction(boxes, k) >= min_vis]
        if not keep:
            continue
        b = torch.tensor([boxes[k] for k in keep], dtype=torch.float32)
        wh = (b[:, 2:] - b[:, :2]).repeat(1, 2)
        b = b + torch.from_numpy(rng.uniform(-jitter, jitter, b.shape)).float() * wh
        c = crop_resize(img, b, torch.zeros(len(keep), dtype=torch.int64), INPUT_SIZE)
        out.append(c.round().clamp(0, 255).to(torch.uint8))
        ids += [objs[k]["object_id"] for k in keep]
    if not out:
        return torch.zeros(0, 3, INPUT_SIZE[1], INPUT_SIZE[0], dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.cat(out), torch.tensor(ids)


def other_camera(scene: Scene, seed: int) -> Scene:
    """The same objects (shape, size, colour) as ``scene`` with other motion and background."""
    cam = Scene(scene.width, scene.height, seed=seed, num_objects=len(scene.objects), fps=scene.fps)
    rng = np.random.default_rng(seed)
    objs = []
    for o in scene.objects:
        o = dict(o)
        o["x0"] = float(rng.uniform(0, scene.width - o["w"]))
        o["y0"] = float(rng.uniform(0, scene.height - o["h"]))
        speed, ang = rng.uniform(30, 300) * scene.width / 1920, rng.uniform(0, 2 * np.pi)
        o["vx"], o["vy"] = float(speed * np.cos(ang)), float(speed * np.sin(ang))
        objs.append(o)
    cam.objects = objs
    return cam


def build_dataset(n_scenes: int, frames_per_scene: int, seed0: int, rng: np.random.Generator):
    crops, labels = [], []
    nid = 0
    for s in range(n_scenes):
        w = int(rng.choice([480, 640, 800, 960]))
        scene = Scene(w, w * 3 // 4, seed=seed0 + s)
        fr = rng.choice(3000, size=frames_per_scene, replace=False)
        c, ids = scene_crops(scene, list(fr), rng, jitter=0.08)
        crops.append(c)
        labels.append(ids + nid)
        nid += len(scene.objects)
    return torch.cat(crops), torch.cat(labels)


def supcon(z: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    sim = z @ z.T / tau
    eye = torch.eye(len(y), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    logp = sim - sim.logsumexp(1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    return -((logp * pos).sum(1) / pos.sum(1).clamp(min=1)).mean()


def augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """``x [B,3,h,w]`` float 0..1: small brightness/contrast change, random horizontal flip."""
    b = x.shape[0]
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=rng) - 0.5) * 0.1
    bias = (torch.rand(b, 1, 1, 1, generator=rng) - 0.5) * 0.06
    flip = torch.rand(b, generator=rng) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return (x * gain + bias).clamp(0, 1)


@torch.no_grad()
def evaluate(model: DemoEmbedder, seeds: list[int], frames: int = 10) -> dict[str, float]:
    """Top-1 of identities enrolled from camera A (mean of ``frames`` crops) searched with every
    crop from camera B, per scene (gallery = that scene's objects) and over all scenes pooled."""
    model.eval()
    g_vecs, g_ids, q_vecs, q_ids, per_scene = [], [], [], [], []
    rng = np.random.default_rng(123)
    nid = 0
    for s in seeds:
        a = Scene(640, 480, seed=s)
        b = other_camera(a, seed=10_000 + s)
        ca, ia = scene_crops(a, list(range(0, 3 * frames, 3)), rng, jitter=0.05)
        cb, ib = scene_crops(b, list(range(0, 90, 3)), rng, jitter=0.05)
        za, zb = model(ca.float() / 255), model(cb.float() / 255)
        ids = sorted(set(ia.tolist()))
        gal = torch.nn.functional.normalize(torch.stack([za[ia == i].mean(0) for i in ids]), dim=1)
        gid = torch.tensor(ids)
        hit = gid[(zb @ gal.T).argmax(1)] == ib
        known = torch.isin(ib, gid)
        per_scene.append(hit[known].float().mean().item())
        g_vecs.append(gal), g_ids.append(gid + nid), q_vecs.append(zb[known]), q_ids.append(ib[known] + nid)
        nid += len(a.objects)
    gal, gid = torch.cat(g_vecs), torch.cat(g_ids)
    q, qid = torch.cat(q_vecs), torch.cat(q_ids)
    pooled = (gid[(q @ gal.T).argmax(1)] == qid).float().mean().item()
    model.train()
    return {"top1_per_scene": float(np.mean(per_scene)), "top1_pooled": pooled, "gallery_size_pooled": len(gid)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=400)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--ids", type=int, default=32, help="identities per batch (P)")
    ap.add_argument("--per-id", type=int, default=4, help="crops per identity (K)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(WEIGHTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    x, y = build_dataset(args.scenes, args.frames, 1_000, rng)
    print(f"dataset: {len(y)} crops of {int(y.max()) + 1} identities in {time.time() - t0:.0f}s", flush=True)
    groups = [torch.nonzero(y == i).flatten() for i in range(int(y.max()) + 1)]
    groups = [g for g in groups if len(g) >= 2]
    model = DemoEmbedder(dim=EMBED_DIM, width=args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        pick = rng.choice(len(groups), size=args.ids, replace=False)
        idx = torch.cat([groups[p][torch.randint(len(groups[p]), (args.per_id,), generator=gen)] for p in pick])
        xb = augment(x[idx].float() / 255, gen)
        loss = supcon(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    scores = evaluate(model, seeds=list(range(50, 70)))
    print("held-out:", scores, flush=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["_dim"], state["_width"] = torch.tensor(EMBED_DIM), torch.tensor(args.width)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    info = {"model": "vidflow.demo_models.embedder.DemoEmbedder", "input_size": list(INPUT_SIZE), "dim": EMBED_DIM,
            "width": args.width, "input": "RGB float [0,1]", "params": sum(p.numel() for p in model.parameters()),
            "trained_on": f"{len(y)} crops, {args.scenes} scenes (seeds 1000+), {args.steps} steps, SupCon tau 0.1",
            "held_out_scene_seeds": "50-69", **scores, "train_seconds": round(time.time() - t0)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", info, flush=True)


if __name__ == "__main__":
    main()
