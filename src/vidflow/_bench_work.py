"""The workloads ``vidflow bench`` measures (see :mod:`vidflow.bench`): decode only, model only,
the pipeline (with timed parts), the naive baseline, and the measurement window helpers."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import deque
from typing import Any

import torch

IMAGE_BYTES = 100_000      # a host<->device copy this large is an image (or a plane), never boxes
_MB = 1 << 20


def _rss_mb(pid: int | None = None) -> float:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Window:
    """Wall, CPU time, peak memory (GPU allocator, whole device, RSS) over a timed window."""

    def __init__(self, dev: torch.device, child_cpu: Any = None, child_pids: Any = None) -> None:
        self.dev, self.used, self.rss = dev, 0.0, 0.0
        self.child_cpu = child_cpu or (lambda: 0.0)     # CPU seconds of decode processes, if any
        self.child_pids = child_pids or (lambda: [])
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
            rss = _rss_mb() + sum(_rss_mb(pid) for pid in self.child_pids())
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

    def start(self) -> _Window:
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


def _copies(work: _Work, dev: torch.device, seconds: float, tables: bool) -> tuple[dict[str, Any], str]:
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


# ------------------------------------------------------------------------------------ workloads
class _Work:
    """A running workload: ``count()`` frames done so far, ``pump()`` drives it (or waits),
    ``lat`` latencies in ms, ``errors`` from worker threads."""

    def __init__(self) -> None:
        self.lat: deque = deque(maxlen=500_000)
        self.errors: list[BaseException] = []
        self.stop_event = threading.Event()
        self.counts: list[int] = [0]
        self.extra: dict[str, Any] = {}

    def count(self) -> int:
        return sum(self.counts)

    def child_cpu(self) -> float:
        """CPU seconds used so far by the workload's decode processes (0: none)."""
        return 0.0

    def child_pids(self) -> list[int]:
        """The workload's decode processes (their memory counts in ``rss_peak_mb``)."""
        return []

    def window(self, wall: float | None = None) -> dict[str, Any]:
        """Called at the start (``wall=None``) and end of the timed window; extra fields."""
        return {}

    def start(self) -> None:
        pass

    def pump(self) -> None:
        if self.errors:
            import traceback
            where = traceback.extract_tb(self.errors[0].__traceback__)[-3:]
            at = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(where))
            raise RuntimeError(f"{type(self).__name__}: a worker failed: {self.errors[0]!r} at {at}") from self.errors[0]
        time.sleep(0.01)

    def stop(self) -> None:
        self.stop_event.set()


class _Threads(_Work):
    """One worker thread per stream running ``self.worker(k)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.counts = n, [0] * n

    def start(self) -> None:
        def run(k: int) -> None:
            try:
                self.worker(k)
            except BaseException as e:  # noqa: BLE001 - surfaced by pump()
                if not self.stop_event.is_set():
                    self.errors.append(e)
        self.threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(self.n)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        super().stop()
        for t in self.threads:
            t.join(timeout=10)

    def worker(self, k: int) -> None:
        raise NotImplementedError


class _Decode(_Threads):
    def __init__(self, clip: str, n: int, dev: torch.device) -> None:
        super().__init__(n)
        self.clip, self.dev = clip, dev

    def worker(self, k: int) -> None:
        from .sources.file import FileSource

        if self.dev.type == "cuda":
            torch.cuda.set_device(self.dev)
        src = FileSource(self.clip, loop=True)
        it = src.frames(device=self.dev, source_id=k)
        try:
            for f in it:
                self.counts[k] += 1
                self.lat.append((time.time_ns() - f.info.ntp_ns) / 1e6)
                self.extra["decoder"] = src.backend
                if self.stop_event.is_set():
                    break
        finally:
            it.close()
            src.close()


class _DecodeProcs(_Work):
    """Decode only, in ``procs`` decode processes (``vidflow.sources.pool``): each frame reaches
    this process as a ring slot, is counted and handed back at once."""

    def __init__(self, clip: str, n: int, dev: torch.device, procs: int) -> None:
        super().__init__()
        self.clip, self.n, self.dev, self.procs = clip, n, dev, procs
        self.counts = [0] * n

    def start(self) -> None:
        from .sources.file import FileSource
        from .sources.pool import DecodePool

        self.pool = DecodePool(self.procs, self.dev, slots=10)
        for k in range(self.n):
            def deliver(f: Any, k: int = k) -> bool:
                self.counts[k] += 1
                self.lat.append((time.time_ns() - f.info.ntp_ns) / 1e6)
                f.release()
                return True

            def finish(err: Any) -> None:
                if err is not None and not self.stop_event.is_set():
                    self.errors.append(err)
            self.pool.open(k, FileSource(self.clip, loop=True), deliver, finish)
        self.extra["decode_processes"] = self.procs

    def child_cpu(self) -> float:
        return self.pool.cpu_seconds()

    def child_pids(self) -> list[int]:
        return self.pool.pids()

    def stop(self) -> None:
        super().stop()
        self.pool.shutdown()


class _Model(_Work):
    def __init__(self, engine: Any, size: tuple[int, int], batch: int, dev: torch.device) -> None:
        super().__init__()
        self.engine, self.batch, self.dev = engine, batch, dev
        self.x = torch.rand(batch, 3, size[1], size[0], device=dev).to(getattr(engine, "input_dtype", torch.float32))

    def pump(self) -> None:
        t = time.perf_counter()
        with torch.inference_mode():
            self.engine(self.x)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self.lat.append((time.perf_counter() - t) * 1e3)
        self.counts[0] += self.batch


class _Naive(_Threads):
    def __init__(self, clip: str, n: int, dev: torch.device, engine: Any, size: tuple[int, int], fmt: str) -> None:
        super().__init__(n)
        self.clip, self.dev, self.engine, self.size, self.fmt = clip, dev, engine, size, fmt

    def worker(self, k: int) -> None:
        import av

        from .heads.yolo import decode
        from .ops.geometry import input_to_image, preprocess

        dtype = getattr(self.engine, "input_dtype", torch.float32)
        while not self.stop_event.is_set():
            with av.open(self.clip) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                for fr in c.decode(s):
                    if self.stop_event.is_set():
                        return
                    t = time.time_ns()
                    rgb = fr.to_ndarray(format="rgb24")                             # [H,W,3] on the host
                    x = torch.from_numpy(rgb).to(self.dev).permute(2, 0, 1)[None]   # the full frame -> device
                    with torch.inference_mode():
                        inp, place = preprocess(x, self.size, dtype=dtype)
                        out = self.engine(inp)
                        det = decode(next(iter(out.values())), format=self.fmt, conf=0.25, iou=0.7)
                        input_to_image(det.bbox, place).cpu()
                    self.counts[k] += 1
                    self.lat.append((time.time_ns() - t) / 1e6)


def _clip_fps(clip: str) -> float:
    import av
    with av.open(clip) as c:
        s = c.streams.video[0]
        return float(s.guessed_rate or s.average_rate or 30)


class _Timed:
    """Wraps a stage (``__call__``) or sink (``write``): times it into ``work.parts[name]`` while
    ``work.timing`` is set, synchronising the device around it."""

    def __init__(self, inner: Any, work: _Pipe, name: str) -> None:
        self.inner, self.work, self._part = inner, work, name

    def __getattr__(self, k: str) -> Any:     # name, reset, close, end_source ... of the inner
        fn = getattr(self.inner, k)
        if k in ("launch", "finish"):         # a split stage: time both halves
            name = self._part if k == "launch" else f"{self._part}-finish"
            return lambda arg: self._timed(fn, arg, name)
        return fn

    def _timed(self, fn: Any, batch: Any, part: str | None = None) -> Any:
        if not self.work.timing:
            return fn(batch)
        self.work.sync()
        t = time.perf_counter()
        out = fn(batch)
        self.work.sync()
        part = part or self._part
        self.work.parts[part] = self.work.parts.get(part, 0.0) + time.perf_counter() - t
        return out

    def __call__(self, batch: Any) -> Any:
        return self._timed(self.inner, batch)

    def write(self, batch: Any) -> None:
        self.work.objects += len(batch.objects)
        self._timed(self.inner.write, batch)


class _Pipe(_Work):
    def __init__(self, clip: str, n: int, dev: torch.device, *, model: str, batch: int, mux_size: tuple[int, int],
                 track: bool, max_wait_ms: float, queue_size: int, jsonl: str, pace: float | None = None,
                 torch_threads: int | None = None, decode_processes: int = 0) -> None:
        from .mux import Muxer
        from .pipeline import Pipeline
        from .sinks.jsonl import JsonlSink
        from .sources.file import FileSource
        from .stages.detect import Detector
        from .stages.track import Tracker

        super().__init__()
        self.dev, self.timing, self.parts, self.objects, self.pace = dev, False, {}, 0, pace
        work = self

        class TimedMuxer(Muxer):
            def collect(self, *a: Any, **kw: Any) -> Any:
                t = time.perf_counter()
                out = super().collect(*a, **kw)
                if work.timing:
                    work.parts["collect"] = work.parts.get("collect", 0.0) + time.perf_counter() - t
                return out

            def assemble(self, frames: Any, device: torch.device) -> Any:
                return _Timed(lambda fr: Muxer.assemble(self, fr, device), work, "assemble")(frames)

        stages = [_Timed(Detector(model, half=dev.type == "cuda"), self, "detect")]
        if track:
            stages.append(_Timed(Tracker(), self, "track"))
        # paced: each stream replays the clip like a camera at ``pace`` frames/s (FileSource's
        # realtime mode: released when due, stamped then, live drop-oldest queues)
        speed = pace / _clip_fps(clip) if pace else False
        sources = [FileSource(clip, loop=True, realtime=speed) for _ in range(n)]
        self.pipe = Pipeline(sources,
                             TimedMuxer(batch_size=batch, max_wait_ms=max_wait_ms, size=mux_size), stages,
                             [_Timed(JsonlSink(jsonl), self, "sink")], device=dev, queue_size=queue_size,
                             torch_threads=torch_threads, decode_processes=decode_processes)
        self.lat = self.pipe.summary.latencies_ms
        self.extra["decode_processes"] = decode_processes

    def child_cpu(self) -> float:
        pool = self.pipe._pool               # noqa: SLF001 - the pipeline's decode processes
        return pool.cpu_seconds() if pool is not None else 0.0

    def child_pids(self) -> list[int]:
        pool = self.pipe._pool               # noqa: SLF001
        return pool.pids() if pool is not None else []

    def _released(self) -> int:
        # every frame a paced source releases reaches the pipeline as one decoded frame
        return sum(st.decoded for st in self.pipe.summary.sources.values())

    def _dropped(self) -> int:
        return sum(q.dropped for q in list(self.pipe._queues.values()))     # noqa: SLF001

    def window(self, wall: float | None = None) -> dict[str, Any]:
        if wall is None:
            self._r0, self._d0 = self._released(), self._dropped()
            return {}
        if not self.pace:
            return {}
        offered = (self._released() - self._r0) / wall
        return {"offered_fps": round(offered, 1), "pace_fps_per_stream": round(self.pace, 2),
                "dropped_fps": round((self._dropped() - self._d0) / wall, 1)}

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def start(self) -> None:
        self.it = iter(self.pipe)

    def pump(self) -> None:
        try:
            b = next(self.it)
        except StopIteration:
            raise RuntimeError("the pipeline ended early (looping sources should not end)") from None
        self.counts[0] += len(b.frames)

    def stop(self) -> None:
        self.it.close()

    def breakdown(self, seconds: float) -> dict[str, Any]:
        """Time per batch in each part of the main loop, device synced at their boundaries."""
        self.parts, b0, f0, o0 = {}, self.pipe.summary.batches, self.count(), self.objects
        self.sync()
        self.timing, t0 = True, time.perf_counter()
        while time.perf_counter() - t0 < seconds or self.pipe.summary.batches == b0:
            self.pump()
        wall, self.timing = time.perf_counter() - t0, False
        nb = max(self.pipe.summary.batches - b0, 1)
        parts = {k: round(v * 1e3 / nb, 2) for k, v in self.parts.items()}
        parts["other"] = round(wall * 1e3 / nb - sum(parts.values()), 2)
        return {"breakdown_ms_per_batch": parts, "breakdown_fps": round((self.count() - f0) / wall, 1),
                "frames_per_batch": round((self.count() - f0) / nb, 2),
                "objects_per_frame": round((self.objects - o0) / max(self.count() - f0, 1), 2)}


# ------------------------------------------------------------------------------------ driver
