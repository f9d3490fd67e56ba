"""COCO RLE of a batch's masks at once (``ops.masks.to_rle``, NumPy) equals the one-by-one
encoding (``rle_counts`` -> counts -> ``encode_counts``) and pycocotools where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidflow.ops.masks import Masks, _counts_from_changes, decode_counts, encode_counts, rle_counts, to_rle


def _one_by_one(masks: Masks, sizes: list[list[int]]) -> list[str]:
    sz = torch.tensor(sizes)
    return [encode_counts(_counts_from_changes(c, w * h)) for (w, h), c in zip(sizes, rle_counts(masks, sz[:, 1]))]


def _frame(masks: Masks, i: int, w: int, h: int) -> np.ndarray:
    f = np.zeros((h, w), dtype=np.uint8)
    x0, y0 = masks.origin[i].tolist()
    d = masks.data[i].numpy()
    f[y0:y0 + d.shape[0], x0:x0 + d.shape[1]] = d
    return f


def _cases() -> list[tuple[Masks, list[list[int]]]]:
    rng = np.random.default_rng(3)
    out = []
    # random blobs in random places of a 97x61 frame, one crop size per batch
    for density in (0.05, 0.5, 0.95):
        n, ch, cw, w, h = 9, 23, 17, 97, 61
        data = torch.from_numpy(rng.random((n, ch, cw)) < density)
        origin = torch.from_numpy(np.stack([rng.integers(0, w - cw, n), rng.integers(0, h - ch, n)], 1)).long()
        out.append((Masks(data, origin), [[w, h]] * n))
    # edges: at pixel 0, ending at the last pixel, as high as the frame (runs across columns),
    # empty, full
    h, w = 8, 6
    data = torch.zeros(5, h, w, dtype=torch.bool)
    data[0, :3, :2] = True                     # starts at pixel 0
    data[1, -2:, -1] = True                    # ends the frame
    data[2, :, 1:4] = True                     # full height: one run over three columns
    data[4] = True                             # the whole frame
    out.append((Masks(data, torch.zeros(5, 2, dtype=torch.int64)), [[w, h]] * 5))
    # frames of different sizes in one batch
    data = torch.from_numpy(rng.random((3, 4, 5)) < 0.5)
    out.append((Masks(data, torch.tensor([[0, 0], [3, 2], [10, 7]])), [[5, 4], [9, 9], [15, 11]]))
    return out


@pytest.mark.parametrize("case", range(5))
def test_batch_rle_equals_one_by_one_and_decodes_to_the_masks(case):
    masks, sizes = _cases()[case]
    got = to_rle(masks, sizes)
    assert [r["counts"] for r in got] == _one_by_one(masks, sizes)
    for i, (r, (w, h)) in enumerate(zip(got, sizes)):
        assert r["size"] == [h, w]
        counts = decode_counts(r["counts"])
        assert sum(counts) == w * h
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
        assert np.array_equal(flat.reshape(w, h).T, _frame(masks, i, w, h))


def test_batch_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    masks, sizes = _cases()[1]
    for r, i in zip(to_rle(masks, sizes), range(len(sizes))):
        w, h = sizes[i]
        ref = mask_api.encode(np.asfortranarray(_frame(masks, i, w, h)))
        assert r["counts"] == ref["counts"].decode()


def test_no_masks():
    assert to_rle(Masks(torch.zeros(0, 3, 3, dtype=torch.bool), torch.zeros(0, 2, dtype=torch.int64)), []) == []


@pytest.mark.parametrize("shuffled", [False, True])
def test_strings_from_changes_equal_the_scalar_encoder_on_wide_values(shuffled):
    """Run starts far apart (an 8K frame: counts and their deltas need up to 6 characters, either
    sign) and objects without any run, in order or shuffled: the vectorised encoder gives
    ``encode_counts``' strings."""
    from vidflow.ops.masks import rle_strings_from_changes

    rng = np.random.default_rng(11)
    w, h = 7680, 4320
    objs, poss, want = [], [], []
    for i in range(40):
        k = int(rng.integers(0, 12)) if i % 7 else 0
        p = np.unique(rng.integers(0, w * h, k)) if k else np.zeros(0, np.int64)
        objs.append(np.full(len(p), i))
        poss.append(p)
        want.append(encode_counts(_counts_from_changes(p.tolist(), w * h)))
    obj, pos = np.concatenate(objs), np.concatenate(poss)
    if shuffled:
        perm = rng.permutation(len(obj))
        obj, pos = obj[perm], pos[perm]
    got = rle_strings_from_changes(obj, pos, np.array([[w, h]] * 40))
    assert got == want
    assert max(len(s) for s in got) > 20
    assert [decode_counts(s) for s in got] == [_counts_from_changes(p.tolist(), w * h) for p in poss]
