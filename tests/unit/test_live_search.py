"""``vidflow bench --live --max-cameras``'s search (``bench/_search.py``) on a made-up capacity."""

from __future__ import annotations

import pytest

from vidflow.bench._search import search_max


def _capacity(limit: int):
    runs: list[int] = []

    def trial(n: int):
        runs.append(n)
        return n <= limit, {"streams": n}
    return trial, runs


@pytest.mark.parametrize("start, limit, resolution, want_runs", [
    (64, 75, None, [64, 72, 80]),                  # up by the step, no halving
    (64, 75, 1, [64, 72, 80, 76, 74, 75]),          # then halved to one stream
    (80, 75, 2, [80, 72, 76, 74]),                  # the first count fails: down, then halved
    (8, 1000, None, [8, 16, 24, 32]),               # none fails up to max_streams
])
def test_search_finds_the_bracket(start, limit, resolution, want_runs):
    trial, runs = _capacity(limit)
    s = search_max(trial, start, 8, max_streams=32 if limit == 1000 else 1024, resolution=resolution)
    assert runs == want_runs and len(set(runs)) == len(runs)          # each count once
    if limit == 1000:
        assert s.good == 32 and s.failing is None
    else:
        assert s.good <= limit < s.failing and s.failing - s.good <= (resolution or 8)
        assert s.failing_record == {"streams": s.failing}


def test_nothing_holds():
    trial, runs = _capacity(0)
    s = search_max(trial, 16, 8, max_streams=64, resolution=1)
    assert runs == [16, 8] and s.good is None and s.failing == 8
