"""Steady-state overhead of the Ray fleet against one pipeline in one process; prints JSON lines.

    python benchmarks/fleet.py [--cameras 4] [--seconds 15] [--rounds 3] [--workers 1] [--size 128x96]
                               [--device cpu] [--num-gpus 0] [--num-cpus 1] [--batch 4] [--kill]
    # the one-GPU target of the fleet issue (2 workers sharing the GPU, 64 cameras, a kill):
    python benchmarks/fleet.py --device cuda --cameras 64 --workers 2 --num-gpus 0.5 --num-cpus 4 \
        --size 1920x1080 --batch 32 --decode-processes 2 --rounds 2 --kill
    # several GPUs (issue 20): one worker per GPU, 64 cameras each, against one GPU's pipeline of 64
    python benchmarks/fleet.py --device cuda --cameras 512 --single-cameras 64 --workers 8 --num-gpus 1 \
        --num-cpus 14 --size 1920x1080 --batch 64 --decode-processes 4 --rounds 2 --kill

Both runs use the same template (demo detector + tracker + JSONL) and the same looping
generated clips. ``single``: a ``Pipeline`` in this process; fps and CPU time per frame (this
process, all threads). ``fleet``: ``--workers`` pipeline workers on a local Ray; fps from the
fleet's status, CPU of the worker processes (``/proc/<pid>/stat``, Linux) and of the driver
(its process CPU, Ray's client threads included, and the reconcile loop's own share), per frame
and per second. Each figure is measured over ``--seconds`` after a warm-up; the two alternate
for ``--rounds`` rounds (the fleet's workers stay up, idle, between its rounds) and the medians
close the output. The lines name the machine and its load average.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {model or platform.processor()}, {os.cpu_count()} cores, {gpu}"


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def template(out: Path, args: argparse.Namespace, decode_processes: int | None = None) -> dict:
    w, h = args.size
    dp = args.decode_processes if decode_processes is None else decode_processes
    return {"device": args.device, "torch_threads": 1, "decode_processes": dp, "muxer": {"batch_size": args.batch, "size": [w, h]},
            "stages": [{"detect": {"model": "demo", "size": [w, h]}}, {"track": {}}],
            "sinks": [{"jsonl": {"path": str(out / "frames.jsonl"), "attrs": False}}]}


def run_single(tpl: dict, cams: list[dict], args: argparse.Namespace) -> dict:
    from vidflow import Pipeline
    from vidflow.config import build_parts

    parts = build_parts({**tpl, "sources": [dict(c) for c in cams]})
    kw = parts.kwargs(inspect.signature(Pipeline).parameters)
    sources = kw.pop("sources")
    pipe = Pipeline(**kw)
    for sid, src in sources.items():
        pipe.add_source(src, sid)
    def run() -> None:
        with pipe.process_settings():          # torch's threads, as the fleet's workers do
            pipe.run()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # measured from the first batch on, as the fleet's workers are (their cameras must be
    # running first): on CUDA a process's first pipeline spends ~15 s in its warm-up (cuDNN
    # autotuning, one CUDA graph per batch bucket), which a fixed sleep would count as slow frames
    _wait(lambda: pipe.snapshot().frames > 0 or not t.is_alive(), "the single pipeline's first batch")
    time.sleep(args.warmup)
    f0, c0, t0 = pipe.summary.frames, time.process_time(), time.monotonic()
    time.sleep(args.seconds)
    f1, c1, t1 = pipe.summary.frames, time.process_time(), time.monotonic()
    pipe.stop()
    t.join(30)
    frames = f1 - f0
    return {"mode": "single", "decode_processes": tpl["decode_processes"], "fps": round(frames / (t1 - t0), 1),
            "cpu_ms_per_frame": round((c1 - c0) / max(frames, 1) * 1e3, 3),
            "cpu_cores": round((c1 - c0) / (t1 - t0), 2)}


def start_fleet(tpl: dict, cams: list[dict], args: argparse.Namespace):
    import ray

    from vidflow.fleet import Fleet

    ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), include_dashboard=False,
             log_to_driver=False)
    fleet = Fleet(tpl, name="bench", workers=args.workers, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
                  capacity=max(len(cams), 1), poll_s=args.poll)
    return fleet.start()


def _wait(pred, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {what} did not happen within {timeout:g} s")
        time.sleep(0.2)


def run_fleet(fleet, cams: list[dict], args: argparse.Namespace) -> dict:
    """One measurement: the cameras applied, measured at steady state, then taken off again (the
    workers stay up, idle, so single-pipeline rounds can run in between)."""
    fleet.apply(cams)
    _wait(lambda: (st := fleet.status()["cameras"]) and all(c["frames"] > 0 and c["state"] == "running" for c in st),
          "every camera running")
    time.sleep(args.warmup)
    pids = [w["pid"] for w in fleet.status()["workers"]]

    def sample() -> tuple[int, float, float, float, float]:
        st = fleet.status()
        return (sum(c["frames"] for c in st["cameras"]), sum(proc_cpu_s(p) for p in pids), time.process_time(),
                fleet.tick_s, time.monotonic())

    f0, w0, d0, k0, t0 = sample()
    time.sleep(args.seconds)
    f1, w1, d1, k1, t1 = sample()
    placement = fleet.placement()
    killed = kill_round(fleet, args) if args.kill else {}
    fleet.apply([])
    _wait(lambda: not fleet.status()["cameras"], "every camera removed")
    frames, wall = f1 - f0, t1 - t0
    return {"mode": "fleet", "workers": args.workers, "fps": round(frames / wall, 1),
            "cpu_ms_per_frame": round((w1 - w0 + d1 - d0) / max(frames, 1) * 1e3, 3),
            "worker_cpu_ms_per_frame": round((w1 - w0) / max(frames, 1) * 1e3, 3),
            "driver_cpu_cores": round((d1 - d0) / wall, 3), "reconcile_cpu_cores": round((k1 - k0) / wall, 4),
            "driver_cpu_ms_per_frame": round((d1 - d0) / max(frames, 1) * 1e3, 3),
            "poll_s": args.poll, "placement": placement, **killed}


def kill_round(fleet, args: argparse.Namespace) -> dict:
    """SIGKILL worker w0's process at steady state; how long until its cameras run elsewhere,
    and the fleet's fps while they were away."""
    import signal

    before = {c["id"]: len(c["moves"]) for c in fleet.status()["cameras"] if c["worker"] == "w0"}
    f0, t0 = sum(c["frames"] for c in fleet.status()["cameras"]), time.monotonic()
    os.kill(fleet.worker_pid("w0"), signal.SIGKILL)

    def back() -> bool:
        cams = {c["id"]: c for c in fleet.status()["cameras"]}
        return all(len(cams[i]["moves"]) > n for i, n in before.items())

    _wait(back, "the killed worker's cameras resumed", timeout=120)
    f1, t1 = sum(c["frames"] for c in fleet.status()["cameras"]), time.monotonic()
    cams = {c["id"]: c for c in fleet.status()["cameras"]}
    moves = [cams[i]["moves"][-1] for i in before]
    # up again and through its warm-up (on a GPU ~15 s, which the next measurement must not share)
    _wait(lambda: (w := fleet.status()["workers"][0])["state"] == "running" and w["ready"],
          "the killed worker restarted and warmed up", timeout=300)
    return {"killed": "w0", "moved_cameras": len(moves), "resume_s_max": max(m["resume_s"] for m in moves),
            "gap_s_max": max(m["gap_s"] for m in moves), "fps_during_gap": round((f1 - f0) / (t1 - t0), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(128, 96))
    p.add_argument("--frames", type=int, default=150, help="frames per generated clip (looped)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-gpus", type=float, default=0.0)
    p.add_argument("--num-cpus", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--poll", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=3, help="single / fleet measurements, alternated")
    p.add_argument("--single-cameras", type=int, default=0,
                   help="cameras of the single pipeline (default: all; 64 with --workers 8 = one GPU's share)")
    p.add_argument("--kill", action="store_true", help="SIGKILL worker w0 after each fleet measurement")
    p.add_argument("--decode-processes", type=int, default=0, help="per pipeline (each worker's, the single one's)")
    p.add_argument("--single-decode-processes", type=int, default=None,
                   help="the single pipeline's instead (e.g. workers x --decode-processes: the same decode "
                        "processes in all as the fleet; default: --decode-processes)")
    args = p.parse_args()

    from vidflow.testing import make_clip

    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        clips = [make_clip(out / f"clip{i}.mp4", width=args.size[0], height=args.size[1], frames=args.frames,
                           seed=i).path for i in range(min(args.cameras, 4))]
        cams = [{"id": f"cam{i}", "file": {"path": clips[i % len(clips)], "loop": True}} for i in range(args.cameras)]
        head = {"bench": "fleet", "machine": machine(), "cameras": args.cameras, "size": "x".join(map(str, args.size)),
                "device": args.device, "seconds": args.seconds}
        fleet = start_fleet(template(out / "fleet", args), cams, args)
        singles, fleets = [], []
        try:
            # alternated, so a change in the machine's load hits both; the fleet first in each round,
            # so that the single pipeline never runs while the workers warm up on the same GPU
            for r in range(args.rounds):
                head["load_avg_1m"] = round(os.getloadavg()[0], 2)
                fleets.append(run_fleet(fleet, cams, args))
                print(json.dumps({**head, "round": r, **fleets[-1]}), flush=True)
                singles.append(run_single(template(out / "single", args, args.single_decode_processes),
                                          cams[:args.single_cameras or None], args))
                print(json.dumps({**head, "round": r, **singles[-1]}), flush=True)
        finally:
            fleet.stop()
        med = statistics.median
        print(json.dumps({**head, "mode": "median", "rounds": args.rounds,
                          "single_fps": med(x["fps"] for x in singles), "fleet_fps": med(x["fps"] for x in fleets),
                          "single_cpu_ms_per_frame": med(x["cpu_ms_per_frame"] for x in singles),
                          "fleet_cpu_ms_per_frame": med(x["cpu_ms_per_frame"] for x in fleets),
                          "driver_cpu_cores": med(x["driver_cpu_cores"] for x in fleets),
                          "driver_cpu_ms_per_frame": med(x["driver_cpu_ms_per_frame"] for x in fleets),
                          # fleet fps over one pipeline's, scaled by the cameras each ran (issue 20: 64 per GPU)
                          "fleet_over_scaled_single": round(med(x["fps"] for x in fleets) / (
                              med(x["fps"] for x in singles) * args.cameras / (args.single_cameras or args.cameras)),
                              3)}), flush=True)


if __name__ == "__main__":
    main()
