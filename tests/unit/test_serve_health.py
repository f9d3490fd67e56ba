"""Monitor: fps over a window, stalled vs blocked, the three probes (fake clock, fake summaries)."""

from __future__ import annotations

import pytest

from vidflow.serve.health import Monitor, canonical_state
from vidflow.stats import RunSummary, SourceStats


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def summary(*, batches=1, started=1.0, wall_s=0.0, **sources) -> RunSummary:
    s = RunSummary(batches=batches, started=started, wall_s=wall_s)
    for sid, (state, decoded, frames, dropped) in sources.items():
        s.sources[sid] = SourceStats(sid, state=state, decoded=decoded, frames=frames, dropped=dropped)
    return s


def test_fps_is_the_rate_over_the_window_not_since_start():
    clk = Clock()
    m = Monitor(window_s=5.0, clock=clk)
    frames = 0
    for _ in range(20):              # 10 s at 10 fps, then 10 s at 30 fps
        m.sample(summary(a=("running", frames, frames, 0)))
        clk.t += 0.5
        frames += 5
    for _ in range(20):
        m.sample(summary(a=("running", frames, frames, 0)))
        clk.t += 0.5
        frames += 15
    assert m.sources()["a"].fps == pytest.approx(30.0, rel=0.02)


def test_stalled_when_nothing_waits_blocked_when_frames_wait_or_drop(caplog):
    clk = Clock()
    m = Monitor(stall_after_s=10.0, clock=clk)
    m.sample(summary(quiet=("running", 50, 50, 0), full=("running", 58, 50, 0), drops=("running", 90, 50, 40),
                     fine=("running", 50, 50, 0)))
    for i in range(1, 12):
        clk.t += 1.0
        m.sample(summary(quiet=("running", 50, 50, 0), full=("running", 58, 50, 0),
                         drops=("running", 90 + i, 50, 40 + i), fine=("running", 50 + 30 * i, 50 + 30 * i, 0)))
    h = m.sources()
    assert h["quiet"].state == "stalled" and h["quiet"].backlog == 0
    assert h["full"].state == "blocked" and h["full"].backlog == 8
    assert h["drops"].state == "blocked"
    assert h["fine"].state == "running"
    assert h["quiet"].since_frame_s == pytest.approx(11.0)
    said = [r.getMessage() for r in caplog.records if r.name == "vidflow.serve.health"]
    assert any("source full: running -> blocked" in m and "not restarted" in m for m in said)
    assert any("source quiet: running -> stalled" in m for m in said)
    assert not any("source fine" in m for m in said)


def test_not_judged_before_stall_after_s_and_states_are_canonical():
    clk = Clock()
    m = Monitor(stall_after_s=10.0, clock=clk)
    m.sample(summary(a=("connecting", 0, 0, 0), b=("running", 0, 0, 0), c=("backoff", 0, 0, 0), d=("stopped", 5, 5, 0)))
    clk.t += 5
    m.sample(summary(a=("connecting", 0, 0, 0), b=("running", 0, 0, 0), c=("backoff", 0, 0, 0), d=("stopped", 5, 5, 0)))
    assert {k: v.state for k, v in m.sources().items()} == {"a": "starting", "b": "running", "c": "reconnecting",
                                                             "d": "ended"}
    assert canonical_state("weird") == "starting"


def test_probes_follow_the_run():
    clk = Clock()
    m = Monitor(stall_after_s=10.0, hang_after_s=60.0, clock=clk)
    assert m.livez()[0] and not m.readyz()[0] and not m.startupz()[0]
    m.sample(summary(batches=0, a=("running", 0, 0, 0)))
    ok, d = m.readyz()
    assert not ok and "warming" in d["reason"] and not m.startupz()[0]
    m.sample(summary(batches=3, a=("running", 12, 12, 0)))
    assert m.readyz()[0] and m.startupz()[0] and m.livez()[0]
    # frames waiting and no batch for hang_after_s: the loop is wedged
    for _ in range(7):
        clk.t += 10
        m.sample(summary(batches=3, a=("running", 20, 12, 0)))
    ok, d = m.livez()
    assert not ok and "8 frames waiting" in d["reason"]
    assert not m.readyz()[0]                      # blocked is not ready either
    m.sample(summary(batches=9, wall_s=5.0, a=("ended", 20, 20, 0)))
    assert m.livez()[0] and not m.readyz()[0] and "finished" in m.readyz()[1]["reason"]


def test_monitor_checks_its_arguments():
    with pytest.raises(ValueError, match="stall_after_s"):
        Monitor(stall_after_s=0)
