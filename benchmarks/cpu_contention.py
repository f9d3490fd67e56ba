"""The demo's fps on CPU, idle and with one other busy process, for torch's own thread count and
vidflow's default (``vidflow._threads``); prints numbers only.

python benchmarks/cpu_contention.py [--streams 2] [--frames 60] [--busy 1]

Each run is a fresh ``python -c`` process running ``vidflow.demo.run_demo`` on the same
generated clips (made once, before the first timed run). ``--busy N`` starts N processes that
spin on a core each while the contended runs go. The figure that matters: vidflow's default,
contended fps / idle fps (the target is >= 0.8 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_RUN = """
import json, sys, torch
from vidflow.demo import run_demo
threads = json.loads(sys.argv[1])
if threads is not None:
    torch.set_num_threads(threads)
r = run_demo(sys.argv[2], device="cpu", streams=int(sys.argv[3]), frames=int(sys.argv[4]),
             torch_threads=threads, print_fn=None)
print(json.dumps({"fps": r["fps"], "threads": torch.get_num_threads()}))
"""
_SPIN = "while True: pass"


def _demo(threads: int | None, out: str, streams: int, frames: int) -> dict:
    probe = ("import torch, json, vidflow._threads as t; "
             "print(json.dumps({'used': t.resolve_threads(%r)}))" % (threads,))
    used = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                     text=True).stdout)["used"]
    res = subprocess.run([sys.executable, "-c", _RUN, json.dumps(threads), out, str(streams), str(frames)],
                         check=True, capture_output=True, text=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {"fps": got["fps"], "threads": used}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--busy", type=int, default=1, help="busy processes during the contended runs")
    a = p.parse_args()
    from vidflow._threads import available_cpus

    torch_default = os.cpu_count() or 1
    print(f"machine: {os.cpu_count()} cores seen, {available_cpus()} available to this process; "
          f"demo on CPU, {a.streams} streams x {a.frames} frames")
    with tempfile.TemporaryDirectory() as out:
        from pathlib import Path

        from vidflow.demo import _clips
        _clips(Path(out), a.streams, 640, 360, a.frames, 30.0)   # the demo's CPU clips, made untimed
        rows = {}
        for name, threads in (("torch default", torch_default), ("vidflow default", None)):
            idle = _demo(threads, out, a.streams, a.frames)
            spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(a.busy)]
            try:
                busy = _demo(threads, out, a.streams, a.frames)
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
            rows[name] = (idle, busy)
            print(f"{name:16s} torch threads {idle['threads']:>2}: idle {idle['fps']:6.1f} fps, "
                  f"{a.busy} busy process(es) {busy['fps']:6.1f} fps, ratio {busy['fps'] / idle['fps']:.2f}")


if __name__ == "__main__":
    main()
