"""The muxer and live sources that stop delivering (a down camera must not slow the others)."""

import threading

import pytest
import torch

from vidflow.batch import FrameInfo
from vidflow.mux import Muxer, SourceQueue
from vidflow.sources.base import SourceFrame

from tests.unit.test_mux import FakeClock

FPS = 30.0


def frame(sid, n):
    return SourceFrame(FrameInfo(sid, n, n / FPS, 0, 8, 6), torch.zeros((3, 6, 8), dtype=torch.uint8))


def cameras(n, clock):
    cond = threading.Condition()
    return cond, [SourceQueue(i, maxsize=8, live=True, cond=cond, clock=clock) for i in range(n)]


def batch(mux, qs, cond, clock):
    """One batch: its source ids and how long collect() waited for it."""
    before = len(clock.waits)
    col = mux.collect(lambda: qs, cond, wait=clock.wait)
    return sorted(f.info.source_id for f in col.frames), sum(clock.waits[before:])


def test_a_down_camera_does_not_hold_the_others_and_is_waited_for_again_once_back():
    clock = FakeClock()
    cond, qs = cameras(2, clock)
    mux = Muxer(batch_size=2, max_wait_ms=20, clock=clock)
    n = 0
    for _ in range(3):                              # both deliver: full batches, no wait
        qs[0].put(frame(0, n))
        qs[1].put(frame(1, n))
        assert batch(mux, qs, cond, clock) == ([0, 1], 0.0)
        clock.t += 1 / FPS
        n += 1
    last_1 = clock.t - 1 / FPS                      # camera 1 goes down after its frame 2
    waited, put_at = [], []
    for _ in range(10):
        put_at.append(clock.t)
        qs[0].put(frame(0, n))
        ids, w = batch(mux, qs, cond, clock)
        assert ids == [0]
        waited.append(w)
        clock.t += 1 / FPS
        n += 1
    # while camera 1 is within 3 frame intervals of its last frame it is waited for (max_wait, or
    # until it turns idle), then never again: 10 batches did not wait 10 x 20 ms
    idle_from = last_1 + 3 / FPS
    assert waited[0] == pytest.approx(0.020)
    assert waited[1] == pytest.approx(idle_from - put_at[1]) and 0 < waited[1] < 0.020
    assert waited[2:] == [0.0] * 8
    qs[1].put(frame(1, n))                          # camera 1 is back
    assert batch(mux, qs, cond, clock) == ([1], pytest.approx(0.020))   # camera 0 delivers: waited for
    clock.t += 1 / FPS
    qs[0].put(frame(0, n + 1))
    ids, w = batch(mux, qs, cond, clock)            # ... and camera 1 is waited for again
    assert ids == [0] and w == pytest.approx(0.020)


def test_batch_waiting_for_a_camera_leaves_when_that_camera_turns_idle():
    clock = FakeClock()
    cond, qs = cameras(2, clock)
    mux = Muxer(batch_size=2, max_wait_ms=50, clock=clock)
    qs[1].put(frame(1, 0))
    qs[1].put(frame(1, 1))
    qs[0].put(frame(0, 0))
    batch(mux, qs, cond, clock)                     # one frame each is taken ...
    assert batch(mux, qs, cond, clock)[0] == [1]    # ... camera 1's second frame waits for camera 0
    t_last0 = 100.0
    clock.t = t_last0 + 0.090                        # camera 0 quiet for 90 ms (idle at 100 ms)
    qs[1].put(frame(1, 2))
    ids, w = batch(mux, qs, cond, clock)
    assert ids == [1] and w == pytest.approx(0.010)   # released at the idle point, not after 50 ms


def test_a_camera_that_never_delivered_is_not_waited_for_but_files_are():
    clock = FakeClock()
    cond, qs = cameras(3, clock)                    # cameras 1 and 2 still connecting
    mux = Muxer(batch_size=3, max_wait_ms=20, clock=clock)
    qs[0].put(frame(0, 0))
    assert batch(mux, qs, cond, clock) == ([0], 0.0)
    files = [SourceQueue(i, maxsize=8, live=False, cond=cond, clock=clock) for i in range(2)]
    files[0].put(frame(0, 0))
    assert batch(mux, files, cond, clock) == ([0], pytest.approx(0.020))   # a file is always waited for


def test_share_of_the_batch_and_opting_out():
    clock = FakeClock()
    cond, qs = cameras(4, clock)
    for q in qs[:3]:
        q.put(frame(q.source_id, 0))
    # batch 8 of 4 cameras, one down: due at ceil(8 * 3/4) = 6 frames, so 3 frames still wait
    assert batch(Muxer(batch_size=8, max_wait_ms=20, clock=clock), qs, cond, clock)[1] == pytest.approx(0.020)
    for i in range(2):
        for q in qs[:3]:
            q.put(frame(q.source_id, 1 + i))
    ids, w = batch(Muxer(batch_size=8, max_wait_ms=20, clock=clock), qs, cond, clock)
    assert len(ids) == 6 and w == 0.0
    qs[0].put(frame(0, 3))
    old = Muxer(batch_size=2, max_wait_ms=20, live_idle_frames=None, clock=clock)
    assert batch(old, qs, cond, clock)[1] == pytest.approx(0.020)


def test_frame_interval_comes_from_pts_not_arrival_bursts():
    clock = FakeClock()
    q = SourceQueue(0, live=True, clock=clock)
    for n in range(5):                              # a burst after a reconnect: all at once
        q.put(frame(0, n))
    assert q.idle_at(3) == pytest.approx(clock.t + 3 / FPS)
    q.put(SourceFrame(FrameInfo(0, 5, 60.0, 0, 8, 6), torch.zeros((3, 6, 8), dtype=torch.uint8)))
    assert q.idle_at(3) == pytest.approx(clock.t + 3 / FPS)   # a pts jump (outage) is no interval


@pytest.mark.parametrize("v", [0, -1, True, "3"])
def test_bad_live_idle_frames(v):
    with pytest.raises(ValueError):
        Muxer(live_idle_frames=v)
