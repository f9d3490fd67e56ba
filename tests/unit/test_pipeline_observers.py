"""Observers (vidflow.observe): per-stage and per-sink timings, batches, source states; an
observer that raises is dropped, never a reason to stop; a stage whose close fails is a StageError."""

from __future__ import annotations

import math
import threading

import pytest

from vidflow import Muxer, Pipeline
from vidflow.errors import StageError
from vidflow.testing import FakeSource, MemorySink


class Recorder:
    def __init__(self, pipe_ref=None):
        self.stages, self.writes, self.batches, self.states = [], [], [], []
        self.pipe_ref = pipe_ref

    def on_stage(self, stage, batch_size, seconds):
        self.stages.append((stage, batch_size, seconds))

    def on_write(self, sink, batch_size, seconds):
        self.writes.append((sink, batch_size, seconds))

    def on_batch(self, frames, wait_s, latencies_s):
        self.batches.append((frames, wait_s, list(latencies_s)))

    def on_source_state(self, source_id, state):
        self.states.append((source_id, state))
        if self.pipe_ref is not None:             # an observer may look at the pipeline from its hook
            self.pipe_ref[0].snapshot()


def twice(batch):
    return batch


def test_observers_see_stages_sinks_batches_and_states():
    ref: list = []
    rec = Recorder(ref)
    sink = MemorySink(keep_images=False)
    sink.name = "mem"
    pipe = Pipeline({"a": FakeSource(5), "b": FakeSource(3)}, Muxer(batch_size=2, max_wait_ms=5), [twice], [sink],
                    device="cpu", observers=[rec])
    ref.append(pipe)
    s = pipe.run()
    names = {n for n, _, _ in rec.stages}
    assert names == {"muxer.collect", "muxer.assemble", "twice"}
    assert sum(n for st, n, _ in rec.stages if st == "twice") == s.frames == 8
    assert all(t >= 0 for _, _, t in rec.stages + rec.writes)
    assert [w[0] for w in rec.writes] == ["mem"] * s.batches
    assert sum(b[0] for b in rec.batches) == 8 and len(rec.batches) == s.batches
    assert all(b[1] >= 0 and not math.isnan(b[1]) for b in rec.batches)          # the muxer's wait
    assert all(len(b[2]) == b[0] and min(b[2]) >= 0 for b in rec.batches)        # a latency per frame
    for sid in ("a", "b"):
        assert [st for i, st in rec.states if i == sid] == ["running", "ended"]


def test_add_observer_while_running_and_a_raising_observer_is_dropped(caplog):
    class Bad:
        def __init__(self):
            self.calls = 0

        def on_batch(self, frames, wait_s, latencies_s):
            self.calls += 1
            raise RuntimeError("observer bug")

    bad, late = Bad(), Recorder()
    pipe = None

    def add_late(batch):
        if not late.batches and not late.stages:
            pipe.add_observer(late)
        return batch

    pipe = Pipeline([FakeSource(8)], Muxer(batch_size=2), [add_late], [MemorySink()], device="cpu", observers=[bad])
    s = pipe.run()
    assert s.frames == 8 and bad.calls == 1                       # dropped after its first failure
    assert "observer bug" in caplog.text
    assert 0 < len(late.batches) <= s.batches
    with pytest.raises(ValueError, match="has none of"):
        pipe.add_observer(object())


def test_a_stage_failing_in_close_is_a_stage_error():
    class Leaky:
        name = "leaky"

        def __call__(self, batch):
            return batch

        def close(self):
            raise OSError("cannot release")

    sink = MemorySink()
    with pytest.raises(StageError, match="stage 'leaky'.*close: OSError: cannot release") as ei:
        Pipeline([FakeSource(2)], Muxer(batch_size=2), [Leaky()], [sink], device="cpu").run()
    assert ei.value.stage == "leaky" and sink.closed


def test_add_sink_while_running_gets_the_next_batches():
    late = MemorySink()
    pipe = None
    added = threading.Event()

    def add(batch):
        if not added.is_set():
            pipe.add_sink(late)
            added.set()
        return batch

    pipe = Pipeline([FakeSource(6)], Muxer(batch_size=2), [add], [MemorySink()], device="cpu")
    pipe.run()
    assert len(late.frames) == 6 and late.closed and pipe.sinks[-1] is late
