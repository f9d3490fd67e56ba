"""sinks.tiler: mosaic placement, aspect fit, Tiler emission rules."""

from __future__ import annotations

import pytest
import torch

from vidflow.sinks.tiler import Tiler, grid_for, tile


def solid(values, h=20, w=40):
    return torch.stack([torch.full((3, h, w), v, dtype=torch.uint8) for v in values])


def test_tile_row_major_and_fit():
    out = tile(solid([10, 20, 30]), [0, 1, 3], 2, 2, (80, 40))  # cells 40x20: no scaling
    assert out.shape == (3, 40, 80)
    assert out[:, :20, :40].eq(10).all() and out[:, :20, 40:].eq(20).all()
    assert out[:, 20:, :40].eq(0).all() and out[:, 20:, 40:].eq(30).all()
    # 40x20 images into 30x30 cells: fit to 30x15, centred vertically (8 px bars)
    out = tile(solid([100]), [0], 1, 1, (30, 30))
    assert out[:, 7:22, :].eq(100).all() and out[:, :7, :].eq(0).all() and out[:, 22:, :].eq(0).all()


def test_tile_validation():
    with pytest.raises(ValueError, match="slots"):
        tile(solid([1]), [4], 2, 2, (80, 40))
    with pytest.raises(ValueError, match="slots"):
        tile(solid([1, 2]), [0], 2, 2, (80, 40))
    with pytest.raises(ValueError, match="rows and cols"):
        tile(solid([1]), [0], 0, 2, (80, 40))
    assert grid_for(4) == (2, 2) and grid_for(5) == (2, 3) and grid_for(1) == (1, 1)


def test_tiler_emits_one_mosaic_per_step():
    t = Tiler(1, 2, (80, 20))
    out = t.update(solid([1, 2]), [0, 1], [0, 0])  # full grid at step 0: emitted at once
    assert len(out) == 1 and out[0][:, :, :40].eq(1).all() and out[0][:, :, 40:].eq(2).all()
    # two frames of each source in one batch -> two mosaics, in step order
    out = t.update(solid([3, 4, 5, 6]), [0, 1, 0, 1], [1, 1, 2, 2])
    assert len(out) == 2
    assert out[0][:, 0, 0].eq(3).all() and out[0][:, 0, 40].eq(4).all()
    assert out[1][:, 0, 0].eq(5).all() and out[1][:, 0, 40].eq(6).all()
    assert t.update(solid([7]), [0], [3]) == []  # waits for source 1's step 3
    out = t.flush()
    assert len(out) == 1 and out[0][:, 0, 0].eq(7).all() and out[0][:, 0, 40].eq(6).all() and t.flush() == []


def test_tiler_aligns_steps_whatever_the_batching():
    t = Tiler(2, 2, (80, 40), max_lag=10)
    # source 0 runs 3 frames ahead (the muxer batched only its frames first): nothing emitted yet
    assert t.update(solid([10, 11, 12, 13]), [0, 0, 0, 0], [0, 1, 2, 3]) == []
    assert t.update(solid([20, 30, 40]), [1, 2, 3], [0, 0, 0])[0][:, 0, 0].eq(10).all()
    out = t.update(solid([21, 31, 41]), [1, 2, 3], [1, 1, 1])
    assert len(out) == 1  # step 1: every cell shows its own frame 1
    m = out[0]
    assert m[:, 0, 0].eq(11).all() and m[:, 0, 40].eq(21).all()
    assert m[:, 20, 0].eq(31).all() and m[:, 20, 40].eq(41).all()
    # a source that stops: the others go on once they are max_lag steps ahead
    t2 = Tiler(1, 2, (80, 20), max_lag=2)
    assert len(t2.update(solid([1, 2]), [0, 1], [0, 0])) == 1
    assert t2.update(solid([3]), [0], [1]) == []
    out = t2.update(solid([4, 5]), [0, 0], [2, 3])
    # step 1 goes out when source 0 is 2 steps ahead; source 1 keeps its last frame
    assert len(out) == 1 and out[0][:, 0, 0].eq(3).all() and out[0][:, 0, 40].eq(2).all()
    out = t2.flush()
    assert len(out) == 2 and out[1][:, 0, 0].eq(5).all()


def test_tiler_partial_grid_waits_at_most_max_lag():
    t = Tiler(2, 2, (80, 40), max_lag=2)
    assert t.update(solid([1, 2]), [0, "cam-x"]) == [] and t.slots["cam-x"] == 1
    assert t.update(solid([3, 4]), [0, "cam-x"]) == []
    out = t.update(solid([5, 6]), [0, "cam-x"])
    assert len(out) == 1 and out[0][:, 0, 0].eq(1).all() and out[0][:, 0, 40].eq(2).all()
    assert out[0][:, 25, 5].eq(0).all()  # the cells nobody uses stay black
    assert len(t.flush()) == 2


def test_tiler_grid_full_skips_extra_sources():
    t = Tiler(1, 1, (40, 20))
    t.update(solid([1]), [0])
    assert t.slot(1) == -1
    assert t.update(solid([2]), [1]) == []
