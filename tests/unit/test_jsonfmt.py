"""The JSONL encoder's whole-batch formatting writes exactly the bytes of ``orjson.dumps`` of the
per-frame dicts (``JsonlEncoder.records``, the path it replaced): awkward floats (NaN, inf, -0.0,
ties, the table's edges, huge), every decimals setting, big and negative ids, every attribute
kind, names with commas / quotes / newlines, masks, keypoints, frames without objects."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.masks import Masks
from vidflow.sinks._jsonfmt import Pieces, separators
from vidflow.sinks.encoders import JsonlEncoder
from vidflow.sinks.records import host_frames

AWKWARD = [0.0, -0.0, -0.001, 0.005, 0.015, 0.125, -2.5, 1e-5, 16383.994, 16383.996, 16384.0, -16384.2, 123456.789,
           1e20, -3e300, float("nan"), float("inf"), float("-inf"), 0.1 + 0.2, 1 / 3, 99.995, 5e-324]


def _batch(seed: int, *, b: int = 7, masks: bool = False, awkward: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    fi = torch.tensor([1, 1, 2, 4, 4, 4, 2, 5, 1, 4, 4])          # frames 0, 3 and 6 without objects
    n = len(fi)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 3000 - 500
    box = torch.cat([xy, xy + torch.rand(n, 2, generator=g, dtype=torch.float64) * 200], 1)
    if awkward:
        flat = box.reshape(-1)
        flat[:len(AWKWARD)] = torch.tensor(AWKWARD, dtype=torch.float64)
    conf = torch.rand(n, generator=g)
    conf[:3] = torch.tensor([float("nan"), 0.99995, -0.0])
    attrs = {"embed.vector": torch.randn(n, 8, generator=g) * 40, "big.vec": torch.randn(n, 40, generator=g),
             "h.half": torch.randn(n, 3, generator=g).half(), "b.bf": torch.randn(n, 2, generator=g).bfloat16(),
             "f.flag": torch.rand(n, generator=g) > 0.5, "u.u8": torch.randint(0, 255, (n, 5), generator=g, dtype=torch.uint8),
             "i.i32": torch.randint(-9, 9, (n, 1), generator=g, dtype=torch.int32),
             "w.wide": torch.randint(-2**40, 2**40, (n, 2), generator=g), "g.grid": torch.randn(n, 2, 3, generator=g),
             "e.empty": torch.zeros(n, 0), "color.label": torch.randint(-1, 4, (n,), generator=g),
             "color.confidence": torch.rand(n, generator=g), "multi.label": torch.randint(0, 2, (n, 2), generator=g),
             "who.identity": torch.randint(-1, 4, (n,), generator=g), "s.scalar": torch.randn(n, 1, generator=g)}
    objs = Objects.create(
        frame_idx=fi, bbox=box.float(), confidence=conf, class_id=torch.randint(-1, 5, (n,), generator=g),
        object_id=torch.tensor([0, -1, 7, 16383, 16384, -16384, 10**9, 5, 2**40, 3, 1]),
        attrs=attrs, keypoints=torch.rand(n, 3, 3, generator=g) * 100,
        masks=Masks(torch.rand(n, 4, 5, generator=g) > 0.5, xy.long().clamp(0, 20)) if masks else None)
    sids = [0, "cam,1", 'q"uote', "new\nline", "ü", 5, 0]
    frames = tuple(FrameInfo(sids[i % len(sids)], i, i / 29.97 + 1e-9, 10**18 + i, 1920, 1080) for i in range(b))
    return Batch(images=torch.zeros(b, 3, 2, 2, dtype=torch.uint8), frames=frames, objects=objs,
                 labels={"objects": ("person", "a,b", 'q"', "new\nline", "ü"), "color": ("red", "green"),
                         "multi": ("x", "y"), "who": ("ann", "bob")})


def _check(enc: JsonlEncoder, batch: Batch) -> None:
    hf = host_frames(batch)
    want = [orjson.dumps(r) for r in enc.records(hf)]
    got = [p for _, p in enc.encode(hf, lambda s: 0)]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (i, g[:300], w[:300])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [0, 1, 2, 4, 6])
def test_bytes_equal_the_dict_path(seed, decimals):
    _check(JsonlEncoder(decimals=decimals), _batch(seed))


@pytest.mark.parametrize("kw", [{"attrs": False}, {"max_list": 2}, {"max_list": 100}])
def test_bytes_equal_the_dict_path_with_options(kw):
    _check(JsonlEncoder(**kw), _batch(3))


def test_bytes_equal_with_masks_and_without_any_objects():
    pytest.importorskip("pycocotools")
    _check(JsonlEncoder(), _batch(4, masks=True))
    empty = Batch(images=torch.zeros(3, 3, 2, 2, dtype=torch.uint8),
                  frames=tuple(FrameInfo(s, 0, 0.5, 0, 64, 48) for s in ("a", "b", "c")), labels={"objects": ("x",)})
    _check(JsonlEncoder(), empty)


def test_random_floats_at_every_scale_match_orjson():
    rng = np.random.default_rng(7)
    for d in range(5):
        x = np.concatenate([rng.normal(0, 10.0 ** e, 4000) for e in range(-6, 7)] +
                           [np.arange(-20000, 20000) / 10 ** d + 0.5 / 10 ** d])        # exact ties
        p = Pieces(len(x))
        p.const(b"[")
        p.floats(x, d)
        p.const(b"]\n")
        got = p.join().split(b"\n")[:-1]
        want = [orjson.dumps([v]) for v in np.round(x, d).tolist()]
        bad = [(v, g, w) for v, g, w in zip(x.tolist(), got, want) if g != w]
        assert not bad, (d, bad[:5])


def test_ints_and_nested_lists():
    v = np.array([[0, -1, 16383, -16383, 16384, -(2**62)], [5, 6, 7, 8, 9, 10]])
    p = Pieces(2)
    p.array(v.reshape(2, 2, 3), "i")
    p.const(b"\n")
    assert p.join().split(b"\n")[:-1] == [orjson.dumps(r) for r in v.reshape(2, 2, 3).tolist()]
    assert separators((2, 2)) == [b"[[", b",", b"],[", b",", b"]]"]
    assert separators((3,)) == [b"[", b",", b",", b"]"]
