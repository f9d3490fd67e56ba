"""One host copy per batch: ``hostcopy.stack_to_host`` round-trips every dtype in one packed
buffer; ``records.host_columns`` is copied once per batch however many sinks (and the summary)
read it, in a pipeline with and without overlap, and ``host_table`` pads it once; each sink's view
has the columns its ``attrs`` ask for."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import orjson
import pytest
import torch

import vidflow.ops.masks as masks_mod
import vidflow.sinks.hostcopy as hostcopy
import vidflow.sinks.records as records
from vidflow import Muxer, Pipeline
from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.masks import Masks
from vidflow.sinks.broker import BrokerSink
from vidflow.sinks.jsonl import JsonlSink
from vidflow.sinks.records import host_columns, host_frames, host_table, stack_to_host
from vidflow.stats import RunSummary
from vidflow.testing import FakeSource, MemorySink

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
          torch.bfloat16, torch.float32, torch.float64]


def _tensor(dtype: torch.dtype, shape: tuple, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_stack_to_host_round_trips_every_dtype_and_shape(n):
    shapes = [(n,), (n, 3), (n, 2, 5), (n, 1)]
    ts = [_tensor(d, shapes[i % len(shapes)], i) for i, d in enumerate(DTYPES)]
    ts.append(torch.arange(12, dtype=torch.float32).reshape(3, 4).t()[:, :n])   # not contiguous
    got = stack_to_host(ts)
    assert len(got) == len(ts)
    for t, a in zip(ts, got):
        want = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        assert a.shape == tuple(t.shape) and a.dtype == want.dtype, (t.dtype, a.dtype, a.shape)
        np.testing.assert_array_equal(a, want)
        assert a.dtype != np.float32 or a.ctypes.data % 4 == 0          # every part stays aligned
        assert a.dtype != np.int64 or a.ctypes.data % 8 == 0


def test_stack_to_host_gives_fresh_arrays_and_wants_one_device():
    t = torch.arange(6, dtype=torch.int32)
    (a,) = stack_to_host([t])
    t += 100                                          # the batch's tensor changes later: the copy does not
    assert a.tolist() == list(range(6))
    assert stack_to_host([]) == []
    with pytest.raises(ValueError, match="one device"):
        stack_to_host([t, torch.zeros(2, device="meta")])


def _batch(seed: int = 0, b: int = 4, with_masks: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    fi = torch.tensor([2, 0, 0, 3, 0, 2])            # frame 1 without objects, not in frame order
    n = len(fi)
    xy = torch.rand(n, 2, generator=g) * 20
    box = torch.cat([xy, xy + 6], 1)
    masks = Masks(torch.rand(n, 5, 6, generator=g) > 0.5, xy.long()) if with_masks else None
    objs = Objects.create(frame_idx=fi, bbox=box, class_id=torch.tensor([0, 1, -1, 2, 1, 0]),
                          object_id=torch.arange(n) + 10 * seed, confidence=torch.rand(n, generator=g), masks=masks,
                          attrs={"embed.vector": torch.randn(n, 8, generator=g), "other.x": torch.randn(n, 3, generator=g)})
    return Batch(images=torch.zeros(b, 3, 32, 32, dtype=torch.uint8),
                 frames=tuple(FrameInfo(i % 2, seed * 2 + i // 2, 0.1 * i, 5, 32, 32) for i in range(b)),
                 objects=objs, labels={"objects": ("a", "b", "c")})


def test_host_table_pads_per_frame_is_read_only_and_shared_across_threads(monkeypatch):
    calls = []
    real = hostcopy.stack_to_host
    monkeypatch.setattr(hostcopy, "stack_to_host", lambda ts: calls.append(len(ts)) or real(ts))
    b = _batch()
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(host_frames(b, attrs=bool(len(seen) % 2))))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(seen) == 3             # three readers, one copy
    t = host_table(b)
    assert t.count.tolist() == [3, 0, 2, 1]
    assert t.columns["class-id"].tolist() == [[1, -1, 1], [-1, -1, -1], [0, 0, -1], [2, -1, -1]]
    np.testing.assert_array_equal(t.columns["bbox"][2, :2], b.objects.bbox[[0, 5]].numpy())
    assert "instance-segmentation" not in t.columns and len(calls) == 1    # masks: only when asked for
    seg = host_frames(b, dense_masks=True).columns["instance-segmentation"]   # float32 as the bridge has it
    assert seg.dtype == np.float32 and seg.shape == (4, 3, 5, 6) and len(calls) == 2
    np.testing.assert_array_equal(seg[2, :2], b.objects.masks.data[[0, 5]].float().numpy())
    assert seg[1].sum() == 0                                                  # frame 1 has none: padding
    assert host_frames(b, dense_masks=True).columns["instance-segmentation"] is seg and len(calls) == 2
    with pytest.raises(ValueError):
        t.columns["bbox"][0, 0, 0] = 1.0                   # shared between sinks: read-only
    assert host_table(_batch()).columns["bbox"].tobytes() == t.columns["bbox"].tobytes()   # same input, same table


def test_host_columns_are_the_table_as_it_crossed():
    b = _batch()
    hc = host_columns(b)
    assert hc.frame_idx.tolist() == b.objects.frame_idx.tolist() and len(hc) == 6
    np.testing.assert_array_equal(hc.columns["bbox"], b.objects.bbox.numpy())
    np.testing.assert_array_equal(hc.columns["infer-tensor-object-other.x"], b.objects.attrs["other.x"].numpy())
    assert set(hc.columns) == set(host_table(b).columns)


def test_views_have_the_columns_their_attrs_ask_for():
    b = _batch()
    every = set(host_frames(b).columns)
    assert {"infer-tensor-object-embed.vector", "infer-tensor-object-other.x", "bbox"} <= every
    assert set(host_frames(b, attrs=False).columns) == {c for c in every if not c.startswith(records.OBJECT_PREFIX)}
    only = set(host_frames(b, attrs=["embed.vector"]).columns)
    assert "infer-tensor-object-embed.vector" in only and "infer-tensor-object-other.x" not in only
    assert host_frames(b, masks=False).rle is None and len(host_frames(b).rle) == 4


def test_summary_counts_from_the_table_equal_the_batch_counts():
    b = _batch()
    a, t = RunSummary(), RunSummary()
    a.note_batch(b, RunSummary.batch_counts(b))
    t.note_batch(b, RunSummary.batch_counts(b, host_columns(b)))
    assert a.classes == t.classes and a.tracks == t.tracks
    assert {k: dict(v) for k, v in t.classes.items()} == {0: {"a": 2, "b": 2, "-1": 1}, 1: {"c": 1}}
    assert t.tracks == {0: {0, 1, 2, 4, 5}, 1: {3}}


class _Memory:
    """In-process transport: acknowledges on flush."""

    name, default_topic = "memory", "t/{source_id}"

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self._pending: list[bytes] = []

    def connect(self) -> None:
        self._pending = []

    def publish(self, topic, key, payload) -> None:
        self._pending.append(payload)

    def flush(self, timeout) -> None:
        self.got += self._pending
        self._pending = []

    def close(self) -> None:
        self._pending = []


class _AddObjects:
    """A stage that gives every batch the objects (masks, two attributes) of :func:`_batch`."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, batch: Batch) -> Batch:
        self.n += 1
        objs = _batch(self.n, b=len(batch)).objects if len(batch) == 4 else None
        return batch.replace(objects=objs, labels={"objects": ("a", "b", "c")}) if objs is not None else batch


def test_without_host_sinks_the_summary_makes_its_own_small_copy(monkeypatch):
    copies = []
    real = hostcopy.stack_to_host
    monkeypatch.setattr(hostcopy, "stack_to_host", lambda ts: copies.append(len(ts)) or real(ts))
    pipe = Pipeline([FakeSource(8), FakeSource(8)], Muxer(batch_size=4), [_AddObjects()], [MemorySink()],
                    device="cpu")
    summary = pipe.run()
    assert copies == [3] * 4 and sum(sum(c.values()) for c in summary.classes.values()) == 24


@pytest.mark.parametrize("overlap", [False, True])
def test_three_sinks_one_host_copy_and_one_rle_per_batch(tmp_path, monkeypatch, overlap):
    copies, rles, strings = [], [], []
    real_copy, real_rle, real_str = hostcopy.stack_to_host, masks_mod.rle_change_points, masks_mod.rle_strings_from_changes
    monkeypatch.setattr(hostcopy, "stack_to_host", lambda ts: copies.append(len(ts)) or real_copy(ts))
    # the run starts on the pipeline's thread (where the batch is finished), the strings on a sink's
    main = threading.current_thread() if not overlap else None
    monkeypatch.setattr(masks_mod, "rle_change_points",
                        lambda *a: rles.append(threading.current_thread()) or real_rle(*a))
    monkeypatch.setattr(masks_mod, "rle_strings_from_changes",
                        lambda *a: strings.append(threading.current_thread()) or real_str(*a))
    transport = _Memory()
    sinks = [JsonlSink(tmp_path / "all.jsonl"), JsonlSink(tmp_path / "none.jsonl", attrs=False, name="j2"),
             BrokerSink(transport, attrs=["embed.vector"], retry_s=(0.01, 0.05))]
    pipe = Pipeline([FakeSource(8), FakeSource(8)], Muxer(batch_size=4), [_AddObjects()], sinks, device="cpu",
                    overlap=overlap)
    summary = pipe.run()
    assert summary.batches == 4 and summary.frames == 16
    assert len(copies) == 4                               # one stacked copy per batch, none for the summary
    assert len(rles) == len(strings) == 4                 # masks RLE once per batch, for two jsonl sinks
    assert not set(strings) & set(rles)                   # the strings not on the pipeline's threads
    if main is not None:
        assert set(rles) == {main}
    assert sum(sum(c.values()) for c in summary.classes.values()) == 4 * 6
    all_ = [orjson.loads(x) for x in (tmp_path / "all.jsonl").read_bytes().splitlines()]
    none = [orjson.loads(x) for x in (tmp_path / "none.jsonl").read_bytes().splitlines()]
    objs = [o for r in all_ for o in r["objects"]]
    assert len(all_) == len(none) == 16 and len(objs) == 24
    assert all(set(o["attrs"]) == {"embed.vector", "other.x"} and "mask" in o for o in objs)
    assert all("attrs" not in o and "mask" in o for r in none for o in r["objects"])
    v1 = [orjson.loads(p) for p in transport.got if b"end-of-stream" not in p]
    assert len(v1) == 16 and sum(r["num-objects"] for r in v1) == 24
    assert all("infer-tensor-object-embed.vector" in r and "infer-tensor-object-other.x" not in r for r in v1)


def test_stack_to_host_takes_one_element_columns_of_any_stride():
    # one object: its columns sliced from an [N, 6] table have stride 6 yet count as contiguous
    table = torch.arange(6, dtype=torch.int64).reshape(1, 6)
    col, box = table[:, 2], torch.rand(1, 6)[:, 1:5]
    assert col.stride() == (6,) and col.is_contiguous()
    a, b = hostcopy.stack_to_host([col, box])
    assert a.tolist() == [2] and np.array_equal(b, box.numpy())


@pytest.mark.parametrize("in_order", [False, True])
def test_host_rle_is_each_frames_objects_in_table_order(in_order):
    """The RLE per frame is that frame's objects' masks in the table's order, whether the table
    came in frame order (no reordering on the device) or not."""
    from vidflow.ops.masks import to_rle

    b = _batch(seed=3)
    if in_order:
        o = b.objects
        b = dataclasses.replace(b, objects=o[torch.argsort(o.frame_idx, stable=True)])
    got = hostcopy.host_rle(b)
    fi = b.objects.frame_idx
    for i, f in enumerate(b.frames):
        idx = (fi == i).nonzero().squeeze(1)
        want = to_rle(b.objects.masks[idx], [[f.width, f.height]] * len(idx)) if len(idx) else []
        assert list(got[i]) == want
