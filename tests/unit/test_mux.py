import threading

import pytest
import torch

from vidflow.batch import FrameInfo
from vidflow.mux import Muxer, SourceQueue
from vidflow.sources.base import SourceFrame


class FakeClock:
    def __init__(self):
        self.t = 100.0
        self.waits = []

    def __call__(self):
        return self.t

    def wait(self, cond, seconds):   # nothing arrives meanwhile: time just passes
        self.waits.append(seconds)
        self.t += seconds


def frame(sid, n, w=8, h=6, value=0):
    return SourceFrame(FrameInfo(sid, n, n / 30, 0, w, h), torch.full((3, h, w), value, dtype=torch.uint8))


def setup(n_sources, clock, maxsize=16, live=False):
    cond = threading.Condition()
    qs = [SourceQueue(i, maxsize=maxsize, live=live, cond=cond, clock=clock) for i in range(n_sources)]
    return cond, qs


def test_partial_batch_leaves_max_wait_after_first_frame():
    clock = FakeClock()
    cond, qs = setup(2, clock)
    mux = Muxer(batch_size=4, max_wait_ms=30, clock=clock)
    qs[0].put(frame(0, 0))
    arrived = clock.t
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    assert len(col.frames) == 1
    assert clock.t == pytest.approx(arrived + 0.030)   # not earlier, not later
    assert col.ended == []


def test_full_batch_leaves_without_waiting():
    clock = FakeClock()
    cond, qs = setup(2, clock)
    for i in range(2):
        qs[0].put(frame(0, i))
        qs[1].put(frame(1, i))
    col = Muxer(batch_size=4, max_wait_ms=30, clock=clock).collect(lambda: qs, cond, wait=clock.wait)
    assert len(col.frames) == 4 and clock.waits == []


def test_sources_interleave_fairly_and_rotate():
    clock = FakeClock()
    cond, qs = setup(3, clock)
    for i in range(8):
        qs[0].put(frame(0, i))
    qs[1].put(frame(1, 0))
    qs[2].put(frame(2, 0))
    mux = Muxer(batch_size=4, max_wait_ms=30, clock=clock)
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    ids = [f.info.source_id for f in col.frames]
    assert sorted(ids) == [0, 0, 1, 2]
    assert [f.info.frame_num for f in col.frames if f.info.source_id == 0] == [0, 1]   # order kept per source
    qs[1].put(frame(1, 1))
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    assert col.frames[0].info.source_id == 1        # start rotated to the next source
    assert 1 in [f.info.source_id for f in col.frames]


def test_silent_source_never_holds_the_others():
    clock = FakeClock()
    cond, qs = setup(2, clock)     # source 1 never sends
    mux = Muxer(batch_size=8, max_wait_ms=50, clock=clock)
    for i in range(3):
        qs[0].put(frame(0, i))
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    assert [f.info.frame_num for f in col.frames] == [0, 1, 2]
    assert sum(clock.waits) == pytest.approx(0.050)


def test_eos_reported_then_none():
    clock = FakeClock()
    cond, qs = setup(2, clock)
    mux = Muxer(batch_size=4, max_wait_ms=30, clock=clock)
    qs[0].put(frame(0, 0))
    qs[0].finish()
    qs[1].finish()
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    assert len(col.frames) == 1 and sorted(col.ended) == [0, 1]
    assert mux.collect(lambda: [], cond, wait=clock.wait) is None


def test_live_queue_drops_oldest_file_queue_blocks():
    clock = FakeClock()
    cond, (live,) = setup(1, clock, maxsize=2, live=True)
    for i in range(5):
        assert live.put(frame(0, i))
    assert live.dropped == 3 and [f.info.frame_num for _, f in live.items] == [3, 4]
    cond, (filq,) = setup(1, clock, maxsize=2)
    filq.put(frame(0, 0))
    filq.put(frame(0, 1))
    done = threading.Event()
    t = threading.Thread(target=lambda: (filq.put(frame(0, 2)), done.set()))
    t.start()
    assert not done.wait(0.3)          # blocked: the queue is full
    with cond:
        filq.take()
    assert done.wait(5)
    assert filq.dropped == 0 and len(filq) == 2
    filq.close()
    assert filq.put(frame(0, 3)) is False


def test_assemble_scales_into_pooled_buffer():
    mux = Muxer(batch_size=4, size=(16, 12))
    frames = [frame(0, 0, 8, 6, 10), frame(1, 0, 32, 24, 200)]
    b = mux.assemble(frames, torch.device("cpu"))
    assert b.images.shape == (2, 3, 12, 16)
    assert int(b.images[0].float().mean()) == 10 and int(b.images[1].float().mean()) == 200
    assert b.frames[1].width == 32 and b.frames[1].region == (0.0, 0.0, 16.0, 12.0)
    ptr = b.images.data_ptr()
    b2 = mux.assemble(frames, torch.device("cpu"))
    assert b2.images.data_ptr() != ptr          # first batch still alive: not overwritten
    del b, b2
    b3 = mux.assemble(frames, torch.device("cpu"))
    assert b3.images.data_ptr() in {ptr, b3.images.data_ptr()}
    assert len(mux._pool) <= mux.pool_size


def test_assemble_reuses_buffer_when_released():
    mux = Muxer(batch_size=2, size=(8, 6))
    b = mux.assemble([frame(0, 0)], torch.device("cpu"))
    ptr = b.images.data_ptr()
    del b
    assert mux.assemble([frame(0, 1)], torch.device("cpu")).images.data_ptr() == ptr


def test_keep_aspect_region_and_padding():
    mux = Muxer(batch_size=1, size=(20, 10), keep_aspect=True)
    b = mux.assemble([frame(0, 0, 10, 10, 255)], torch.device("cpu"))
    assert b.frames[0].region == (5.0, 0.0, 15.0, 10.0)
    assert int(b.images[0, :, :, :5].max()) == 0 and int(b.images[0, :, :, 5:15].min()) == 255
    src = b.image_to_source(torch.tensor([[5.0, 0.0, 15.0, 10.0]]), torch.tensor([0]))
    assert src.tolist() == [[0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(max_wait_ms=-1), dict(size=[1920])])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        Muxer(**kw)
