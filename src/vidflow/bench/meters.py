"""What ``vidflow bench`` measures around a workload: the timed window (wall, CPU of the process
and its decode processes, peak memory, the collector's pauses), host<->device copies under
``torch.profiler``, the host's CPU, and :func:`measure`, which drives a workload through it."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .workloads import Work

IMAGE_BYTES = 100_000      # a host<->device copy this large is an image (or a plane), never boxes
_MB = 1 << 20


def rss_mb(pid: int | None = None) -> float:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Window:
    """Wall, CPU time, peak memory (GPU allocator, whole device, RSS) over a timed window."""

    def __init__(self, dev: torch.device, child_cpu: Callable[[], float] | None = None,
                 child_pids: Callable[[], list[int]] | None = None) -> None:
        self.dev, self.used, self.rss = dev, 0.0, 0.0
        self.child_cpu: Callable[[], float] = child_cpu or (lambda: 0.0)     # CPU s of decode processes, if any
        self.child_pids: Callable[[], list[int]] = child_pids or (lambda: [])
        self.samples: list[tuple[float, float, float]] = []    # (t, rss of all processes, device used)
        self.gc_pauses: list[float] = []                         # this process's collections, s
        self._gc_t0 = self._gc_c0 = 0.0
        self.gc_full = 0                                         # of them, full (generation 2)
        self._gc_max: tuple[float, float, int] = (0.0, 0.0, -1)   # longest: wall s, thread CPU s, generation
        self._stop = threading.Event()

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0, self._gc_c0 = time.perf_counter(), time.thread_time()
        elif self._gc_t0:
            dt = time.perf_counter() - self._gc_t0
            self.gc_pauses.append(dt)
            self.gc_full += info.get("generation") == 2
            if dt > self._gc_max[0]:       # wall >> CPU: a finaliser let other threads run meanwhile
                self._gc_max = (dt, time.thread_time() - self._gc_c0, int(info.get("generation", -1)))

    def _sample(self) -> None:
        while True:
            rss = rss_mb() + sum(rss_mb(pid) for pid in self.child_pids())
            self.rss = max(self.rss, rss)
            used = 0.0
            if self.dev.type == "cuda":
                free, total = torch.cuda.mem_get_info(self.dev)
                used = (total - free) / _MB
                self.used = max(self.used, used)
            self.samples.append((time.perf_counter(), rss, used))
            if self._stop.wait(0.1):
                return

    def trend(self) -> dict[str, Any]:
        """Memory in the first and the last tenth of the window (is it flat?)."""
        s = self.samples
        if len(s) < 20:
            return {}
        k = max(1, len(s) // 10)
        first, last = s[:k], s[-k:]

        def mean(rows: list, i: int) -> float:
            return round(sum(r[i] for r in rows) / len(rows), 1)
        curve = [[round(r[0] - s[0][0], 1), round(r[1]), round(r[2])] for r in s[:: max(1, len(s) // 10)]]
        return {"memory_first_last_tenth": {"rss_mb": [mean(first, 1), mean(last, 1)],
                                            "gpu_used_mb": [mean(first, 2), mean(last, 2)]},
                "memory_curve_s_rss_gpu_mb": curve}

    def start(self) -> Window:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        import gc
        gc.callbacks.append(self._gc)
        self.c0, self.t0 = time.process_time() + self.child_cpu(), time.perf_counter()
        return self

    def stop(self, frames: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() + self.child_cpu() - self.c0
        import gc
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        self._stop.set()
        self._t.join()
        alloc = torch.cuda.max_memory_allocated(self.dev) / _MB if self.dev.type == "cuda" else 0.0
        return {"frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 1),
                "cpu_cores": round(cpu / wall, 2), "gpu_alloc_peak_mb": round(alloc, 1),
                "gpu_used_peak_mb": round(self.used, 1), "rss_peak_mb": round(self.rss, 1), **self.trend(),
                "gc_collections": len(self.gc_pauses), "gc_pause_max_ms": round(max(self.gc_pauses, default=0) * 1e3, 1),
                "gc_total_ms": round(sum(self.gc_pauses) * 1e3, 1),
                "gc_pause_max_cpu_ms": round(self._gc_max[1] * 1e3, 1), "gc_pause_max_generation": self._gc_max[2],
                "gc_full_collections": self.gc_full, "gc_frozen_objects": gc.get_freeze_count()}


def copies(work: Work, dev: torch.device, seconds: float, tables: bool) -> tuple[dict[str, Any], str]:
    """Count host<->device copies per frame in a window under torch.profiler (CUPTI records the
    memcpys of every thread). Returns the fields and, with ``tables``, the top-op tables."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    f0 = work.count()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or work.count() == f0:
            work.pump()
            if time.perf_counter() - t0 > max(60.0, 10 * seconds):
                break
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    n = max(work.count() - f0, 1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    c = {"h2d": 0, "d2h": 0, "h2d_b": 0, "d2h_b": 0, "img": 0}
    for e in events:
        if e.get("cat") != "gpu_memcpy":
            continue
        kind = "h2d" if "HtoD" in e.get("name", "") else "d2h" if "DtoH" in e.get("name", "") else None
        if kind is None:
            continue
        b = int((e.get("args") or {}).get("bytes", 0) or 0)
        c[kind] += 1
        c[kind + "_b"] += b
        c["img"] += b >= IMAGE_BYTES
    out = {"h2d_per_frame": round(c["h2d"] / n, 3), "d2h_per_frame": round(c["d2h"] / n, 3),
           "h2d_bytes_per_frame": round(c["h2d_b"] / n), "d2h_bytes_per_frame": round(c["d2h_b"] / n),
           "image_copies_per_frame": round(c["img"] / n, 3)}
    text = ""
    if tables:
        ka = prof.key_averages()
        head = f"-- top ops by %s, main thread + all CUDA work, {n} frames in the window --\n"
        for key in ("self_device_time_total", "self_cuda_time_total") if dev.type == "cuda" else ():
            try:
                text += head % key + ka.table(sort_by=key, row_limit=15) + "\n"
                break
            except (KeyError, AttributeError, ValueError):
                continue
        text += head % "self_cpu_time_total" + ka.table(sort_by="self_cpu_time_total", row_limit=15) + "\n"
    return out, text


def measure(work: Work, dev: torch.device, args: argparse.Namespace, per_frame_units: int,
            tables: bool = False) -> tuple[dict[str, Any], str]:
    """Start ``work``, run ``args.warmup`` s after its first frame, then time ``args.seconds`` s
    (or ``args.frames`` per stream); returns the fields and the profiler's tables (or "")."""
    work.start()
    try:
        t0 = time.perf_counter()
        while work.count() == 0:
            work.pump()
            if time.perf_counter() - t0 > args.start_timeout:
                raise RuntimeError(f"no frame within {args.start_timeout} s")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.warmup:
            work.pump()
        work.lat.clear()
        work.window()
        f0, win = work.count(), Window(dev, work.child_cpu, work.child_pids).start()
        target = args.frames * per_frame_units if args.frames else None
        while True:
            work.pump()
            n = work.count() - f0
            if (target is not None and n >= target) or (target is None and time.perf_counter() - win.t0 >= args.seconds):
                break
        res = win.stop(work.count() - f0)
        res.update(work.window(res["wall_s"]))
        lat = sorted(work.lat)
        res["latency_p50_ms"] = round(lat[len(lat) // 2], 2) if lat else None
        res["latency_p95_ms"] = round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None
        if args.breakdown_seconds > 0:
            res.update(work.breakdown(args.breakdown_seconds))
        if args.copy_seconds > 0 or tables:      # 0: no profiler session at all (see gpu-check.sh compare)
            counted, text = copies(work, dev, args.copy_seconds, tables)
            res.update(counted)
        else:
            text = ""
        res.update(work.extra)
        return res, text
    finally:
        work.stop()


def host_cpu() -> dict[str, Any]:
    """The host's CPU, printed beside the GPU on every line (post-processing runs there):
    ``host_cpu`` (model name), ``host_cores`` (logical CPUs this process may use),
    ``host_cpu_mhz`` (the maximum clock when the kernel reports it, else the current one)."""
    model, mhz = "", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k in ("model name", "Model", "Hardware") and not model:
                    model = v
                elif k == "cpu MHz" and mhz is None:
                    mhz = float(v)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            mhz = int(f.read().strip()) / 1000
    except (OSError, ValueError):
        pass
    if not model:
        import platform
        model = platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {"host_cpu": model, "host_cores": cores, "host_cpu_mhz": round(mhz) if mhz else None}
