"""Process-wide settings (torch threads, the collector's freeze) belong to a context entered by
the process's owner, not to a pipeline: two pipelines in one process never undo each other."""

from __future__ import annotations

import gc

import pytest
import torch

from vidflow import Muxer, Pipeline
from vidflow.pipeline import process_settings
from vidflow.testing import FakeSource, MemorySink


class Warm:
    name = "warm"

    def __init__(self):
        self.calls, self.frozen = [], []

    def warmup(self, batch_size, device):
        self.calls.append((batch_size, device.type))

    def __call__(self, batch):
        self.frozen.append(gc.get_freeze_count())
        return batch


def pipe(stage, frames=5):
    return Pipeline([FakeSource(frames)], Muxer(batch_size=3), [stage], [MemorySink()], device="cpu", warmup=True)


def test_a_pipeline_alone_changes_no_process_setting():
    w, threads = Warm(), torch.get_num_threads()
    pipe(w).run()
    assert w.calls == [(3, "cpu")]                     # warmed up
    assert w.frozen == [gc.get_freeze_count()] * 2 == [0, 0] and torch.get_num_threads() == threads


def test_warmup_freezes_the_collector_inside_the_context_only():
    w = Warm()
    p = pipe(w)
    with p.process_settings():
        p.run()
    assert min(w.frozen) > 0 and gc.get_freeze_count() == 0


def test_two_pipelines_in_one_context_keep_the_freeze():
    a, b = Warm(), Warm()
    with process_settings(freeze_gc=True):
        pipe(a).run()
        after_a = gc.get_freeze_count()                # a's end does not thaw what b relies on
        pipe(b).run()
    # (objects that die leave the frozen set, so the count may shrink a little; a thaw empties it)
    assert min(a.frozen) > 0 and after_a > min(a.frozen) // 2 and min(b.frozen) > min(a.frozen) // 2
    assert gc.get_freeze_count() == 0


def test_an_earlier_freeze_still_gets_the_objects_alive_at_the_start():
    """Something froze a few objects before the run: the pipeline still freezes what is alive
    after its warm-up (else every full collection walks all of torch again)."""
    gc.freeze()
    before = gc.get_freeze_count()
    keep = [[i] for i in range(5000)]                   # tracked objects created after that freeze
    w = Warm()
    try:
        with process_settings(freeze_gc=True):
            pipe(w, frames=4).run()
        assert w.frozen and min(w.frozen) >= before + len(keep)
        assert gc.get_freeze_count() == 0               # the context's end thaws everything
    finally:
        gc.unfreeze()
    del keep


def test_torch_threads_set_inside_and_restored(monkeypatch):
    threads = torch.get_num_threads()
    seen = []

    def stage(batch):
        seen.append(torch.get_num_threads())
        return batch

    p = Pipeline([FakeSource(2)], Muxer(batch_size=2), [stage], device="cpu", torch_threads=1)
    with p.process_settings():
        p.run()
    assert seen == [1] and torch.get_num_threads() == threads
    monkeypatch.setenv("VIDFLOW_NO_GC_FREEZE", "1")
    w = Warm()
    with process_settings(freeze_gc=True):
        pipe(w).run()
    assert w.frozen == [0, 0]
    with pytest.raises(ValueError, match="torch_threads"):
        with process_settings(torch_threads=0):
            pass
