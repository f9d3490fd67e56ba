#!/usr/bin/env python
"""End-to-end benchmark: decode (D), model (M), pipeline (E) and naive baseline (B), as JSON lines.

A thin wrapper around ``vidflow.bench.main`` (the same as ``vidflow bench``); see
docs/PERFORMANCE.md for what each figure means and the measured results.

    python benchmarks/e2e.py --streams 8 64 --seconds 10 --model .models/yolo11n_shapes.torchscript --profile
    python benchmarks/e2e.py --device cpu --streams 2 --frames 10 --model demo --size 320x240
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from vidflow.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
