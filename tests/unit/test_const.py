"""``ops._const.const``: what ``new_tensor`` / ``torch.tensor(device=)`` give (values, dtype, device),
built without a synchronising copy (the GPU side: tests/gpu/test_no_sync_gpu.py)."""

from __future__ import annotations

import torch

from vidflow.ops._const import const


def test_const_is_new_tensor_without_the_sync():
    like = torch.zeros(3, dtype=torch.float16)
    got = const([1.5, 2.0], like)
    want = like.new_tensor([1.5, 2.0])
    assert got.dtype == want.dtype == torch.float16 and got.device == want.device and torch.equal(got, want)
    ids = const([3, 1, 2], device="cpu", dtype=torch.int64)
    assert ids.dtype == torch.int64 and ids.tolist() == [3, 1, 2]
    assert const([[0, 0, 0], [255, 255, 255]], device="cpu", dtype=torch.uint8).shape == (2, 3)
    assert const([7], like, dtype=torch.int32).dtype == torch.int32     # dtype wins over like's
    assert const((1, 2)).dtype == torch.int64                           # inferred, on the CPU
