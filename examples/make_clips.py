"""Write the generated camera clips the example pipelines read (clips/cam1.mp4, clips/cam2.mp4).

    python examples/make_clips.py                 # 2 x 640x360, 90 frames, next to this file
    python examples/make_clips.py --frames 12 --size 320 240 --out /tmp/clips

Each clip is a rendered scene of boxes, discs and triangles (the demo detector's classes) with
its ground truth in ``<clip>.gt.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidflow.scenes import make_clip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "clips"), help="folder for the clips")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--size", type=int, nargs=2, default=(640, 360), metavar=("W", "H"))
    args = p.parse_args(argv)
    for i in (1, 2):
        clip = make_clip(Path(args.out) / f"cam{i}.mp4", width=args.size[0], height=args.size[1],
                         frames=args.frames, seed=i)
        print(f"wrote {clip.path} ({clip.width}x{clip.height}, {clip.frames} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
