#!/usr/bin/env python
"""CPU cost of the Tracker stage (ms per batch and per frame), today's all-streams tracker ("new")
beside the per-source one it replaced ("old", ``tests/reference/track_v1.py``), on the same
machine, on the same synthetic detections: 10/15/20 objects per frame (default), batches of 64
frames, each batch one frame of each of ``batch`` sources (as the muxer
fills batches at steady state; ``--sources 1`` = one source, the worst case: no two frames of a
batch can be processed together). Objects move with noisy constant velocity; 10 % are missed, 20 %
score low (ByteTrack's second pass), a few false positives per frame. Prints one JSON line per
measurement: the median over ``--reps`` repetitions of the per-batch time of the timed batches,
with the host CPU named.

    python benchmarks/track.py                        # 64 streams x 10/15/20 objects, old and new
    python benchmarks/track.py --objects 5 20 50 100 --batches 8 64 --reps 7
    python benchmarks/track.py --impl new             # only today's
    VIDFLOW_SRC=/path/to/other/checkout/src python benchmarks/track.py   # another version as "new"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.environ.get("VIDFLOW_SRC", os.path.join(_ROOT, "src")))
sys.path.insert(1, _ROOT)                       # tests.reference (the old tracker)

from vidflow.batch import Batch, FrameInfo, Objects  # noqa: E402
from vidflow.stages.track import Tracker  # noqa: E402


def cpu_name() -> str:
    """The host CPU's model name and logical core count (from /proc/cpuinfo)."""
    import platform
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def trackers(impls: list[str]) -> dict:
    out = {}
    for impl in impls:
        if impl == "new":
            out[impl] = Tracker
        else:
            from tests.reference.track_v1 import ReferenceTracker
            out[impl] = ReferenceTracker
    return out


def make_batches(n_objects: int, batch: int, count: int, seed: int = 0, sources: int | None = None) -> list[Batch]:
    """``count`` CPU batches of ``batch`` frames: ``sources`` (default ``batch``) sources round-robin,
    each with ``n_objects`` objects; frame ``j`` of a batch is from source ``j % sources``."""
    ns = batch if sources is None else sources
    rng = np.random.default_rng(seed)
    w, h = 1920.0, 1080.0
    pos = rng.uniform(0, [w - 150, h - 150], (ns, n_objects, 2))
    vel = rng.normal(0, 4, (ns, n_objects, 2))
    size = rng.uniform(20, 150, (ns, n_objects, 2))
    cls = rng.integers(0, 3, (ns, n_objects))
    fnum = [0] * ns
    out = []
    for _ in range(count):
        fi, bb, cf, cl, infos = [], [], [], [], []
        for j in range(batch):
            s = j % ns
            infos.append(FrameInfo(s, fnum[s], fnum[s] / 30, 0, 1920, 1080))
            fnum[s] += 1
            vel[s] += rng.normal(0, 0.3, (n_objects, 2))
            pos[s] += vel[s]
            bounce = (pos[s] < 0) | (pos[s] > [w - 150, h - 150])
            vel[s][bounce] *= -1
            pos[s] = np.clip(pos[s], 0, [w - 150, h - 150])
            keep = rng.random(n_objects) > 0.1
            b = np.c_[pos[s], pos[s] + size[s]][keep] + rng.normal(0, 1.5, (int(keep.sum()), 4))
            c = np.where(rng.random(len(b)) < 0.2, rng.uniform(0.1, 0.5, len(b)), rng.uniform(0.5, 1.0, len(b)))
            c_id = cls[s][keep]
            nfp = int(rng.integers(0, 3))
            if nfp:
                p = rng.uniform(0, [w - 40, h - 40], (nfp, 2))
                b = np.r_[b, np.c_[p, p + 30]]
                c = np.r_[c, rng.uniform(0.2, 0.7, nfp)]
                c_id = np.r_[c_id, rng.integers(0, 3, nfp)]
            fi.append(np.full(len(b), j)), bb.append(b), cf.append(c), cl.append(c_id)
        objs = Objects.create(frame_idx=torch.from_numpy(np.concatenate(fi)),
                              bbox=torch.tensor(np.concatenate(bb), dtype=torch.float32),
                              confidence=torch.tensor(np.concatenate(cf), dtype=torch.float32),
                              class_id=torch.from_numpy(np.concatenate(cl)))
        out.append(Batch(images=torch.zeros(batch, 3, 4, 4, dtype=torch.uint8), frames=tuple(infos), objects=objs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, nargs="+", default=[10, 15, 20])
    ap.add_argument("--batches", type=int, nargs="+", default=[64])
    ap.add_argument("--impl", nargs="+", choices=["old", "new"], default=["old", "new"])
    ap.add_argument("--frames", type=int, default=1280, help="timed frames per repetition (over all sources)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed batches first (tracks are confirmed)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sources", type=int, default=None, help="sources per batch (default: the batch size)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_name()
    impls = trackers(args.impl)
    for n in args.objects:
        for bs in args.batches:
            timed = max(1, args.frames // bs)
            batches = make_batches(n, bs, args.warmup + timed, sources=args.sources)
            dets = sum(len(b.objects) for b in batches) / (len(batches) * bs)
            per_batch: dict[str, list[float]] = {k: [] for k in impls}
            tracked = {}
            for _ in range(args.reps):          # interleaved: both see the same machine load
                for impl, cls in impls.items():
                    tr = cls()
                    for b in batches[:args.warmup]:
                        tr(b)
                    t0 = time.perf_counter()
                    for b in batches[args.warmup:]:
                        res = tr(b)
                    per_batch[impl].append((time.perf_counter() - t0) * 1000 / timed)
                    tracked[impl] = float((res.objects.object_id >= 0).float().mean())
            for impl, xs in per_batch.items():
                ms = statistics.median(xs)
                print(json.dumps({"bench": "track", "impl": impl, "objects": n, "detections_per_frame": round(dets, 1),
                                  "batch": bs, "sources": args.sources or bs, "batches_timed": timed, "reps": args.reps,
                                  "ms_per_batch": round(ms, 3), "ms_per_batch_min": round(min(xs), 3),
                                  "ms_per_frame": round(ms / bs, 4),
                                  "tracked_fraction_last_batch": round(tracked[impl], 3),
                                  "torch_threads": args.threads, "cpu": cpu}), flush=True)
            if len(per_batch) == 2:
                old, new = statistics.median(per_batch["old"]), statistics.median(per_batch["new"])
                print(json.dumps({"bench": "track", "objects": n, "batch": bs, "speedup_old_over_new": round(old / new, 2)}),
                      flush=True)


if __name__ == "__main__":
    main()
