"""Live benchmark: N generated 1080p30 camera streams (H.264 / HEVC) on loopback -> detector +
tracker + JSONL, measured as an operator would.

The streams are MPEG-TS over TCP from PyAV (``tests/e2e/ts_server.py``: a pre-encoded
camera-like clip remuxed and paced at its frame rate, in a loop; the GPU machine has no RTSP
server), served by a separate process so that its CPU is not the pipeline's. Each stream is a
``UriSource(tcp://...)`` (``decoder=auto``: NVDEC on CUDA), decoded in ``--decode-processes``
processes. Printed (one JSON line, plus a table): per-stream delivered vs offered fps, drops,
p50/p95 latency from arrival to sink, CPU cores of the pipeline's processes, GPU memory over
time, the host CPU model and the GPU name.

    python benchmarks/live.py --streams 32 --seconds 40 --codec h264 --model .models/yolo11n_shapes.torchscript
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def _serve(args: argparse.Namespace) -> None:
    from ts_server import TsServer, encode_clip
    clip = encode_clip(Path(args.workdir) / f"clip_{args.codec}.ts", codec=args.codec, width=args.width,
                       height=args.height, fps=args.fps, seconds=4.0, gop=args.fps)
    servers = [TsServer([clip]).start() for _ in range(args.streams)]
    print("READY " + " ".join(str(s.port) for s in servers), flush=True)
    for line in sys.stdin:                                 # "sent": report; EOF: stop
        print("SENT " + " ".join(str(s.sent) for s in servers), flush=True)
    for s in servers:
        s.stop()


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds not measured after every stream delivers frames")
    ap.add_argument("--codec", choices=("h264", "hevc"), default="h264")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--decode-processes", type=int, default=8)
    ap.add_argument("--batch", type=int, default=0, help="muxer batch size (0: one frame per stream)")
    ap.add_argument("--model", default=str(ROOT / ".models" / "yolo11n_shapes.torchscript"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--decoder", default="auto", choices=("auto", "nvdec", "ffmpeg"))
    ap.add_argument("--stages", default="full", choices=("full", "detect", "none"),
                    help="full: detector + tracker + JSONL; none: decode and mux only (isolates the sources)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return _serve(args)

    import torch

    from vidflow.mux import Muxer
    from vidflow.pipeline import Pipeline
    from vidflow.sinks.jsonl import JsonlSink
    from vidflow.sources.uri import UriSource
    from vidflow.stages.detect import Detector
    from vidflow.stages.track import Tracker

    work = tempfile.mkdtemp(prefix="vidflow-live-")
    t_enc = time.monotonic()
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--workdir", work, "--streams", str(args.streams),
                               "--codec", args.codec, "--width", str(args.width), "--height", str(args.height),
                               "--fps", str(args.fps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, bufsize=1)
    line = server.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"stream server failed: {line!r}")
    ports = [int(p) for p in line.split()[1:]]
    print(f"serving {len(ports)} {args.codec} {args.width}x{args.height}@{args.fps} streams "
          f"(encoded in {time.monotonic() - t_enc:.1f} s)", flush=True)

    dev = torch.device(args.device)
    sources = [UriSource(f"tcp://127.0.0.1:{p}", decoder=args.decoder, backoff=(0.5, 5.0)) for p in ports]
    jsonl = os.path.join(work, "out.jsonl")
    stages = [] if args.stages == "none" else [Detector(args.model, half=dev.type == "cuda")]
    if args.stages == "full":
        stages.append(Tracker())
    pipe = Pipeline(sources, Muxer(batch_size=args.batch or args.streams, max_wait_ms=20, size=(640, 640)),
                    stages, [JsonlSink(jsonl)] if args.stages == "full" else [], device=dev,
                    queue_size=8, decode_processes=args.decode_processes)
    counts: dict = {}
    lat: list[float] = []
    mem: list[tuple[float, float]] = []
    done = threading.Event()
    t_start = time.monotonic()
    window: dict = {}

    def consume() -> None:
        for batch in pipe:
            now = time.time_ns()
            measuring = "t0" in window
            for f in batch.frames:
                if measuring:
                    counts[f.source_id] = counts.get(f.source_id, 0) + 1
                    lat.append((now - f.ntp_ns) / 1e6)
        done.set()

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    me = os.getpid()
    # the window opens once every stream delivers (decode processes, NVDEC and the detector's
    # warm-up take a while to start) plus --warmup seconds, and lasts --seconds
    running_at = None
    while not done.is_set() and (running_at is None or time.monotonic() - running_at < args.warmup + args.seconds):
        t = time.monotonic() - t_start
        if running_at is None and all(s.state == "running" for s in pipe.snapshot().sources.values()):
            running_at = time.monotonic()
            window["startup_s"] = round(t, 1)
        if running_at is None and t > 120:
            raise SystemExit(f"not every stream runs after 120 s: {[s.state for s in pipe.snapshot().sources.values()]}")
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            mem.append((round(t, 1), round((total - free) / 2**30, 2)))
        if "cpu0" not in window and running_at is not None and time.monotonic() - running_at >= args.warmup:
            server.stdin.write("sent\n")
            server.stdin.flush()
            window["sent0"] = sum(int(x) for x in server.stdout.readline().split()[1:])
            procs = [me] + [p for p in _children(me) if p != server.pid]
            window.update(cpu0=sum(_cpu_s(p) for p in procs), t0=time.monotonic(),
                          drop0={sid: s.dropped for sid, s in pipe.snapshot().sources.items()})
        time.sleep(0.5 if running_at is None else 2.0)
    procs = [me] + [p for p in _children(me) if p != server.pid]
    cpu1, t1 = sum(_cpu_s(p) for p in procs), time.monotonic()
    server.stdin.write("sent\n")
    server.stdin.flush()
    sent1 = sum(int(x) for x in server.stdout.readline().split()[1:])
    drops = {sid: s.dropped - window.get("drop0", {}).get(sid, 0) for sid, s in pipe.snapshot().sources.items()}
    pipe.stop()
    th.join(timeout=30)
    server.stdin.close()
    server.wait(timeout=30)
    dt = t1 - window.get("t0", t_start)
    counters = [s.stats() for s in sources]
    fps = [counts.get(i, 0) / dt for i in range(len(sources))]
    lat.sort()
    q = (lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] if lat else float("nan"))
    backends = sorted({s.backend or "?" for s in sources})
    res = {
        "streams": len(sources), "codec": args.codec, "size": f"{args.width}x{args.height}", "offered_fps": args.fps,
        "delivered_fps_min": round(min(fps), 2), "delivered_fps_mean": round(sum(fps) / len(fps), 2),
        "delivered_total_fps": round(sum(fps), 1), "dropped": sum(drops.values()),
        "served_total_fps": round((sent1 - window.get("sent0", 0)) / dt, 1) if dt > 0 else None,
        "reconnects": sum(c.reconnects for c in counters), "stalls": sum(c.stalls for c in counters),
        "decoded_total": sum(c.decoded for c in counters), "stages": args.stages,
        "latency_ms_p50": round(q(0.5), 1), "latency_ms_p95": round(q(0.95), 1),
        "cpu_cores": round((cpu1 - window.get("cpu0", 0.0)) / dt, 2) if dt > 0 else None,
        "cpu_cores_per_stream": round((cpu1 - window.get("cpu0", 0.0)) / dt / len(sources), 3) if dt > 0 else None,
        "gpu_mem_gib": mem, "backends": backends, "decode_processes": args.decode_processes,
        "measured_s": round(dt, 1), "startup_s": window.get("startup_s"), "host_cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "source_states": sorted({s.state for s in sources}),
        "decode_errors": sum(c.decode_errors for c in counters),
    }
    print("FIGURE " + json.dumps(res), flush=True)
    print(f"{res['streams']} x {res['codec']} {res['size']}@{args.fps}: delivered {res['delivered_fps_mean']} fps/stream "
          f"(min {res['delivered_fps_min']}), dropped {res['dropped']}, latency p50 {res['latency_ms_p50']} ms "
          f"p95 {res['latency_ms_p95']} ms, {res['cpu_cores']} cores ({res['cpu_cores_per_stream']}/stream), "
          f"backends {backends}, on {res['gpu']} / {res['host_cpu']}")


if __name__ == "__main__":
    main()
