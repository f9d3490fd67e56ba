"""``vidflow bench``: what one machine sustains, as JSON lines (docs/PERFORMANCE.md explains).

    vidflow bench --streams 8 64 --seconds 10 --model .models/yolo11n_shapes.torchscript --profile
    vidflow bench --device cpu --streams 2 --frames 10 --model demo --size 320x240   # smoke test

Per stream count N, one line per measurement (``"bench"``):

- ``D``: decode only: N ``FileSource(loop=True)`` (NVDEC on CUDA), a thread each, frames dropped;
  ``D-pK``: the same in K decode processes (``--decode-processes``), frames handed over zero-copy.
- ``M``: model only: the engine on a random ``[batch,3,H,W]`` input (fp16 on CUDA), synced per call.
- ``E``: ``Pipeline``: N FileSources -> Muxer(batch) -> Detector(half) -> Tracker -> JsonlSink;
  ``E-pK``: with ``Pipeline(decode_processes=K)``.
- ``E-notrack`` / ``E-paced`` / ``E-tailprio`` (``--variants``): E without the tracker; E with each
  stream replayed like a live camera at ``--pace`` fps (``FileSource(realtime=...)``, default 80%
  of E's fps), latency from the release; ``dropped_fps``: frames the live queues dropped; E with
  the tail thread's CUDA stream at high priority (``VIDFLOW_TAIL_PRIORITY=-1``, an experiment).
- ``B``: the naive baseline: a thread per stream, PyAV decode on the CPU -> NumPy -> torch on the
  device -> letterbox -> model -> NMS -> boxes to the host, one frame at a time.

Each runs ``--warmup`` s after its first frame, then ``--seconds`` s (or ``--frames`` per stream)
are timed. Fields: ``fps`` (frames, for M images, per second over all streams), ``cpu_cores``
(CPU time of the process and its decode processes / wall time), ``gpu_alloc_peak_mb`` (torch's allocator peak),
``gpu_used_peak_mb`` (whole device, from ``cudaMemGetInfo``, sampled), ``rss_peak_mb``,
``latency_p50_ms``/``latency_p95_ms`` (frame receipt -> sink; M: one batch), the memory of all
the processes over the window (``memory_first_last_tenth``, ``memory_curve_s_rss_gpu_mb``), the
garbage collector's pauses, and from a
``--copy-seconds`` window under ``torch.profiler`` (CUPTI memcpy records of every thread):
``h2d_per_frame``, ``d2h_per_frame``, their bytes, and ``image_copies_per_frame`` (host<->device
copies of >= 100 kB: an image, never boxes). E also reports ``breakdown_ms_per_batch``: time per
batch in each part of the loop, with the calling thread's CUDA stream synchronised at their boundaries (the pipeline's
observers: ``vidflow.observe``). Every line names the host's CPU beside the device
(``host_cpu``, ``host_cores``, ``host_cpu_mhz``): post-processing runs there.
E also reports its start-up: ``first_batch_s`` and ``steady_s``, seconds from the start of the
pipeline's run to its first batch and to steady state (``vidflow.runtime.startup``).

``vidflow bench --live``: live cameras on loopback instead (:mod:`vidflow.bench.live`).

Modules: ``cli`` (arguments, the plan, the lines), ``meters`` (the timed window, copies, the
host), ``workloads`` (D, M, B), ``pipe`` (E, through the pipeline's public API only), ``live``
(the live run), ``live_serve`` (its cameras), ``live_meter`` (its clock and process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import torch

from .meters import host_cpu, measure
from .pipe import PipeWork
from .workloads import Decode, DecodeProcs, Model, Naive

__all__ = ["main", "make_bench_clip", "FIELDS"]

FIELDS = ("bench", "streams", "batch_size", "device", "host_cpu", "host_cores", "host_cpu_mhz", "model", "frames", "wall_s", "fps", "fps_per_stream",
          "cpu_cores", "gpu_alloc_peak_mb", "gpu_used_peak_mb", "rss_peak_mb", "latency_p50_ms", "latency_p95_ms",
          "h2d_per_frame", "d2h_per_frame", "h2d_bytes_per_frame", "d2h_bytes_per_frame", "image_copies_per_frame")


def make_bench_clip(path: str | None = None, *, width: int = 1920, height: int = 1080, frames: int = 300,
                    bitrate: int = 5_000_000) -> str:
    """Generate (once; an existing file is reused) a camera-like H.264 clip with B-frames."""
    from ..scenes import make_clip

    if path is None:
        path = os.path.join(tempfile.gettempdir(), "vidflow-bench", f"clip_{width}x{height}_{frames}_{bitrate}.mp4")
    if not os.path.exists(path):
        make_clip(path + ".part.mp4", width=width, height=height, frames=frames, fps=30, seed=0, bframes=True,
                  bitrate=bitrate)
        os.replace(path + ".part.mp4", path)
    return path


def _load_model(model: str, dev: torch.device) -> tuple[Any, tuple[int, int], str]:
    from ..engines.load import head_for, load_model

    eng, md = load_model(model, device=dev, half=dev.type == "cuda")
    size = md.get("input_size") or (640, 640)
    fmt = head_for(md)
    return eng, (int(size[0]), int(size[1])), fmt if fmt in ("yolov8", "yolov5", "end2end") else "yolov8"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1920x1080, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"expected even sizes >= 16, got {text!r}")
    return w, h


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
    a("--variants", nargs="+", choices=["full", "notrack", "paced", "tailprio"], default=["full"],
      help="E variants: full (detect+track+jsonl), notrack (detect+jsonl), paced (full, each stream "
           "released at --pace fps like a camera, default 80%% of the full E's fps per stream), "
           "tailprio (full, the tail thread's CUDA stream at high priority: VIDFLOW_TAIL_PRIORITY=-1)")
    a("--pace", type=float, default=None, help="frames/s per stream of the paced variant")
    a("--torch-threads", type=int, default=None, help="torch.set_num_threads for the run (default: the pipeline's own: 1 on CUDA)")
    a("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s) for the run (default: 0.005)")
    a("--max-wait-ms", type=float, default=30.0)
    a("--decode-processes", type=int, nargs="+", default=None,
      help="D and E with the sources decoding in this many processes (0: a thread each, in the "
           "pipeline's process); several values measure each (default: 8 on CUDA, 0 on the CPU)")
    a("--queue-size", type=int, default=8, help="frames queued per source in E (default: 8)")
    a("--copy-seconds", type=float, default=1.0,
      help="profiler window counting copies (default: 1; 0: none, no h2d/d2h fields)")
    a("--breakdown-seconds", type=float, default=2.0, help="E: synced per-part timing window (0 = none)")
    a("--profile", action="store_true", help="print torch.profiler top-op tables of the E window to stderr")
    a("--start-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    a("--live", action="store_true", help="live cameras on loopback instead (its own options: vidflow bench --live --help)")
    return p


def _plan(n: int, args: argparse.Namespace, ctx: dict[str, Any], got: dict[str, float]) -> list[tuple[str, Any]]:
    """``(name, make_work)`` of the measurements for ``n`` streams, in order."""
    clip, dev, engine, msize, bs = ctx["clip"], ctx["dev"], ctx["engine"], ctx["msize"], ctx["bs"]

    def pipe(v: str, k: int) -> PipeWork:
        pace = None
        if v == "paced":
            full = max((f for name, f in got.items() if name == "E" or name.startswith("E-p")), default=None)
            if not (args.pace or full):
                raise ValueError("--variants paced needs --pace or the full E variant measured first")
            pace = args.pace or 0.8 * (full or 0.0) / n
        # read when the run's tail thread starts: set for this variant, cleared for the others
        if v == "tailprio":
            os.environ["VIDFLOW_TAIL_PRIORITY"] = "-1"
        else:
            os.environ.pop("VIDFLOW_TAIL_PRIORITY", None)
        return PipeWork(clip, n, dev, model=args.model, batch=bs, mux_size=ctx["mux_size"], track=v != "notrack",
                     max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                     jsonl=os.path.join(ctx["tmp"], f"e{n}.jsonl"), pace=pace,
                     torch_threads=args.torch_threads or None, decode_processes=k)

    def tag(k: int) -> str:
        return f"-p{k}" if k else ""

    plan: list[tuple[str, Any]] = []
    if "D" not in args.skip:
        plan += [(f"D{tag(k)}", (lambda k=k: DecodeProcs(clip, n, dev, k)) if k else (lambda: Decode(clip, n, dev)))
                 for k in args.decode_processes]
    if "M" not in args.skip:
        plan.append(("M", lambda: Model(engine, msize, bs, dev)))
    if "E" not in args.skip:
        plan += [(("E" if v == "full" else f"E-{v}") + tag(k), lambda v=v, k=k: pipe(v, k))
                 for k in args.decode_processes for v in args.variants]
    if "B" not in args.skip:
        plan.append(("B", lambda: Naive(clip, n, dev, engine, msize, ctx["fmt"])))
    return plan


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON line per measurement. Returns 1 if one failed, else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--live" in argv:                    # ``vidflow bench --live ...``: vidflow.bench.live
        from .live import main as live_main
        return live_main([a for a in argv if a != "--live"])
    args = _parser().parse_args(argv)
    from ..device import resolve_device

    dev = resolve_device(args.device)
    if args.decode_processes is None:
        args.decode_processes = [8] if dev.type == "cuda" else [0]
    knobs = torch.get_num_threads(), sys.getswitchinterval()     # restored at the end
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

    from ..ops.geometry import letterbox_placement
    if any(n < 1 for n in args.streams):
        raise ValueError(f"--streams: expected counts >= 1, got {args.streams}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # The copy windows start and stop torch.profiler (CUPTI) once per measurement while CUDA
        # graphs replay. Tearing CUPTI down between sessions then crashes at random (a "double
        # free or corruption" abort of the whole bench, seen in 2 of 4 runs on the H200); this
        # is PyTorch's own workaround for CUDA graphs (torch/profiler/profiler.py), which it
        # applies only to graphs it captured itself. Read by Kineto when a session starts/stops.
        os.environ.setdefault("TEARDOWN_CUPTI", "0")
        os.environ.setdefault("DISABLE_CUPTI_LAZY_REINIT", "1")
        torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    host = host_cpu()          # beside the GPU on every line: post-processing runs on this CPU
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
        rec = {**rec, **{k: v for k, v in host.items() if rec.get(k) is None}}
        line = json.dumps(rec)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    try:
        for n in args.streams:
            ctx["bs"] = bs = args.batch_size or min(n, 64)
            base = {"streams": n, "batch_size": bs, "device": gpu, **host, "model": os.path.basename(str(args.model)),
                    "clip": f"{src_size[0]}x{src_size[1]} {rate / 1e6:.1f} Mbit/s",
                    "torch_threads": torch.get_num_threads(), "switch_interval_s": sys.getswitchinterval()}
            got: dict[str, float] = {}
            for name, make in _plan(n, args, ctx, got):
                try:
                    work = make()
                    res, text = measure(work, dev, args, n, tables=args.profile and name == "E")
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
            e_full = {k: v for k, v in got.items() if k == "E" or k.startswith("E-p")}
            d_all = {k: v for k, v in got.items() if k == "D" or k.startswith("D-p")}
            if e_full:
                e_name = max(e_full, key=lambda k: e_full[k])
                d_name = max(d_all, key=lambda k: d_all[k]) if d_all else None
                e_fps, d_fps = e_full[e_name], (d_all[d_name] if d_name is not None else None)
                # the best E against the best D: decode's ceiling is whichever way vidflow reaches it
                emit({"bench": "summary", "streams": n, "device": gpu, **{f"{k}_fps": v for k, v in got.items()},
                      "E_best": e_name, "D_best": d_name,
                      "E_over_D": round(e_fps / d_fps, 3) if d_fps else None,
                      "E_over_B": round(e_fps / got["B"], 2) if got.get("B") else None})
    finally:
        if out is not None:
            out.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
