"""``vidflow bench``: what one machine sustains (see :mod:`vidflow.bench.cli`)."""

from __future__ import annotations

from .cli import FIELDS, main, make_bench_clip

__all__ = ["main", "make_bench_clip", "FIELDS"]
