"""``vidflow bench``: what one machine sustains, as JSON lines (docs/PERFORMANCE.md explains).

    vidflow bench --streams 8 64 --seconds 10 --model .models/yolo11n_shapes.torchscript --profile
    vidflow bench --device cpu --streams 2 --frames 10 --model demo --size 320x240   # smoke test

Per stream count N, one line per measurement (``"bench"``):

- ``D``: decode only: N ``FileSource(loop=True)`` (NVDEC on CUDA), a thread each, frames dropped.
- ``M``: model only: the engine on a random ``[batch,3,H,W]`` input (fp16 on CUDA), synced per call.
- ``E``: ``Pipeline``: N FileSources -> Muxer(batch) -> Detector(half) -> Tracker -> JsonlSink.
- ``E-notrack`` / ``E-paced`` (``--variants``): E without the tracker; E with each stream
  released like a live camera at ``--pace`` fps (default 80% of E's), latency from the release.
- ``B``: the naive baseline: a thread per stream, PyAV decode on the CPU -> NumPy -> torch on the
  device -> letterbox -> model -> NMS -> boxes to the host, one frame at a time.

Each runs ``--warmup`` s after its first frame, then ``--seconds`` s (or ``--frames`` per stream)
are timed. Fields: ``fps`` (frames, for M images, per second over all streams), ``cpu_cores``
(process CPU time / wall time), ``gpu_alloc_peak_mb`` (torch's allocator peak),
``gpu_used_peak_mb`` (whole device, from ``cudaMemGetInfo``, sampled), ``rss_peak_mb``,
``latency_p50_ms``/``latency_p95_ms`` (frame receipt -> sink; M: one batch), and from a
``--copy-seconds`` window under ``torch.profiler`` (CUPTI memcpy records of every thread):
``h2d_per_frame``, ``d2h_per_frame``, their bytes, and ``image_copies_per_frame`` (host<->device
copies of >= 100 kB: an image, never boxes). E also reports ``breakdown_ms_per_batch``: time per
batch in each part of the main loop, with the device synchronised at their boundaries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any

import torch

__all__ = ["main", "make_bench_clip", "FIELDS"]

FIELDS = ("bench", "streams", "batch_size", "device", "model", "frames", "wall_s", "fps", "fps_per_stream",
          "cpu_cores", "gpu_alloc_peak_mb", "gpu_used_peak_mb", "rss_peak_mb", "latency_p50_ms", "latency_p95_ms",
          "h2d_per_frame", "d2h_per_frame", "h2d_bytes_per_frame", "d2h_bytes_per_frame", "image_copies_per_frame")
IMAGE_BYTES = 100_000
_MB = 1 << 20


def make_bench_clip(path: str | None = None, *, width: int = 1920, height: int = 1080, frames: int = 300,
                    bitrate: int = 5_000_000) -> str:
    """Generate (once; an existing file is reused) a camera-like H.264 clip with B-frames."""
    from .scenes import make_clip

    if path is None:
        path = os.path.join(tempfile.gettempdir(), "vidflow-bench", f"clip_{width}x{height}_{frames}_{bitrate}.mp4")
    if not os.path.exists(path):
        make_clip(path + ".part.mp4", width=width, height=height, frames=frames, fps=30, seed=0, bframes=True,
                  bitrate=bitrate)
        os.replace(path + ".part.mp4", path)
    return path


# ------------------------------------------------------------------------------------ meters
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Window:
    """Wall, CPU time, peak memory (GPU allocator, whole device, RSS) over a timed window."""

    def __init__(self, dev: torch.device) -> None:
        self.dev, self.used, self.rss = dev, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while True:
            self.rss = max(self.rss, _rss_mb())
            if self.dev.type == "cuda":
                free, total = torch.cuda.mem_get_info(self.dev)
                self.used = max(self.used, (total - free) / _MB)
            if self._stop.wait(0.1):
                return

    def start(self) -> _Window:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        self.c0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def stop(self, frames: int) -> dict[str, Any]:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self._stop.set()
        self._t.join()
        alloc = torch.cuda.max_memory_allocated(self.dev) / _MB if self.dev.type == "cuda" else 0.0
        return {"frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 1),
                "cpu_cores": round(cpu / wall, 2), "gpu_alloc_peak_mb": round(alloc, 1),
                "gpu_used_peak_mb": round(self.used, 1), "rss_peak_mb": round(self.rss, 1)}


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


class _Paced:
    """A file source released at ``fps`` like a live camera: each frame is decoded, held until its
    due time and stamped (``ntp_ns``) when released, so latency counts from that moment; ``live``,
    so a pipeline that falls behind drops the oldest queued frames instead of building a backlog.
    ``released[k]`` counts the frames released."""

    live = True

    def __init__(self, src: Any, fps: float, released: list[int], k: int) -> None:
        self.src, self.fps, self.uri, self.released, self.k = src, float(fps), src.uri, released, k

    def frames(self, *, device: torch.device, source_id: int | str) -> Any:
        from .sources.base import SourceFrame

        t0 = time.monotonic()
        for i, f in enumerate(self.src.frames(device=device, source_id=source_id)):
            wait = t0 + i / self.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.released[self.k] += 1
            yield SourceFrame(f.info.replace(ntp_ns=time.time_ns()), f.data, f.format, f.matrix, f.full_range)

    def close(self) -> None:
        self.src.close()


class _Timed:
    """Wraps a stage (``__call__``) or sink (``write``): times it into ``work.parts[name]`` while
    ``work.timing`` is set, synchronising the device around it."""

    def __init__(self, inner: Any, work: _Pipe, name: str) -> None:
        self.inner, self.work, self._part = inner, work, name

    def __getattr__(self, k: str) -> Any:     # name, reset, close, end_source ... of the inner
        return getattr(self.inner, k)

    def _timed(self, fn: Any, batch: Any) -> Any:
        if not self.work.timing:
            return fn(batch)
        self.work.sync()
        t = time.perf_counter()
        out = fn(batch)
        self.work.sync()
        self.work.parts[self._part] = self.work.parts.get(self._part, 0.0) + time.perf_counter() - t
        return out

    def __call__(self, batch: Any) -> Any:
        return self._timed(self.inner, batch)

    def write(self, batch: Any) -> None:
        self.work.objects += len(batch.objects)
        self._timed(self.inner.write, batch)


class _Pipe(_Work):
    def __init__(self, clip: str, n: int, dev: torch.device, *, model: str, batch: int, mux_size: tuple[int, int],
                 track: bool, max_wait_ms: float, queue_size: int, jsonl: str, pace: float | None = None) -> None:
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
        sources = [FileSource(clip, loop=True) for _ in range(n)]
        self.released = [0] * n
        self.pipe = Pipeline([_Paced(s, pace, self.released, k) for k, s in enumerate(sources)] if pace else sources,
                             TimedMuxer(batch_size=batch, max_wait_ms=max_wait_ms, size=mux_size), stages,
                             [_Timed(JsonlSink(jsonl), self, "sink")], device=dev, queue_size=queue_size,
                             torch_threads=torch.get_num_threads() if _THREADS_GIVEN else None)
        self.lat = self.pipe.summary.latencies_ms

    def window(self, wall: float | None = None) -> dict[str, Any]:
        if wall is None:
            self._r0 = sum(self.released)
            return {}
        if not self.pace:
            return {}
        offered = (sum(self.released) - self._r0) / wall
        return {"offered_fps": round(offered, 1), "pace_fps_per_stream": round(self.pace, 2)}

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
def _measure(work: _Work, dev: torch.device, args: argparse.Namespace, per_frame_units: int,
             tables: bool = False) -> tuple[dict[str, Any], str]:
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
        f0, win = work.count(), _Window(dev).start()
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
        if isinstance(work, _Pipe) and args.breakdown_seconds > 0:
            res.update(work.breakdown(args.breakdown_seconds))
        copies, text = _copies(work, dev, args.copy_seconds, tables)
        res.update(copies)
        res.update(work.extra)
        return res, text
    finally:
        work.stop()


def _load_model(model: str, dev: torch.device) -> tuple[Any, tuple[int, int], str]:
    from .engines import load_engine

    meta: dict[str, Any] = {}
    if model == "demo":
        from .demo_models import load_demo
        m, meta = load_demo(device=dev)
        eng = load_engine(m, device=dev, half=dev.type == "cuda")
    else:
        eng = load_engine(model, device=dev, half=dev.type == "cuda")
    md = {**getattr(eng, "metadata", {}), **meta}
    size = eng.input_size or md.get("input_size") or (640, 640)
    return eng, (int(size[0]), int(size[1])), md.get("format") or "yolov8"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1920x1080, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"expected even sizes >= 16, got {text!r}")
    return w, h


_THREADS_GIVEN = False     # --torch-threads given: the pipeline keeps it (else its own default)


def _parser() -> argparse.ArgumentParser:
    default_model = ".models/yolo11n_shapes.torchscript" if os.path.exists(".models/yolo11n_shapes.torchscript") else "demo"
    p = argparse.ArgumentParser(prog="vidflow bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--streams", type=int, nargs="+", default=[8], help="stream counts to measure (default: 8)")
    a("--seconds", type=float, default=10.0, help="timed window per measurement (default: 10)")
    a("--frames", type=int, default=None, help="time this many frames per stream instead of --seconds")
    a("--warmup", type=float, default=3.0, help="seconds run after the first frame before timing (default: 3)")
    a("--batch-size", type=int, default=None, help="muxer and model batch (default: streams, at most 64)")
    a("--model", default=default_model, help=f"detector: a .torchscript/.onnx path or 'demo' (default: {default_model})")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--skip", nargs="*", default=[], choices=["D", "M", "E", "B"], help="measurements to leave out")
    a("--out", default=None, help="also write the JSON lines to this file")
    a("--clip", default=None, help="an H.264 file to loop (default: generate one)")
    a("--size", type=_size, default=(1920, 1080), help="generated clip size (default: 1920x1080)")
    a("--clip-frames", type=int, default=300, help="generated clip length (default: 300)")
    a("--bitrate", type=int, default=5_000_000, help="generated clip bit/s (default: 5000000)")
    a("--mux-size", choices=["model", "source"], default="model",
      help="muxer output: the frame scaled to fit the model input (default), or the source size")
    a("--variants", nargs="+", choices=["full", "notrack", "paced"], default=["full"],
      help="E variants: full (detect+track+jsonl), notrack (detect+jsonl), paced (full, each stream "
           "released at --pace fps like a camera, default 80%% of the full E's fps per stream)")
    a("--pace", type=float, default=None, help="frames/s per stream of the paced variant")
    a("--torch-threads", type=int, default=None, help="torch.set_num_threads for the run (default: the pipeline's own: 1 on CUDA)")
    a("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s) for the run (default: 0.005)")
    a("--max-wait-ms", type=float, default=30.0)
    a("--queue-size", type=int, default=8, help="frames queued per source in E (default: 8)")
    a("--copy-seconds", type=float, default=1.0, help="profiler window counting copies (default: 1)")
    a("--breakdown-seconds", type=float, default=2.0, help="E: synced per-part timing window (0 = none)")
    a("--profile", action="store_true", help="print torch.profiler top-op tables of the E window to stderr")
    a("--start-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    return p


def _plan(n: int, args: argparse.Namespace, ctx: dict[str, Any], got: dict[str, float]) -> list[tuple[str, Any]]:
    """``(name, make_work)`` of the measurements for ``n`` streams, in order."""
    clip, dev, engine, msize, bs = ctx["clip"], ctx["dev"], ctx["engine"], ctx["msize"], ctx["bs"]

    def pipe(v: str) -> _Pipe:
        pace = None
        if v == "paced":
            if not (args.pace or got.get("E")):
                raise ValueError("--variants paced needs --pace or the full E variant measured first")
            pace = args.pace or 0.8 * got["E"] / n
        return _Pipe(clip, n, dev, model=args.model, batch=bs, mux_size=ctx["mux_size"], track=v != "notrack",
                     max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                     jsonl=os.path.join(ctx["tmp"], f"e{n}.jsonl"), pace=pace)

    plan: list[tuple[str, Any]] = []
    if "D" not in args.skip:
        plan.append(("D", lambda: _Decode(clip, n, dev)))
    if "M" not in args.skip:
        plan.append(("M", lambda: _Model(engine, msize, bs, dev)))
    if "E" not in args.skip:
        plan += [("E" if v == "full" else f"E-{v}", lambda v=v: pipe(v)) for v in args.variants]
    if "B" not in args.skip:
        plan.append(("B", lambda: _Naive(clip, n, dev, engine, msize, ctx["fmt"])))
    return plan


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON line per measurement. Returns 1 if one failed, else 0."""
    args = _parser().parse_args(argv)
    from .device import resolve_device

    dev = resolve_device(args.device)
    knobs = torch.get_num_threads(), sys.getswitchinterval()     # restored at the end
    global _THREADS_GIVEN
    _THREADS_GIVEN = bool(args.torch_threads)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    try:
        return _run(args, dev)
    finally:
        torch.set_num_threads(knobs[0])
        sys.setswitchinterval(knobs[1])


def _run(args: argparse.Namespace, dev: torch.device) -> int:
    import av

    from .ops.geometry import letterbox_placement
    if any(n < 1 for n in args.streams):
        raise ValueError(f"--streams: expected counts >= 1, got {args.streams}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    clip = args.clip or make_bench_clip(width=args.size[0], height=args.size[1], frames=args.clip_frames,
                                        bitrate=args.bitrate)
    with av.open(clip) as c:
        cc = c.streams.video[0].codec_context
        src_size, rate = (cc.width, cc.height), c.streams.video[0].bit_rate or c.bit_rate or 0
    engine, msize, fmt = _load_model(args.model, dev)
    fit = letterbox_placement(src_size, msize).new_size          # never scaled up
    ctx = {"clip": clip, "dev": dev, "engine": engine, "msize": msize, "fmt": fmt, "tmp": tempfile.mkdtemp(),
           "mux_size": src_size if args.mux_size == "source" or fit[0] >= src_size[0] else fit}
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed below
    failed = 0

    def emit(rec: dict[str, Any]) -> None:
        line = json.dumps(rec)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    try:
        for n in args.streams:
            ctx["bs"] = bs = args.batch_size or min(n, 64)
            base = {"streams": n, "batch_size": bs, "device": gpu, "model": os.path.basename(str(args.model)),
                    "clip": f"{src_size[0]}x{src_size[1]} {rate / 1e6:.1f} Mbit/s",
                    "torch_threads": torch.get_num_threads(), "switch_interval_s": sys.getswitchinterval()}
            got: dict[str, float] = {}
            for name, make in _plan(n, args, ctx, got):
                try:
                    work = make()
                    res, text = _measure(work, dev, args, n, tables=args.profile and name == "E")
                except Exception as e:  # noqa: BLE001 - report it and go on with the others
                    failed += 1
                    emit({"bench": name, "streams": n, "device": gpu, "error": f"{type(e).__name__}: {e}"})
                    continue
                rec = {"bench": name, **base, **res, "fps_per_stream": round(res["fps"] / n, 1)}
                if name == "M":
                    rec.update(fps_per_stream=None, input=list(msize), dtype=str(engine.input_dtype).split(".")[-1])
                if name.startswith("E"):
                    rec["mux_size"] = list(ctx["mux_size"])
                emit({k: rec.get(k) for k in FIELDS} | {k: v for k, v in rec.items() if k not in FIELDS})
                got[name] = res["fps"]
                if text:
                    print(f"# torch.profiler, E window, streams={n}, device={gpu}\n{text}", file=sys.stderr, flush=True)
                del work
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            if "E" in got:
                emit({"bench": "summary", "streams": n, "device": gpu, **{f"{k}_fps": v for k, v in got.items()},
                      "E_over_D": round(got["E"] / got["D"], 3) if got.get("D") else None,
                      "E_over_B": round(got["E"] / got["B"], 2) if got.get("B") else None})
    finally:
        if out is not None:
            out.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
