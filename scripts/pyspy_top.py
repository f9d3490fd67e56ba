"""Summarise a py-spy ``-f raw`` file (collapsed stacks): the share of samples in which each
function (any line of it) is on the stack (inclusive) and at its top (self), optionally per thread.

    python scripts/pyspy_top.py profile.txt [--threads] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--threads", action="store_true", help="split by thread (py-spy --threads)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    groups: dict[str, tuple[collections.Counter, collections.Counter, list[int]]] = {}
    for line in open(a.path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        key = "all"
        if a.threads and frames and frames[0].startswith("thread "):
            key, frames = frames[0], frames[1:]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]      # one row per function, not per line
        incl, self_, total = groups.setdefault(key, (collections.Counter(), collections.Counter(), [0]))
        total[0] += int(n)
        for f in set(frames):
            incl[f] += int(n)
        if frames:
            self_[frames[-1]] += int(n)
    for key, (incl, self_, total) in sorted(groups.items(), key=lambda kv: -kv[1][2][0]):
        t = total[0]
        print(f"--- {key}: {t} samples")
        for f, n in incl.most_common(a.top):
            print(f"  {100 * n / t:5.1f}% incl {100 * self_[f] / t:5.1f}% self  {f[:150]}")


if __name__ == "__main__":
    main()
