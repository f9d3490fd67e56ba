"""The ``--max-cameras`` search of ``vidflow bench --live``: the most streams that keep up.

Up by ``step`` from ``start`` while a count holds, down by ``step`` when ``start`` already falls
behind, until one count holds and the next does not; then halve that bracket until it is at most
``resolution`` wide (``resolution >= step``: no halving). ``trial(n)`` runs one measurement and
returns ``(held, record)``; every count is tried at most once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Search", "search_max"]


@dataclass
class Search:
    good: int | None = None                    # the largest count that held
    failing: int | None = None                 # the smallest count above it that did not
    failing_record: Any = None                 # that count's measurement (None: its run failed)
    trials: list[list[Any]] = field(default_factory=list)   # [count, held] in the order run


def search_max(trial: Callable[[int], tuple[bool, Any]], start: int, step: int, *, max_streams: int,
               resolution: int | None = None) -> Search:
    if start < 1 or step < 1:
        raise ValueError(f"start and step must be >= 1, got {start} and {step}")
    res = step if resolution is None else max(1, int(resolution))
    s = Search()

    def run(n: int) -> bool:
        held, rec = trial(n)
        s.trials.append([n, held])
        if held:
            s.good = n if s.good is None else max(s.good, n)
        elif s.failing is None or n < s.failing:
            s.failing, s.failing_record = n, rec
        return held

    n = start
    while 1 <= n <= max_streams:
        if run(n):
            if s.failing is not None:
                break
            n += step
        else:
            if s.good is not None:
                break
            n -= step
    while s.good is not None and s.failing is not None and s.failing - s.good > res:
        run((s.good + s.failing) // 2)
    return s
