"""ViewSink: nothing copied while nobody watches, at most max_fps per source, newest frame kept;
Viewer: a real JPEG of one source or of all tiled."""

from __future__ import annotations

import io

import av
import numpy as np
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.serve.view import JpegEncoder, Viewer, ViewSink


class Clock:
    t = 10.0

    def __call__(self) -> float:
        return self.t


def batch(values: list[tuple[int, int]], h: int = 48, w: int = 64) -> Batch:
    imgs = torch.stack([torch.full((3, h, w), v, dtype=torch.uint8) for _, v in values])
    frames = tuple(FrameInfo(sid, i, i / 30, 1_000_000 * (i + 1), w, h) for i, (sid, _) in enumerate(values))
    return Batch(images=imgs, frames=frames)


def decode(jpeg: bytes) -> np.ndarray:
    with av.open(io.BytesIO(jpeg), format="mjpeg") as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_no_copy_while_nobody_watches_then_newest_per_source_at_bounded_rate():
    clk = Clock()
    sink = ViewSink(max_fps=5, linger_s=2, clock=clk)
    sink.write(batch([(0, 10), (1, 20)]))
    assert sink.copies == 0 and not sink.shots()
    sink.watch()
    sink.write(batch([(0, 10), (1, 20), (0, 30)]))          # source 0 twice: the newest wins
    shots = sink.shots()
    assert sink.copies == 2 and int(shots[0].image[0, 0, 0]) == 30 and int(shots[1].image[0, 0, 0]) == 20
    clk.t += 0.1                                              # < 1/5 s later: nothing new is copied
    sink.write(batch([(0, 40)]))
    assert sink.copies == 2
    clk.t += 0.15
    sink.write(batch([(0, 50)]))
    assert sink.copies == 3 and int(sink.shots()[0].image[0, 0, 0]) == 50
    clk.t += 5                                                # the viewer left
    sink.write(batch([(0, 60)]))
    assert sink.copies == 3
    sink.end_source(0)
    assert 0 not in sink.shots()


def test_copies_are_not_views_of_the_batch():
    sink = ViewSink()
    sink.watch()
    b = batch([(0, 10)])
    sink.write(b)
    b.images.fill_(99)
    assert int(sink.shots()[0].image[0, 0, 0]) == 10


def test_large_frames_are_downscaled_in_the_sink():
    sink = ViewSink(max_side=100)
    sink.watch()
    sink.write(batch([(0, 10)], h=120, w=200))
    assert tuple(sink.shots()[0].image.shape) == (3, 60, 100)


def test_viewer_encodes_one_source_and_the_tiled_view():
    sink = ViewSink()
    sink.watch()
    sink.write(batch([(0, 200), (1, 50)]))
    viewer = Viewer(sink, tile_size=(320, 120))
    assert viewer.jpeg("7") is None
    one, meta = viewer.jpeg("1")
    px = decode(one)
    assert px.shape == (48, 64, 3) and abs(int(px[24, 32, 0]) - 50) <= 3
    assert viewer.jpeg("1")[0] is one                          # cached until a newer frame
    tiled, meta = viewer.jpeg(None)
    px = decode(tiled)
    assert px.shape == (120, 320, 3)
    assert abs(int(px[60, 80, 0]) - 200) <= 4 and abs(int(px[60, 240, 0]) - 50) <= 4   # 1x2 grid
    assert meta["ntp_ms"] == 2.0


def test_jpeg_encoder_handles_odd_sizes():
    data = JpegEncoder()(torch.zeros(3, 31, 45, dtype=torch.uint8))
    assert data[:2] == b"\xff\xd8" and decode(data).shape == (30, 44, 3)
