"""Live benchmark: a thin wrapper of ``vidflow bench --live`` (src/vidflow/bench/live.py says
what it serves and measures). Every argument is passed on:

    python benchmarks/live.py --streams 64 --codec h264 --size 1080p --seconds 60
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vidflow.bench.live import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
