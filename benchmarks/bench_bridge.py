"""Times the bridge / drawing / tiling / video-out parts on one device; prints numbers only.

python benchmarks/bench_bridge.py [--device cuda|cpu] [--size 1920x1080] [--batch 8] [--objects 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.draw import Annotate
from vidflow.sinks.tiler import Tiler
from vidflow.sinks.video import VideoSink, nvenc_available
from vidflow.translate import to_columns, to_frames


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, dev, n):
    fn()
    sync(dev)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    dev = torch.device(a.device)
    w, h = map(int, a.size.split("x"))
    b, k = a.batch, a.objects
    g = torch.Generator().manual_seed(0)
    n = b * k
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 200.0, h - 200.0])
    objs = Objects.create(frame_idx=torch.arange(b).repeat_interleave(k), bbox=torch.cat([xy, xy + 150], 1),
                          class_id=torch.randint(0, 3, (n,), generator=g), object_id=torch.arange(n),
                          attrs={"embed.vector": torch.randn(n, 64, generator=g)}).to(dev)
    images = torch.randint(0, 255, (b, 3, h, w), dtype=torch.uint8, generator=g).to(dev)
    frames = tuple(FrameInfo(i % 4, i // 4, 0.0, width=w, height=h) for i in range(b))
    batch = Batch(images=images, frames=frames, objects=objs, labels={"objects": ("box", "disc", "triangle")})
    ann = Annotate()
    print(f"device={dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), "
          f"batch {b} x {w}x{h}, {k} objects/frame, nvenc_available={nvenc_available()}")
    print(f"Annotate (boxes + captions)  {timeit(lambda: ann(batch), dev, a.iters):8.2f} ms/batch")
    print(f"to_frames                    {timeit(lambda: to_frames(batch), dev, a.iters):8.2f} ms/batch")
    print(f"to_columns                   {timeit(lambda: to_columns(batch), dev, a.iters):8.2f} ms/batch")
    tl = Tiler(2, 2, (1920, 1080))
    print(f"Tiler 2x2 -> 1920x1080       {timeit(lambda: tl.write(batch), dev, a.iters):8.2f} ms/batch")
    with tempfile.TemporaryDirectory() as d:
        sink = VideoSink(f"{d}/t.mp4", rows=2, cols=2, size=(1920, 1080), draw=False, encoder="pyav")
        t = time.perf_counter()
        for _ in range(a.iters):
            sink.write(batch)
        t_write = (time.perf_counter() - t) / a.iters * 1e3
        sink.close()
        t_all = (time.perf_counter() - t) / a.iters * 1e3
        print(f"VideoSink tiled: write() {t_write:.2f} ms/batch (returns after queueing), "
              f"incl. libx264 encode {t_all:.2f} ms/batch ({sink.frames_written} mosaics)")


if __name__ == "__main__":
    main()
