"""Ultralytics' own multi-stream inference, run as its users run it, beside vidflow's pipeline on
the same clip and stream count; prints JSON lines (issue 15's target: vidflow >= 15x).

    python benchmarks/ultralytics_streams.py --ultralytics DIR [--streams 64] [--seconds 20]
        [--model .models/yolo11n_shapes.torchscript] [--clip FILE] [--device cuda] [--no-vidflow]
    # on the GPU machine: bash scripts/gpu-check.sh ultralytics (carries .ul, the unpacked wheel)

Ultralytics is the reference only, never a dependency: ``DIR`` holds the unpacked ``ultralytics``
package (``pip download --no-deps ultralytics`` and unzip it). Its side follows its thread-safe
inference guide: one ``YOLO`` model per thread, each thread ``predict(source=clip, stream=True,
half=True, imgsz=640)`` over the file again and again (its own decode: OpenCV on the CPU, one
frame at a time). ``fps``: frames of all threads over the window, which opens once every thread
has delivered a result and ``--warmup`` seconds more have passed; ``cpu_cores``: this process's
CPU time over the window. vidflow's side is ``vidflow bench --skip D M B`` (E: decode on NVDEC in
decode processes, batched detector, tracker, JSONL) in a subprocess on the same clip, model and
streams. Every line names the host's CPU and the device.
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

import torch

ROOT = Path(__file__).resolve().parents[1]


def ultralytics_fps(args: argparse.Namespace, clip: str) -> dict:
    sys.path.insert(0, str(Path(args.ultralytics).resolve()))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
    from ultralytics import YOLO  # noqa: PLC0415 - the reference, from --ultralytics

    device = 0 if args.device == "cuda" else "cpu"
    half = args.device == "cuda"
    counts = [0] * args.streams
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(i: int) -> None:
        try:
            model = YOLO(args.model, task="detect")          # one model per thread, as its guide says
            while not stop.is_set():
                for _ in model.predict(source=clip, stream=True, half=half, device=device, imgsz=640,
                                       conf=0.25, verbose=False):
                    counts[i] += 1
                    if stop.is_set():
                        break
        except BaseException as e:  # noqa: BLE001 - reported below, the others keep going
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.streams)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    deadline = time.monotonic() + args.start_timeout
    while min(counts) == 0 and not errors and time.monotonic() < deadline:
        time.sleep(0.2)
    if errors or min(counts) == 0:
        stop.set()
        why = f"{type(errors[0]).__name__}: {errors[0]}" if errors else f"no result within {args.start_timeout:g} s"
        raise SystemExit(f"ultralytics: a thread failed to start ({why})")
    first_all_s = time.monotonic() - t_start
    time.sleep(args.warmup)
    f0, c0, t0 = sum(counts), time.process_time(), time.monotonic()
    time.sleep(args.seconds)
    f1, c1, t1 = sum(counts), time.process_time(), time.monotonic()
    stop.set()
    for t in threads:
        t.join(30)
    if errors:
        raise SystemExit(f"ultralytics: {len(errors)} threads failed, the first: {type(errors[0]).__name__}: {errors[0]}")
    fps = (f1 - f0) / (t1 - t0)
    return {"bench": "ultralytics", "fps": round(fps, 1), "fps_per_stream": round(fps / args.streams, 2),
            "cpu_cores": round((c1 - c0) / (t1 - t0), 2), "first_result_all_threads_s": round(first_all_s, 1),
            "how": "YOLO per thread, predict(stream=True, half=%s, imgsz=640), OpenCV decode" % half}


def vidflow_fps(args: argparse.Namespace, clip: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "e.jsonl")
        cmd = [sys.executable, "-m", "vidflow.cli", "bench", "--device", args.device, "--streams", str(args.streams),
               "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--skip", "D", "M", "B",
               "--copy-seconds", "0", "--model", args.model, "--clip", clip, "--out", out]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 300)
        lines = [json.loads(x) for x in open(out)] if os.path.exists(out) else []
    es = [x for x in lines if x.get("bench", "").startswith("E")]
    if r.returncode != 0 or not es:
        raise SystemExit(f"vidflow bench failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    best = max(es, key=lambda x: x["fps"])
    return {"bench": "vidflow", "line": best["bench"], "fps": best["fps"], "fps_per_stream": best.get("fps_per_stream"),
            "cpu_cores": best.get("cpu_cores")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ultralytics", required=True, help="directory holding the unpacked 'ultralytics' package")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--model", default=str(ROOT / ".models" / "yolo11n_shapes.torchscript"))
    p.add_argument("--clip", default=None, help="an H.264 file (default: the bench's generated 1080p clip)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-vidflow", action="store_true", help="Ultralytics' side only")
    args = p.parse_args()
    if args.streams < 1:
        raise SystemExit("--streams: expected >= 1")
    if not Path(args.model).is_file():
        raise SystemExit(f"--model: file not found: {args.model}")
    if not (Path(args.ultralytics) / "ultralytics").is_dir():
        raise SystemExit(f"--ultralytics: no 'ultralytics' package in {args.ultralytics}")

    from vidflow.bench.cli import make_bench_clip
    from vidflow.bench.meters import host_cpu

    clip = args.clip or make_bench_clip()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    head = {"streams": args.streams, "seconds": args.seconds, "model": Path(args.model).name, "clip": Path(clip).name,
            "device": gpu, **host_cpu()}
    ours = None if args.no_vidflow else vidflow_fps(args, clip)       # first: a clean process and GPU
    if ours is not None:
        print(json.dumps({**head, **ours}), flush=True)
    theirs = ultralytics_fps(args, clip)
    print(json.dumps({**head, **theirs}), flush=True)
    if ours is not None:
        print(json.dumps({**head, "bench": "summary", "vidflow_over_ultralytics": round(ours["fps"] / max(theirs["fps"], 1e-9), 2),
                          "target": "issue 15: >= 15"}), flush=True)


if __name__ == "__main__":
    main()
