"""ops.draw: box outlines, text from the glyph atlas, the Annotate stage (CPU)."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops import _font
from vidflow.ops.draw import PALETTE, Annotate, draw_boxes, draw_text, fill_rects, text_size


def blank(b=2, h=40, w=60, v=10):
    return torch.full((b, 3, h, w), v, dtype=torch.uint8)


def test_draw_boxes_outline_exact():
    img = blank()
    out = draw_boxes(img, torch.tensor([[5.0, 6.0, 20.0, 30.0]]), torch.tensor([1]), (255, 0, 0), thickness=2)
    assert out is img
    assert img[0].eq(10).all()  # other frame untouched
    red = (img[1, 0] == 255) & (img[1, 1] == 0) & (img[1, 2] == 0)
    expect = torch.zeros(40, 60, dtype=torch.bool)
    expect[6:31, 5:21] = True
    expect[8:29, 7:19] = False  # 2 px lines inside the box, corners inclusive
    assert torch.equal(red, expect)
    assert img[1, :, ~expect].eq(10).all()


def test_draw_boxes_clipped_and_outside_and_colors():
    img = blank(b=1)
    boxes = torch.tensor([[-10.0, -10.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0], [50.0, 30.0, 59.0, 39.0]])
    colors = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8)
    draw_boxes(img, boxes, torch.tensor([0, 0, 0]), colors, thickness=1)
    assert img[0, :, 0, 0].tolist() == [1, 2, 3]  # clipped box drawn along the border
    assert img[0, :, 10, 5].tolist() == [1, 2, 3]  # its bottom edge
    assert not (img[0, 0] == 4).any()  # entirely outside: nothing
    assert img[0, :, 39, 59].tolist() == [7, 8, 9]
    assert img[0, :, 35, 55].tolist() == [10, 10, 10]  # inside is not filled
    with pytest.raises(ValueError, match="thickness"):
        draw_boxes(img, boxes, torch.zeros(3, dtype=torch.long), thickness=0)
    with pytest.raises(ValueError, match="colors"):
        draw_boxes(img, boxes, torch.zeros(3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.uint8))


def test_draw_text_matches_atlas():
    img = blank(b=1, h=30, w=60, v=0)
    draw_text(img, ["Hi!"], torch.tensor([[3.0, 4.0]]), torch.tensor([0]), scale=2, color=(200, 100, 50))
    atlas = _font.atlas(2, torch.device("cpu"))
    for j, ch in enumerate("Hi!"):
        region = img[0, 0, 4:20, 3 + 16 * j: 3 + 16 * (j + 1)]
        assert torch.equal(region == 200, atlas[ord(ch) - 32]), ch
    assert text_size("Hi!", 2) == (48, 16)
    assert img[0, 1][img[0, 0] == 200].eq(100).all()


def test_draw_text_background_and_unicode():
    img = blank(b=2, h=20, w=40, v=0)
    draw_text(img, ["é", "ab"], torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.tensor([0, 1]),
              color=(255, 255, 255), background=(0, 0, 255), pad=1)
    q = _font.atlas(1, torch.device("cpu"))[ord("?") - 32]
    assert torch.equal(img[0, 0, 0:8, 0:8] == 255, q)  # non-ASCII drawn as '?'
    assert img[1, 2, 1:11, 1:19].gt(0).all()  # background box 16x8 + 1 px pad around (2,2)
    assert img[1, 2, 12:, :].eq(0).all()


def test_fill_rects():
    img = blank(b=1, v=0)
    fill_rects(img, torch.tensor([[2, 3, 6, 5]]), torch.tensor([0]), (9, 9, 9))
    assert img[0, 0].eq(9).sum() == 4 * 2 and img[0, 0, 3:5, 2:6].eq(9).all()


def make_batch():
    images = torch.full((2, 3, 90, 160), 50, dtype=torch.uint8)
    # frame 1 is a 320x180 source shown at half size
    frames = (FrameInfo(0, 0, 0.0, width=160, height=90), FrameInfo(1, 0, 0.0, width=320, height=180))
    objs = Objects.create(frame_idx=torch.tensor([0, 1, 1]),
                          bbox=torch.tensor([[10.0, 30.0, 60.0, 80.0], [100.0, 100.0, 300.0, 170.0], [0, 0, 40, 40]]),
                          class_id=torch.tensor([1, 2, 0]), object_id=torch.tensor([4, -1, 2]),
                          attrs={"identify.identity": torch.tensor([0, -1, 1])})
    return Batch(images=images, frames=frames, objects=objs,
                 labels={"objects": ("box", "disc", "triangle"), "identify": ("alice", "bob")})


def test_annotate_captions_and_pixels():
    batch = make_batch()
    ann = Annotate(thickness=1, scale=1)
    assert ann.captions(batch) == ["disc #4 alice", "triangle", "box #2 bob"]
    assert Annotate(ids=False, identities=False).captions(batch) == ["disc", "triangle", "box"]
    out = ann(batch)
    assert out is batch  # drawn in place into the images
    img = batch.images
    c4 = torch.tensor(PALETTE[4 % len(PALETTE)], dtype=torch.uint8)
    assert torch.equal(img[0, :, 50, 10], c4)  # left edge of the box of track 4
    assert torch.equal(img[0, :, 80, 35], c4)  # bottom edge
    c2 = torch.tensor(PALETTE[2], dtype=torch.uint8)  # untracked: by class (triangle = 2)
    assert torch.equal(img[1, :, 70, 50], c2)  # source box 100..300 -> image 50..150 (half size)
    assert torch.equal(img[1, :, 60, 150], c2)
    assert img[1, :, 70, 100].eq(50).all()  # interior untouched


def test_annotate_empty_and_validation():
    b = Batch(images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0),))
    assert Annotate()(b) is b and b.images.eq(0).all()
    with pytest.raises(ValueError, match="scale"):
        Annotate(scale=0)


def _dense_batch(n=12):
    """n boxes in one frame, each 6 px below the last: captions above each box would overlap."""
    from vidflow.batch import Batch, FrameInfo, Objects

    y = torch.arange(n, dtype=torch.float32) * 6 + 20
    bbox = torch.stack([torch.full((n,), 30.0), y, torch.full((n,), 150.0), y + 40], 1)
    objs = Objects.create(frame_idx=torch.zeros(n, dtype=torch.int64), bbox=bbox,
                          confidence=torch.linspace(0.9, 0.5, n), class_id=torch.zeros(n, dtype=torch.int64),
                          object_id=torch.arange(n))
    return Batch(images=torch.zeros(1, 3, 240, 320, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0),),
                 objects=objs, labels={"objects": ("box",)})


def _overlaps(pos, shown, texts, scale=1):
    gh, pad = 8 * scale, scale
    rects = [(x - pad, y - pad, x + text_size(t, scale)[0] + pad, y + gh + pad)
             for (x, y), k, t in zip(pos.tolist(), shown, texts) if k]
    return sum(not (a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3])
               for i, a in enumerate(rects) for b in rects[i + 1:])


def test_captions_avoid_each_other_in_dense_scenes():
    b = _dense_batch()
    ann = Annotate(scale=1)
    texts = ann.captions(b)
    pos, shown = ann.layout(b, texts)
    assert _overlaps(pos, shown, texts) == 0
    assert sum(shown) >= 6 and shown[0]                       # the most confident always gets a spot
    fixed = Annotate(scale=1, avoid=False)
    pos2, shown2 = fixed.layout(b, texts)
    assert all(shown2) and _overlaps(pos2, shown2, texts) > 5     # the old placement: a pile-up
    img = ann(b).images
    assert img.any()                                           # drawn
