"""One device-to-host copy per batch on CUDA, counted with torch.profiler (``Memcpy DtoH``
activities): the host table of a batch is one packed copy however many sinks read it, and a
pipeline with three host sinks makes no more copies than one without sinks (whose summary
counts make one small copy)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vidflow import Muxer, Pipeline
from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.sinks.jsonl import JsonlSink
from vidflow.sinks.parquet import ParquetSink
from vidflow.sinks.records import host_columns, host_frames, host_table, stack_to_host
from vidflow.stats import RunSummary
from vidflow.testing import FakeSource

pytestmark = pytest.mark.gpu


def _dtoh(prof) -> int:
    return sum(1 for e in prof.events() if "Memcpy DtoH" in e.name)


def _objects(b: int, seed: int, device) -> Objects:
    g = torch.Generator().manual_seed(seed)
    n = 5 * b
    xy = torch.rand(n, 2, generator=g) * 50
    return Objects.create(frame_idx=torch.randint(0, b, (n,), generator=g), bbox=torch.cat([xy, xy + 8], 1),
                          class_id=torch.randint(0, 3, (n,), generator=g), object_id=torch.arange(n),
                          confidence=torch.rand(n, generator=g),
                          attrs={"embed.vector": torch.randn(n, 64, generator=g).half(),
                                 "b.bf": torch.randn(n, 2, generator=g).bfloat16(),
                                 "flag.on": torch.rand(n, generator=g) > 0.5}).to(device)


def test_stack_to_host_is_one_copy_and_exact(cuda_device):
    ts = [torch.arange(7, device=cuda_device), torch.rand(7, 3, device=cuda_device).half(),
          torch.rand(7, 2, device=cuda_device).bfloat16(), torch.rand(7, device=cuda_device) > 0.5,
          torch.zeros(0, 4, device=cuda_device)]
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        got = stack_to_host(ts)
    assert _dtoh(prof) == 1
    for t, a in zip(ts, got):
        want = (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()
        assert a.dtype == want.dtype and (a == want).all()


def test_host_table_is_one_copy_for_three_readers_and_the_summary(cuda_device):
    b = 16
    batch = Batch(images=torch.zeros(b, 3, 8, 8, dtype=torch.uint8, device=cuda_device),
                  frames=tuple(FrameInfo(i % 4, i, 0.0, 0, 64, 64) for i in range(b)),
                  objects=_objects(b, 0, cuda_device), labels={"objects": ("a", "b", "c")})
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        table = host_table(batch)
        views = [host_frames(batch), host_frames(batch, attrs=False), host_frames(batch, attrs=["embed.vector"])]
        counts = RunSummary.batch_counts(batch, host_columns(batch))
    assert _dtoh(prof) == 1
    assert counts is not None and len(counts[1]) == len(batch.objects) and all(len(v) == b for v in views)
    assert len(table) == b


class _AddObjects:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, batch: Batch) -> Batch:
        self.n += 1
        return batch.replace(objects=_objects(len(batch), self.n, batch.device), labels={"objects": ("a", "b", "c")})


def _run(sinks, device) -> tuple[int, int]:
    pytest.importorskip("pyarrow")
    pipe = Pipeline([FakeSource(64) for _ in range(4)], Muxer(batch_size=16), [_AddObjects()], sinks, device=device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        summary = pipe.run()
    return _dtoh(prof), summary.batches


def test_three_host_sinks_add_no_copies(cuda_device, tmp_path):
    base, nb = _run([], cuda_device)
    with_sinks, nb2 = _run([JsonlSink(tmp_path / "a.jsonl"), JsonlSink(tmp_path / "b.jsonl", attrs=False),
                            ParquetSink(tmp_path / "c.parquet")], cuda_device)
    print(f"d2h copies: {base} without sinks, {with_sinks} with 3 host sinks, {nb} batches")
    assert nb > 0 and nb2 > 0
    assert with_sinks / nb2 <= base / nb   # the table replaces the summary's copy; the sinks add none
