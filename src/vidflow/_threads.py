"""CPU threads: how many cores this process may really use, and torch's thread count from it.

``os.cpu_count()`` counts the machine's cores, not the ones a container or ``taskset`` grants;
torch's default (one intra-op thread per core it sees) then oversubscribes the CPU, and with one
other busy process its OpenMP threads wait on each other at every barrier: the demo fell from
22 to 2.2 fps on a 2-core machine that way. vidflow counts the cores it may use:

- the CPU affinity mask (``os.sched_getaffinity``: ``taskset``, cpusets, Kubernetes static CPUs);
- the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``): a container
  limited to 2 CPUs on a 64-core host gets 2;

and on CPU gives torch one thread fewer than that (decode threads, the muxer and the sinks need a
core too), at least 1, at most 16 (more threads than that only spin on video-sized batches);
:func:`decoder_threads` shares the cores out between decoders the same way.
On CUDA torch gets 1 (its CPU work is launching kernels). ``torch_threads:`` in a pipeline YAML,
``--torch-threads`` on the command line or ``VIDFLOW_TORCH_THREADS`` choose a number instead.

:func:`apply_threads` is the one place that sets it; it returns the previous count so a run can
restore it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "default_threads", "decoder_threads", "resolve_threads",
           "apply_threads", "ENV"]

ENV = "VIDFLOW_TORCH_THREADS"
MAX_DEFAULT = 16


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(root: Path) -> list[Path]:
    """This process's cgroup folders (v2 unified first, then v1 ``cpu``), from /proc/self/cgroup."""
    text = _read(Path("/proc/self/cgroup")) or ""
    out = []
    for line in text.splitlines():
        _, ctrls, rel = (line.split(":", 2) + ["", ""])[:3]
        if ctrls == "":
            out.append(root / rel.lstrip("/"))
            out.append(root / "unified" / rel.lstrip("/"))
        elif "cpu" in ctrls.split(","):
            out.append(root / ctrls / rel.lstrip("/"))
            out.append(root / "cpu" / rel.lstrip("/"))
    out.extend([root, root / "cpu", root / "cpu,cpuacct"])
    return out


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup quota grants (``2.5`` for ``cpu.max = 250000 100000``), None when unlimited
    or unknown. The tightest quota of this process's cgroup and the root's is taken."""
    limits = []
    for d in _cgroup_dirs(Path(root)):
        v2 = _read(d / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                try:
                    limits.append(int(quota) / int(period))
                except ValueError:
                    pass
            continue
        q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if q and p:
            try:
                qi, pi = int(q), int(p)
            except ValueError:
                continue
            if qi > 0 and pi > 0:
                limits.append(qi / pi)
    return min(limits) if limits else None


def available_cpus(*, root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """Cores this process may use: the affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):     # macOS, Windows
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def default_threads(device: str = "cpu", *, cpus: int | None = None) -> int:
    """torch's intra-op threads for a run on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``)."""
    if str(device).startswith("cuda"):
        return 1
    n = available_cpus() if cpus is None else int(cpus)
    return max(1, min(n - 1, MAX_DEFAULT))


def decoder_threads(streams: int = 1, *, cpus: int | None = None) -> int:
    """FFmpeg threads per stream (``codec_context.thread_count``) when ``streams`` decode at once
    on the CPU: the cores this process may use shared out, at least 1. FFmpeg's own default
    (0: one per core it sees, for every stream) ignores cgroup quotas and, with many cameras,
    starts cores x streams threads."""
    n = available_cpus() if cpus is None else int(cpus)
    return max(1, min(n, MAX_DEFAULT) // max(1, int(streams)))


def resolve_threads(n: int | None, device: str = "cpu") -> int:
    """``n`` itself, else ``$VIDFLOW_TORCH_THREADS``, else :func:`default_threads`. ``ValueError``
    for a count below 1 or an environment value that is not a number."""
    if n is None:
        env = os.environ.get(ENV, "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                raise ValueError(f"${ENV}: expected a whole number of threads, got {env!r}") from None
        else:
            return default_threads(device)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"torch_threads: expected a whole number >= 1 or None, got {n!r}")
    return int(n)


def apply_threads(n: int | None = None, device: str = "cpu") -> int:
    """Set torch's intra-op thread count to :func:`resolve_threads` ``(n, device)``; returns the
    count before, so the caller can put it back (``apply_threads(previous)``)."""
    import torch

    before = torch.get_num_threads()
    want = resolve_threads(n, str(device))
    if want != before:
        torch.set_num_threads(want)
    return before
