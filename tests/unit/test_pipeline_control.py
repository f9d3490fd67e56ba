"""Stable source ids, snapshot() and stop(drain=..., timeout=...): the pipeline's public control."""

from __future__ import annotations

import threading

import pytest

from vidflow import Muxer, Pipeline
from vidflow.stats import SourceCounters
from vidflow.testing import FakeSource, MemorySink, wait_until


def make(sources, stages=(), sinks=None, batch_size=2, **kw):
    sink = MemorySink(keep_images=False)
    pipe = Pipeline(sources, Muxer(batch_size=batch_size, max_wait_ms=5), stages,
                    [sink] if sinks is None else sinks, device="cpu", **kw)
    return pipe, sink


def test_sources_by_id_keep_their_ids():
    pipe, sink = make({"lobby": FakeSource(3), 7: FakeSource(2)})
    late = pipe.add_source(FakeSource(1))                # the first free position
    assert late == 0
    s = pipe.run()
    assert {sid: st.frames for sid, st in s.sources.items()} == {"lobby": 3, 7: 2, 0: 1}
    assert [f.frame_num for f in sink.frames_of("lobby")] == [0, 1, 2]
    assert len(sink.frames_of(7)) == 2


def test_sources_by_id_refuses_bad_ids():
    with pytest.raises(ValueError, match="ids must be int or str"):
        Pipeline({1.5: FakeSource(1)}, device="cpu")
    pipe = Pipeline({"a": FakeSource(1)}, device="cpu")
    with pytest.raises(ValueError, match="already in use"):
        pipe.add_source(FakeSource(1), "a")


def test_yaml_ids_reach_the_summary(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\nmuxer: {batch_size: 2}\nsources:\n"
                 "  - {synthetic: {width: 32, height: 32, frames: 2}, id: cam-a}\n"
                 "  - {synthetic: {width: 32, height: 32, frames: 3}}\n")
    s = Pipeline.from_yaml(str(p)).run()
    assert {sid: st.frames for sid, st in s.sources.items()} == {"cam-a": 2, 1: 3}


def test_snapshot_is_a_copy_with_live_counters():
    class Counting(FakeSource):
        def stats(self):
            return SourceCounters(state="running", reconnects=2, decode_errors=1, last_error="lost it")

    snaps = []
    pipe = None

    def look(batch):
        snaps.append(pipe.snapshot())
        return batch

    pipe, sink = make([Counting(6)], stages=[look])
    s = pipe.run()
    assert len(snaps) == s.batches == 3
    first = snaps[0].sources[0]
    assert first is not s.sources[0] and first.frames == 0 and first.decoded >= 2
    assert first.reconnects == 2 and first.last_error == "lost it" and first.errors >= 1
    assert [x.sources[0].frames for x in snaps] == [0, 2, 4]      # each taken before its batch's sinks
    snaps[0].sources[0].frames = 999                               # a copy: the pipeline's is untouched
    snaps[0].latencies_ms.append(1.0)
    assert pipe.snapshot().sources[0].frames == 6
    assert len(pipe.snapshot().latencies_ms) == len(s.latencies_ms)


def test_snapshot_from_another_thread_while_running():
    pipe, sink = make([FakeSource(None, live=True), FakeSource(None)])
    t = threading.Thread(target=pipe.run)
    t.start()
    try:
        wait_until(lambda: pipe.snapshot().frames >= 20, what="20 frames")
        snap = pipe.snapshot()
        assert snap.batches >= 10 and set(snap.sources) == {0, 1}
        for st in snap.sources.values():
            assert st.frames <= st.decoded and st.state == "running"
    finally:
        pipe.stop(drain=False)
        t.join(10)
    assert not t.is_alive()


def test_stop_drain_finishes_what_was_queued():
    pipe = None
    seen = []

    def stopper(batch):
        seen.append(len(batch))
        if len(seen) == 3:
            pipe.stop()                       # drain=True by default
        return batch

    pipe, sink = make([FakeSource(None), FakeSource(None)], stages=[stopper], queue_size=4)
    s = pipe.run()
    assert sink.closed
    for sid in (0, 1):
        st = s.sources[sid]
        # every frame taken from the source went through the stages and the sinks
        assert st.state == "stopped" and st.frames == st.decoded == len(sink.frames_of(sid)), st
    assert s.frames > 6


def test_stop_without_drain_drops_the_queue_but_closes_the_sinks():
    pipe = None
    seen = []

    def stopper(batch):
        seen.append(len(batch))
        if len(seen) == 2:
            pipe.stop(drain=False)
        return batch

    pipe, sink = make([FakeSource(None)], stages=[stopper], queue_size=8)
    s = pipe.run()
    assert sink.closed and s.sources[0].state == "stopped"
    assert s.frames == len(sink.frames) <= 2 * len(seen)


def test_stop_drain_past_its_timeout_stops_at_once():
    gate, blocked = threading.Event(), threading.Event()

    class Gated(MemorySink):
        first = 0

        def write(self, batch):
            super().write(batch)
            if not blocked.is_set():
                type(self).first = len(batch)      # frames of the batch the sink is stuck on
            blocked.set()
            gate.wait(30)

    sink = Gated(keep_images=False)
    pipe, _ = make([FakeSource(None)], sinks=[sink], queue_size=8, stop_timeout=0.05)
    t = threading.Thread(target=pipe.run)
    t.start()
    try:
        blocked.wait(10)
        # a full queue behind the stuck batch (8 frames) and the source blocked on a 9th: then only
        # the timeout's discard lets it end (with 8, closing the source could end it between two
        # frames and the drain would finish once the sink is released: a race under load)
        wait_until(lambda: pipe.snapshot().sources[0].decoded >= Gated.first + 9, what="a full queue")
        pipe.stop()                                            # cannot drain: the sink is stuck
        # past the timeout the queue is discarded, which lets the source thread end
        wait_until(lambda: pipe.snapshot().sources[0].state == "stopped", what="stopped")
    finally:
        gate.set()
        t.join(10)
    s = pipe.snapshot()
    assert not t.is_alive() and sink.closed
    assert s.sources[0].frames < s.sources[0].decoded          # the queued frames were dropped


def test_stop_arguments():
    pipe, _ = make([FakeSource(1)])
    with pytest.raises(ValueError, match="timeout"):
        pipe.stop(timeout=-1)
    with pytest.raises(ValueError, match="stop_timeout"):
        Pipeline([], device="cpu", stop_timeout=-1)
