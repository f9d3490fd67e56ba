import threading

import pytest
import torch

from vidflow import Muxer, Pipeline
from vidflow.errors import DecodeError, SinkError, SourceError, StageError, VidflowError
from vidflow.testing import FakeSource, MemorySink, frame_value, wait_until


def run(sources, stages=(), batch_size=4, **kw):
    sink = MemorySink()
    # keep_aspect=False: the pixel checks below read pixel (0, 0) of every frame, stretched to the batch size
    pipe = Pipeline(sources, Muxer(batch_size=batch_size, max_wait_ms=20, keep_aspect=False), stages, [sink],
                    device="cpu", **kw)
    return pipe, sink, pipe.run


def test_all_frames_delivered_in_order_per_source():
    pipe, sink, go = run([FakeSource(23), FakeSource(7, width=32, height=16), FakeSource(0)])
    summary = go()
    for sid, n in [(0, 23), (1, 7), (2, 0)]:
        nums = [f.frame_num for f in sink.frames_of(sid)]
        assert nums == list(range(n))
    assert summary.frames == 30 and summary.sources[0].state == "ended"
    # pixels: each frame carries its own grey level through the muxer
    for b in sink.batches:
        for i, f in enumerate(b.frames):
            assert int(b.images[i, 0, 0, 0]) == frame_value(f.source_id, f.frame_num)
    assert sink.closed
    assert "total: 30 frames" in summary.table()


def test_failing_source_fails_alone_then_run_raises_it():
    pipe, sink, go = run([FakeSource(40), FakeSource(100, fail_after=5, uri="rtsp://u:secret@cam/x")])
    with pytest.raises(DecodeError) as ei:
        go()
    assert ei.value.source_id == 1 and "secret" not in str(ei.value)
    assert [f.frame_num for f in sink.frames_of(0)] == list(range(40))      # the good one is complete
    assert len(sink.frames_of(1)) == 5
    assert pipe.summary.sources[1].state == "failed" and sink.closed


def test_non_strict_records_error_without_raising():
    pipe, sink, go = run([FakeSource(5), FakeSource(10, fail_after=2)], strict=False)
    s = go()
    assert isinstance(s.sources[1].error, SourceError) and s.sources[1].errors == 1
    assert "fake failure" in s.table()


def test_unexpected_source_exception_becomes_decode_error():
    class Broken(FakeSource):
        def frames(self, *, device, source_id):
            yield from super().frames(device=device, source_id=source_id)
            raise RuntimeError("boom")

    _, _, go = run([Broken(3)])
    with pytest.raises(DecodeError, match="source 0.*RuntimeError: boom"):
        go()


def test_stage_error_names_stage_and_stops_everything():
    def bad(batch):
        raise ZeroDivisionError("nope")

    src = FakeSource(None)              # endless: must still be stopped
    pipe, sink, go = run([src], stages=[bad])
    with pytest.raises(StageError, match=r"stage 'bad' on frames .*ZeroDivisionError: nope") as ei:
        go()
    assert ei.value.stage == "bad" and ei.value.frames
    assert sink.closed and src.closed_calls >= 1
    assert all(not t.is_alive() for t in threading.enumerate() if t.name.startswith("vidflow-source"))


def test_stage_must_return_batch():
    _, _, go = run([FakeSource(2)], stages=[lambda b: None])
    with pytest.raises(StageError, match="returned NoneType"):
        go()


def test_sink_error():
    class BadSink(MemorySink):
        def write(self, batch):
            raise OSError("disk full")

    pipe = Pipeline([FakeSource(3)], Muxer(batch_size=2), [], [BadSink()], device="cpu")
    with pytest.raises(SinkError, match="disk full"):
        pipe.run()


def test_pull_mode_and_early_break_closes():
    src = FakeSource(None)
    sink = MemorySink()
    pipe = Pipeline([src], Muxer(batch_size=2, max_wait_ms=5), [], [sink], device="cpu")
    got = []
    for batch in pipe:
        got.append(batch)
        if len(got) == 3:
            break
    assert len(got) == 3 and sink.closed and src.closed_calls >= 1
    assert pipe.summary.sources[0].state == "stopped"
    with pytest.raises(VidflowError, match="runs once"):
        pipe.run()


def test_stages_see_batches_and_reset_on_eos():
    class Counting:
        name = "count"

        def __init__(self):
            self.seen = 0
            self.resets = []

        def __call__(self, batch):
            self.seen += len(batch)
            return batch

        def reset(self, sid):
            self.resets.append(sid)

    st = Counting()
    _, _, go = run([FakeSource(5), FakeSource(9)], stages=[st])
    go()
    assert st.seen == 14 and sorted(st.resets) == [0, 1]


def test_live_source_with_slow_sink_drops_and_counts():
    pipe = None

    class SlowSink(MemorySink):
        """Holds the first batch until the live source has overflowed its queue (no sleep)."""

        def write(self, batch):
            if not self.batches:
                wait_until(lambda: pipe.snapshot().sources[0].dropped >= 3, what="live drops")
            super().write(batch)

    live = FakeSource(200, live=True)
    fil = FakeSource(30)
    sink = SlowSink(keep_images=False)
    pipe = Pipeline([live, fil], Muxer(batch_size=1, max_wait_ms=1), [], [sink], device="cpu", queue_size=2)
    s = pipe.run()
    assert [f.frame_num for f in sink.frames_of(1)] == list(range(30))   # the file loses nothing
    live_frames = len(sink.frames_of(0))
    assert s.sources[0].dropped > 0 and live_frames + s.sources[0].dropped == 200
    assert s.sources[1].dropped == 0


def test_add_and_remove_source_while_running():
    sink = MemorySink(keep_images=False)
    first = FakeSource(None, delay=0.002)
    pipe = Pipeline([first], Muxer(batch_size=2, max_wait_ms=5), [], [sink], device="cpu")
    added = {}
    for _batch in pipe:
        n = len(sink.batches)
        if n == 5:
            added["id"] = pipe.add_source(FakeSource(6))
        if n == 40:
            pipe.remove_source(0)
    assert added["id"] == 1
    assert [f.frame_num for f in sink.frames_of(1)] == list(range(6))
    assert pipe.summary.sources[0].state == "removed" and first.closed_calls >= 1
    with pytest.raises(KeyError):
        pipe.remove_source(7)


def test_a_source_removed_while_the_others_are_quiet_is_released_at_once(tmp_path):
    # the only other source yields nothing (as a fleet worker's keep-alive, or cameras that
    # went quiet): the removed source must still be retired, so that its id can be used again
    quiet = FakeSource(None, delay=3600)
    pipe = Pipeline([quiet], Muxer(batch_size=4, max_wait_ms=5), [], [MemorySink()], device="cpu")
    t = threading.Thread(target=pipe.run, daemon=True)
    t.start()
    try:
        def added() -> bool:
            try:
                pipe.add_source(FakeSource(None, delay=0.005), "cam")
                return True
            except ValueError:                 # "source id 'cam' is already in use": not released yet
                return False

        for round_ in range(3):
            wait_until(added, timeout=5, what=f"cam added (its previous run released), round {round_}")
            wait_until(lambda: pipe.snapshot().sources["cam"].frames >= 3, what=f"cam's frames, round {round_}")
            pipe.remove_source("cam")
    finally:
        pipe.stop()
        quiet.close()
        t.join(10)
    assert not t.is_alive()


def test_keyboard_interrupt_closes_sinks():
    def interrupt(batch):
        raise KeyboardInterrupt

    pipe, sink, go = run([FakeSource(None)], stages=[interrupt])
    with pytest.raises(KeyboardInterrupt):
        go()
    assert sink.closed and pipe.summary.interrupted


def test_bad_arguments():
    with pytest.raises(ValueError, match="queue_size"):
        Pipeline([FakeSource(1)], queue_size=0, device="cpu")
    with pytest.raises(ValueError, match="expected callables"):
        Pipeline([FakeSource(1)], stages=[3], device="cpu")
    with pytest.raises(ValueError, match="expected a Source"):
        Pipeline([object()], device="cpu")
    with pytest.raises(ValueError, match="device"):
        Pipeline([FakeSource(1)], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Pipeline([FakeSource(1)], device="cuda")


def test_remove_source_before_run_resets_stages():
    class Resettable:
        name = "r"

        def __init__(self):
            self.resets = []

        def __call__(self, batch):
            return batch

        def reset(self, sid):
            self.resets.append(sid)

    st = Resettable()
    src = FakeSource(3)
    pipe = Pipeline([src, FakeSource(4)], Muxer(batch_size=2, max_wait_ms=5), [st], [MemorySink()], device="cpu")
    pipe.remove_source(0)
    assert st.resets == [0] and src.closed_calls >= 1
    s = pipe.run()
    assert s.sources[0].state == "removed" and s.sources[1].frames == 4


def test_overlap_gives_the_same_results_in_the_same_order(tmp_path):
    """overlap=True (tracker + sinks on the tail thread) writes exactly what overlap=False does,
    and each source's end reaches the sinks after its last frame."""
    from vidflow.sinks.jsonl import JsonlSink
    from vidflow.stages.track import Tracker
    from vidflow.testing import FakeEngine

    class Events:
        def __init__(self):
            self.log = []

        def write(self, batch):
            self.log += [("frame", f.source_id, f.frame_num) for f in batch.frames]

        def end_source(self, sid):
            self.log.append(("end", sid))

        def close(self):
            pass

    class Where:                             # which thread ran which stage (observers run there)
        def __init__(self):
            self.seen = set()

        def on_stage(self, stage, n, seconds):
            self.seen.add((stage, threading.current_thread().name))

    from vidflow.stages.detect import Detector
    outs = {}
    for overlap in (False, True):
        ev, where = Events(), Where()
        path = tmp_path / f"o{overlap}.jsonl"
        pipe = Pipeline([FakeSource(23), FakeSource(9), FakeSource(17)], Muxer(batch_size=4),
                        [Detector(FakeEngine(outputs={"output0": (7, 16)}), conf=0.1), Tracker()], [JsonlSink(str(path)), ev],
                        device="cpu", overlap=overlap, observers=[where])
        got = sum(len(b) for b in pipe)
        main = threading.current_thread().name
        stages = {s for s, _ in where.seen if not s.startswith("muxer.")}
        if overlap:     # the detector is cut: launch on the main thread, finish and the tracker on the tail
            assert stages == {"detect.launch", "detect.finish", "track"}
            assert {t for s, t in where.seen if s in ("detect.finish", "track")} == {"vidflow-tail"}
            assert {t for s, t in where.seen if s == "detect.launch"} == {main}
        else:
            assert stages == {"detect", "track"} and {t for _, t in where.seen} == {main}
        # batch composition depends on thread timing; each frame's line must not
        outs[overlap] = (sorted(path.read_text().splitlines()), got)
        for sid, n in ((0, 23), (1, 9), (2, 17)):
            i_end = ev.log.index(("end", sid))
            assert ("frame", sid, n - 1) in ev.log[:i_end]
            assert all(e[1] != sid for e in ev.log[i_end + 1:])
    assert outs[False] == outs[True]


def test_overlap_raises_a_tail_stage_error():
    class Boom:
        host_stage = True
        name = "boom"

        def __init__(self):
            self.n = 0

        def __call__(self, batch):
            self.n += 1
            if self.n == 3:
                raise RuntimeError("tail failure")
            return batch

    sink = MemorySink()
    pipe = Pipeline([FakeSource(None)], Muxer(batch_size=2), [Boom()], [sink], device="cpu", overlap=True)
    with pytest.raises(StageError, match="boom.*tail failure"):
        pipe.run()
    assert sink.closed


def test_overlap_split_detector_errors_and_early_break():
    """A detector is cut in two (launch on the main thread, finish on the tail): an error in its
    second half is raised naming it; breaking out of an overlapping pull loop stops cleanly."""
    from vidflow.stages.detect import Detector
    from vidflow.testing import FakeEngine

    def bad(x):
        return {"output0": torch.zeros(x.shape[0], 3)}        # not a YOLO output: decode fails

    sink = MemorySink()
    pipe = Pipeline([FakeSource(None)], Muxer(batch_size=2), [Detector(FakeEngine(fn=bad), name="det")], [sink],
                    device="cpu", overlap=True)
    with pytest.raises(StageError, match="'det'"):
        pipe.run()
    assert sink.closed

    sink = MemorySink()
    pipe = Pipeline([FakeSource(None), FakeSource(None)], Muxer(batch_size=2),
                    [Detector(FakeEngine(outputs={"output0": (7, 16)}), conf=0.1)], [sink], device="cpu", overlap=True)
    got = 0
    for _ in pipe:
        got += 1
        if got == 3:
            break
    assert sink.closed and pipe.summary.sources[0].state == "stopped"
