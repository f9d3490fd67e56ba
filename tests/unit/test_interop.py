"""DLPack interop on the CPU: torch / NumPy / JAX views of frames, model inputs, raw outputs and
per-object tensors (fp16 included); in-place edits seen downstream; plain-array detectors feeding
the tracker through ``from_frames``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.translate import from_frames, to_frames


def make_batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    n = 4
    xy = torch.rand(n, 2, generator=g) * 40
    objs = Objects.create(frame_idx=torch.tensor([0, 0, 1, 1]), bbox=torch.cat([xy, xy + 10], 1),
                          confidence=torch.rand(n, generator=g),
                          attrs={"embed.vector": torch.randn(n, 8, generator=g).half(),
                                 "color.label": torch.tensor([0, 1, 2, 1])})
    return Batch(images=torch.randint(0, 255, (2, 3, 16, 24), dtype=torch.uint8, generator=g),
                 frames=(FrameInfo(0, 0, 0.0, width=24, height=16), FrameInfo(1, 0, 0.0, width=24, height=16)),
                 objects=objs,
                 tensors={"detect.input": torch.rand(2, 3, 8, 8, generator=g).half(),
                          "detect.output0": torch.randn(2, 7, 12, generator=g)})


def tensors_of(batch: Batch) -> dict[str, torch.Tensor]:
    """Every tensor a user sees: frames, model input (fp16), raw output, per-object columns."""
    m = to_frames(batch)[1]
    return {"frame": m["frame"], "input": m["infer-tensor-frame-detect.input"],
            "output": m["infer-tensor-frame-detect.output0"], "bbox": m["bbox"], "object-id": m["object-id"],
            "embed": m["infer-tensor-object-embed.vector"], "images": batch.images,
            "objects.confidence": batch.objects.confidence}


def test_torch_and_numpy_views_share_memory():
    for name, t in tensors_of(make_batch()).items():
        a = np.from_dlpack(t)
        assert a.shape == tuple(t.shape) and a.dtype == np.dtype(str(t.dtype).removeprefix("torch.")), name
        np.testing.assert_array_equal(a, t.numpy())
        back = torch.from_dlpack(a)
        assert back.data_ptr() == t.data_ptr() and back.dtype == t.dtype, name  # zero-copy both ways
        t2 = torch.from_dlpack(t)
        assert t2.data_ptr() == t.data_ptr()


def test_numpy_in_place_edit_seen_by_next_stage_and_sink(tmp_path: Path):
    from vidflow.mux import Muxer
    from vidflow.pipeline import Pipeline
    from vidflow.sinks.video import VideoSink
    from vidflow.testing import FakeSource, MemorySink

    def paint(batch: Batch) -> Batch:  # user code: edits frames through a NumPy view
        for m in to_frames(batch):
            np.from_dlpack(m["frame"])[:, 8:24, 16:48] = np.array([250, 10, 10], np.uint8)[:, None, None]
        return batch

    seen = []

    def check(batch: Batch) -> Batch:  # the next stage sees the edit
        seen.append(bool(batch.images[:, 0, 8:24, 16:48].eq(250).all()))
        return batch

    paint.name, check.name = "paint", "check"
    mem = MemorySink()
    with VideoSink(tmp_path / "v", tiled=False, draw=False) as video:
        Pipeline(sources=[FakeSource(4, width=64, height=48)], muxer=Muxer(batch_size=2, max_wait_ms=5),
                 stages=[paint, check], sinks=[mem, video], device="cpu").run()
    assert seen and all(seen)
    with av.open(str(tmp_path / "v" / "0.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4
    for f in frames:
        assert np.abs(f[10:22, 18:46].astype(int) - [250, 10, 10]).mean() < 12


def test_jax_round_trips():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # else JAX turns int64 ids into int32
    try:
        for name, t in tensors_of(make_batch()).items():
            a = jnp.from_dlpack(t)
            assert a.shape == tuple(t.shape), name
            assert str(a.dtype) == str(t.dtype).removeprefix("torch."), name
            back = torch.from_dlpack(a)
            assert back.dtype == t.dtype and torch.equal(back, t), name
    finally:
        jax.config.update("jax_enable_x64", x64)


def test_jax_detector_feeds_tracker():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from vidflow.stages.track import Tracker

    tracker = Tracker(min_hits=1)
    ids = []
    for i in range(5):
        batch = Batch(images=torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
                      frames=(FrameInfo(0, i, i / 30, width=64, height=64), FrameInfo(1, i, i / 30, width=64, height=64)))
        # a "detector" in plain JAX: one box per frame, moving right, as per-frame columns
        msgs = [{"bbox": jnp.array([[10.0 + 2 * i, 10.0, 30.0 + 2 * i, 30.0]], dtype=jnp.float32), "class-id": jnp.array([[0]]),
                 "confidence": jnp.array([[0.9]], dtype=jnp.float32)},
                {"bbox": jnp.array([[40.0, 40.0 - i, 60.0, 60.0 - i]], dtype=jnp.float32),
                 "confidence": jnp.array([[0.8]], dtype=jnp.float32), "class-id": jnp.array([[1]])}]
        batch = batch.replace(objects=from_frames(msgs))
        out = tracker(batch)
        ids.append(out.objects.object_id.tolist())
    assert ids[-1][0] >= 0 and ids[-1][1] >= 0  # tracked (ids count per source)
    assert all(row == ids[-1] for row in ids[2:])  # the same ids frame after frame
