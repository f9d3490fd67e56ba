"""The main thread's part of a batch does not wait for the GPU: ``Muxer.assemble`` and
``Detector.launch`` run under ``torch.cuda.set_sync_debug_mode("error")`` (a host sync raises).
Launching batch i+1 then overlaps batch i's model; a small ``new_tensor`` / ``torch.tensor(...,
device=cuda)`` once per batch is enough to lose that (``vidflow/ops/_const.py``)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vidflow import Muxer
from vidflow.stages.detect import Detector
from vidflow.testing import FakeSource

pytestmark = pytest.mark.gpu


@contextlib.contextmanager
def _no_sync():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _frames(dev: torch.device, n: int = 4) -> list:
    return [f for sid in range(n) for f in FakeSource(1, width=160, height=120).frames(device=dev, source_id=sid)]


@pytest.mark.parametrize("letterbox, norm", [(True, False), (False, False), (True, True)])
def test_assemble_and_launch_do_not_sync(cuda_device, letterbox, norm):
    mux = Muxer(batch_size=4, size=(128, 96))
    extra = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)} if norm else {}
    det = Detector("demo", size=(128, 96), letterbox=letterbox, **extra)
    det.warmup(4, cuda_device)
    det.finish(det.launch(mux.assemble(_frames(cuda_device), cuda_device)))   # first use: allocations
    torch.cuda.synchronize()
    frames = _frames(cuda_device)
    with _no_sync():
        batch = mux.assemble(frames, cuda_device)
        pending = det.launch(batch)
    out = det.finish(pending)                  # (finish may wait: it decodes the boxes)
    assert len(out) == 4 and out.objects is not None


def test_the_sync_check_catches_a_sync(cuda_device):
    x = torch.ones(4, device=cuda_device)
    with _no_sync(), pytest.raises(RuntimeError):
        x.new_tensor([1.0, 2.0])               # what ops/_const.const avoids


def test_tail_stream_priority_from_the_environment(monkeypatch):
    """``VIDFLOW_TAIL_PRIORITY=-1``: the tail's stream has the device's high priority (the bench's
    ``tailprio`` variant); unset: the default priority."""
    import torch

    from vidflow.runtime.overlap import Tail

    dev = torch.device("cuda")
    hi = torch.cuda.Stream(dev, priority=-1).priority
    for env, want in ((None, 0), ("-1", hi)):
        if env is None:
            monkeypatch.delenv("VIDFLOW_TAIL_PRIORITY", raising=False)
        else:
            monkeypatch.setenv("VIDFLOW_TAIL_PRIORITY", env)
        t = Tail(lambda b, w: b, lambda sid: None, dev)
        try:
            assert t.stream is not None and t.stream.priority == want
        finally:
            list(t.finish())
    assert hi < 0


def test_sync_observer_times_each_part_on_its_threads_stream(cuda_device):
    """An observer with ``sync = True`` on a CUDA pipeline with overlap (detector launch on the
    main thread, finish + tracker on the tail): every part is reported with a positive time, the
    tail's parts too (each thread's stream synchronised, ``runtime/steps.py``)."""
    from vidflow import Pipeline
    from vidflow.stages.track import Tracker
    from vidflow.testing import MemorySink

    class Watch:
        sync = True

        def __init__(self):
            self.parts = {}

        def on_stage(self, stage, batch_size, seconds):
            self.parts.setdefault(stage, []).append(seconds)

    w = Watch()
    pipe = Pipeline([FakeSource(12, width=160, height=120) for _ in range(4)], Muxer(batch_size=4, size=(128, 96)),
                    [Detector("demo", size=(128, 96)), Tracker()], [MemorySink(keep_images=False)],
                    device=cuda_device, observers=[w])
    pipe.run()
    assert pipe.summary.frames == 48
    assert {"detect.launch", "detect.finish", "track"} <= set(w.parts), w.parts     # overlap: both halves
    assert all(s > 0 for v in w.parts.values() for s in v)
