"""Writes docs/images/demo.jpg: frame 20 of `vidflow demo`'s annotated.mp4 (4 cameras, CPU).

python scripts/demo_picture.py [--out docs/images/demo.jpg]
"""

from __future__ import annotations

import argparse
import tempfile

import av

from vidflow.demo import run_demo


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/images/demo.jpg")
    p.add_argument("--frame", type=int, default=20)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(tmp, device="cpu", streams=4, frames=max(30, a.frame + 1), print_fn=None)
        with av.open(f"{tmp}/annotated.mp4") as c:
            frame = next(f for i, f in enumerate(c.decode(video=0)) if i == a.frame)
    with av.open(a.out, "w", format="image2") as out:
        s = out.add_stream("mjpeg", rate=1)
        s.width, s.height, s.pix_fmt = frame.width, frame.height, "yuvj420p"
        s.options = {"q:v": "4"}
        for pkt in [*s.encode(frame.reformat(format="yuvj420p")), *s.encode()]:
            out.mux(pkt)
    print(a.out)


if __name__ == "__main__":
    main()
