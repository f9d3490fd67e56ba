"""``snapshot().loop_s``: where the pipeline's loop waited (no device sync), so a run tells which
half of an overlapping pipeline is the slower one."""

from __future__ import annotations

import time

from vidflow import Muxer, Pipeline
from vidflow.testing import FakeSource, MemorySink


class Sleep:
    """A stage that takes ``s`` seconds a batch; ``host_stage``: it runs on the tail with overlap."""

    def __init__(self, s: float, host_stage: bool, name: str) -> None:
        self.s, self.host_stage, self.name = s, host_stage, name

    def __call__(self, batch):
        time.sleep(self.s)
        return batch


def _waits(head_s: float, tail_s: float) -> dict:
    stages = [Sleep(head_s, False, "head"), Sleep(tail_s, True, "tail")]
    pipe = Pipeline([FakeSource(40)], Muxer(batch_size=2, max_wait_ms=5), stages, [MemorySink(keep_images=False)],
                    device="cpu", overlap=True)
    pipe.run()
    snap = pipe.snapshot()
    assert snap.frames == 40
    return snap.loop_s


def test_a_slow_tail_shows_as_the_main_thread_waiting_for_it():
    w = _waits(0.0, 0.02)                 # 20 batches x 20 ms on the tail
    assert set(w) == {"collect", "tail_full", "tail_idle"}
    assert w["tail_full"] > 0.15 and w["tail_full"] > 5 * w["tail_idle"], w


def test_a_slow_main_half_shows_as_the_tail_waiting():
    w = _waits(0.02, 0.0)
    assert w["tail_idle"] > 0.15 and w["tail_idle"] > 5 * w["tail_full"], w


def test_without_overlap_only_the_collect_wait():
    pipe = Pipeline([FakeSource(6)], Muxer(batch_size=2, max_wait_ms=5), [], [MemorySink(keep_images=False)],
                    device="cpu", overlap=False)
    pipe.run()
    w = pipe.snapshot().loop_s
    assert set(w) == {"collect"} and w["collect"] >= 0


def test_the_run_summary_says_which_half_waited():
    stages = [Sleep(0.0, False, "head"), Sleep(0.01, True, "tail")]
    pipe = Pipeline([FakeSource(10)], Muxer(batch_size=2, max_wait_ms=5), stages, [MemorySink(keep_images=False)],
                    device="cpu", overlap=True)
    pipe.run()
    assert "tail_full" in pipe.summary.loop_s              # filled at the end of the run too
    assert "loop: waited" in pipe.summary.table() and "for the tail" in pipe.summary.table()
