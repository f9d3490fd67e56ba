"""``vidflow bench --live``: N live camera streams on loopback through the pipeline, as an operator
would watch it. One JSON line per run (``"bench": "live"``), and with ``--max-cameras`` one more
(``"live-max"``).

    vidflow bench --live --streams 64 --codec h264 --size 1080p --seconds 60            # GPU host
    vidflow bench --live --streams 64 --codec hevc --seconds 60
    vidflow bench --live --streams 64 --kill-every 3 --seconds 303                     # 100 reconnects
    vidflow bench --live --streams 64 --max-cameras --step 8 --seconds 30
    vidflow bench --live --streams 2 --size 360p --decoder ffmpeg --stages none --device cpu

The cameras (:mod:`.live_serve`, a separate process): N streams of one barcoded camera-like clip
(H.264 or HEVC, no B-frames, a keyframe a second), MPEG-TS over TCP on 127.0.0.1, each frame
sent when a clock shared by all cameras says it is shot. The pipeline: N ``UriSource(tcp://...)``
(``--decoder``; NVDEC on CUDA with ``auto``) in ``--procs`` decode processes -> Muxer(640x640)
-> ``--stages`` (full: detector + tracker + JSONL) -> :class:`~.live_meter.GlassClock`, which
reads each frame's index from its pixels and so knows when the camera sent it.

The window opens only once every stream delivers frames to the sinks (``startup_s``), plus
``--warmup`` s, and lasts ``--seconds``; a frame counts when its camera sent it in the window
(and it reached the sinks by ``GRACE_S`` after it). Fields:

- ``delivered_fps_min`` / ``_median`` per stream against ``offered_fps``; ``served_fps_*``: what
  the cameras got out (below the offered rate when the pipeline's TCP reads fall behind);
  ``camera_late_ms_p95`` / ``_max``: how late the cameras sent (part of every latency; above a
  few ms the camera process is the limit); ``dropped``: frames the live queues dropped.
- ``cpu_cores`` / ``cpu_cores_per_stream``: the pipeline's process tree (this process and its
  descendants, from ``/proc``), the cameras excluded (``server_cpu_cores`` is theirs);
  ``host_busy_cores``: the whole host's (``/proc/stat``: other work on the machine shows here).
- ``latency_p50_ms`` / ``_p95_ms`` / ``_max_ms``: camera send -> the last sink;
  ``decoded_to_result_ms_*``: the part after decoding. Memory over the window (RSS, GPU).
- ``--kill-every S``: the first ``--kill-streams`` cameras are killed every S s (back after
  ``--kill-down`` s): ``kills``, ``recovered`` (delivered again before the next kill),
  ``reconnects`` (the sources' counters), ``frames_lost_per_reconnect``,
  ``others_delivered_fps_min`` (the streams never killed).
- ``--max-cameras`` steps the stream count up by ``--step`` from ``--streams`` until a stream
  falls below ``--threshold`` x offered fps (down by ``--step`` when ``--streams`` already
  falls behind), then halves the last bracket down to ``--resolution`` streams (``bench/_search.py``);
  a ``live-max`` line gives the largest count that held and the first that did not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .live_meter import GlassClock, descendants, host_busy_s, quantile, tree_cpu_s
from .meters import Window, host_cpu

__all__ = ["main", "SIZES", "LIVE_FIELDS"]

SIZES = {"2160p": (3840, 2160), "1440p": (2560, 1440), "1080p": (1920, 1080), "720p": (1280, 720),
         "480p": (854, 480), "360p": (640, 360), "240p": (426, 240)}
GRACE_S = 2.0        # after the window: frames sent in it that arrive this much later still count
LIVE_FIELDS = ("bench", "streams", "codec", "size", "offered_fps", "decoder", "backends", "procs", "stages", "device",
               "host_cpu", "host_cores", "host_cpu_mhz", "measured_s", "startup_s", "delivered_fps_min",
               "delivered_fps_median", "delivered_over_offered_min", "served_fps_min", "served_fps_median",
               "dropped", "cpu_cores", "cpu_cores_per_stream", "server_cpu_cores", "latency_p50_ms", "latency_p95_ms",
               "latency_max_ms", "kills", "recovered", "reconnects", "frames_lost_per_reconnect",
               "others_delivered_fps_min")


def _size(text: str) -> tuple[int, int]:
    if text.lower() in SIZES:
        return SIZES[text.lower()]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one of {sorted(SIZES)} or WIDTHxHEIGHT, got {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"expected even sizes >= 64, got {text!r}")
    return w, h


def parser() -> argparse.ArgumentParser:
    model = ".models/yolo11n_shapes.torchscript" if os.path.exists(".models/yolo11n_shapes.torchscript") else "demo"
    p = argparse.ArgumentParser(prog="vidflow bench --live", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--streams", type=int, default=8, help="live streams (the first count with --max-cameras; default 8)")
    a("--codec", choices=("h264", "hevc"), default="h264")
    a("--size", type=_size, default=(1920, 1080), help=f"{'|'.join(SIZES)} or WxH (default 1080p)")
    a("--fps", type=int, default=30, help="frames per second each camera sends (default 30)")
    a("--seconds", type=float, default=30.0, help="measured window (default 30)")
    a("--warmup", type=float, default=5.0, help="seconds after every stream delivers, before the window (default 5)")
    a("--decoder", choices=("auto", "nvdec", "ffmpeg"), default="auto")
    a("--low-latency", choices=("on", "off"), default="on", help="the sources' low_latency (NVDEC; default on)")
    a("--source-option", action="append", default=[], metavar="KEY=VALUE",
      help="an FFmpeg option of every UriSource (repeatable), e.g. fflags=nobuffer+noparse+nofillin")
    a("--procs", type=int, default=None, help="decode processes (default: 8 on CUDA, 0 on the CPU)")
    a("--stages", choices=("full", "detect", "none"), default="full",
      help="full: detector + tracker + JSONL; detect: detector only; none: decode and mux only")
    a("--model", default=model, help=f"detector (default {model})")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--batch-size", type=int, default=None, help="muxer batch (default: streams, at most 64)")
    a("--max-wait-ms", type=float, default=20.0)
    a("--queue-size", type=int, default=8, help="frames queued per source (live: drop-oldest; default 8)")
    a("--kill-every", type=float, default=0.0, help="kill the camera(s) every S s of the window (0: never)")
    a("--kill-streams", type=int, default=1, help="how many cameras (the first ones) each kill takes (default 1)")
    a("--kill-down", type=float, default=1.0, help="seconds a killed camera stays down (default 1)")
    a("--max-cameras", action="store_true", help="step --streams up (or down) by --step to the most streams that keep up")
    a("--step", type=int, default=None, help="--max-cameras step (default: streams / 4, at least 1)")
    a("--threshold", type=float, default=0.99,
      help="--max-cameras: delivered/offered per stream to pass (default 0.99: <= 1%% behind)")
    a("--max-streams", type=int, default=1024, help="--max-cameras stops here")
    a("--resolution", type=int, default=None,
      help="--max-cameras: halve the last bracket until it is this wide (default: --step, no halving)")
    a("--clip-seconds", type=float, default=10.0, help="camera clip loop (latency is read modulo it; default 10)")
    a("--bitrate", type=int, default=4_000_000, help="camera bit/s (default 4000000)")
    a("--workdir", default=os.path.join(tempfile.gettempdir(), "vidflow-live"), help="where the clip is cached")
    a("--start-timeout", type=float, default=180.0, help="seconds for every stream to deliver (default 180)")
    a("--out", default=None, help="also append the JSON lines to this file")
    return p


class _Cameras:
    """The camera process (:mod:`.live_serve`) and its commands."""

    def __init__(self, args: argparse.Namespace, n: int) -> None:
        here = Path(__file__).resolve()
        cmd = [sys.executable, str(here.with_name("live_serve.py")), "--streams", str(n), "--codec", args.codec,
               "--width", str(args.size[0]), "--height", str(args.size[1]), "--fps", str(args.fps),
               "--clip-seconds", str(args.clip_seconds), "--bitrate", str(args.bitrate), "--workdir", args.workdir]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the camera process failed to start (exit {self.proc.poll()}): {line!r}")
        self.info: dict[str, Any] = json.loads(line[6:])
        self._lock = threading.Lock()

    def send(self, cmd: str) -> None:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()

    def stat(self) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write("stat\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line.startswith("STAT "):
            raise RuntimeError(f"the camera process stopped answering: {line!r}")
        return json.loads(line[5:])

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pipeline(args: argparse.Namespace, ports: list[int], dev: torch.device, glass: GlassClock,
              tmp: str) -> tuple[Any, list[Any]]:
    from ..mux import Muxer
    from ..pipeline import Pipeline
    from ..sources.uri import UriSource

    opts = opts_of(args)
    sources = [UriSource(f"tcp://127.0.0.1:{p}", decoder=args.decoder, low_latency=args.low_latency == "on",
                         options=opts) for p in ports]
    stages: list[Any] = []
    sinks: list[Any] = []
    if args.stages != "none":
        from ..stages.detect import Detector
        stages.append(Detector(args.model, half=dev.type == "cuda"))
    if args.stages == "full":
        from ..sinks.jsonl import JsonlSink
        from ..stages.track import Tracker
        stages.append(Tracker())
        sinks.append(JsonlSink(os.path.join(tmp, "live.jsonl")))
    bs = args.batch_size or min(len(ports), 64)
    pipe = Pipeline(sources, Muxer(batch_size=bs, max_wait_ms=args.max_wait_ms, size=(640, 640)), stages,
                    [*sinks, glass], device=dev, queue_size=args.queue_size, decode_processes=args.procs)
    return pipe, sources


def _wait(pred: Any, timeout: float, what: str, failed: Any) -> float:
    t0 = time.monotonic()
    while not pred():
        if failed():
            raise RuntimeError(f"the pipeline stopped while waiting for {what}: {failed()}")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - t0


class _Kills:
    """``--kill-every``: kill the first ``--kill-streams`` cameras at S, 2S, ... s of the window
    (the last at least S s before its end), each down ``--kill-down`` s; ``recovered`` counts the
    kills after which every killed stream delivered a frame its camera sent once back."""

    def __init__(self, args: argparse.Namespace, n: int, cams: _Cameras, glass: GlassClock) -> None:
        self.every, self.down, self.seconds = args.kill_every, args.kill_down, args.seconds
        self.ids = list(range(min(n, args.kill_streams))) if args.kill_every > 0 else []
        self.cams, self.glass = cams, glass
        self.done = self.recovered = 0
        self._up_at: float | None = None

    def _back(self) -> bool:
        return self._up_at is not None and all(self.glass.last_sent.get(i, -1.0) >= self._up_at for i in self.ids)

    def due(self, t: float) -> bool:
        k = self.done + 1
        return bool(self.ids) and k * self.every <= self.seconds - self.every and t >= k * self.every

    def kill(self) -> None:
        self.recovered += self._back()
        for i in self.ids:
            self.cams.send(f"kill {i}")
        time.sleep(self.down)
        for i in self.ids:
            self.cams.send(f"start {i}")
        self._up_at = time.time()
        self.done += 1

    def end(self) -> None:
        self.recovered += self._back()
        self._up_at = None


def run_once(args: argparse.Namespace, n: int, dev: torch.device) -> dict[str, Any]:
    """One measurement with ``n`` streams (see the module text); returns its fields."""
    t_start = time.monotonic()
    cams = _Cameras(args, n)
    try:
        return _measure(args, n, dev, cams, t_start)
    finally:
        cams.close()


def _measure(args: argparse.Namespace, n: int, dev: torch.device, cams: _Cameras, t_start: float) -> dict[str, Any]:
    info = cams.info
    glass = GlassClock(epoch=info["epoch"], fps=info["fps"], frames=info["frames"], source_height=args.size[1])
    pipe, sources = _pipeline(args, info["ports"], dev, glass, tempfile.mkdtemp(prefix="vidflow-live-"))
    err: list[BaseException] = []

    def drive() -> None:
        try:
            for _ in pipe:
                pass
        except BaseException as e:  # noqa: BLE001 - reported by the controller
            err.append(e)

    def failed() -> Any:
        return err[0] if err else (None if runner.is_alive() else "the pipeline ended")

    me, server = os.getpid(), cams.proc.pid
    tree = lambda: descendants(me, (server,))        # noqa: E731 - the pipeline's processes but me
    runner = threading.Thread(target=drive, name="live-bench", daemon=True)
    kills = _Kills(args, n, cams, glass)
    with pipe.process_settings():
        runner.start()
        try:
            startup = _wait(lambda: len(glass.ever) == n and all(s.state == "running"
                                                                 for s in pipe.snapshot().sources.values()),
                            args.start_timeout, f"every one of the {n} streams to deliver", failed)
            time.sleep(args.warmup)
            snap0, st0, scpu0, busy0 = pipe.snapshot().sources, cams.stat(), tree_cpu_s([server]), host_busy_s()
            win = Window(dev, child_cpu=lambda: tree_cpu_s(tree()), child_pids=tree)
            glass.open()
            win.start()
            while (t := time.perf_counter() - win.t0) < args.seconds:
                if failed():
                    raise RuntimeError(f"the pipeline stopped during the window: {failed()}")
                if kills.due(t):
                    kills.kill()
                else:
                    time.sleep(0.05)
            glass.shut()
            res = win.stop(0)
            st1, scpu1, snap1, pids, busy1 = (cams.stat(), tree_cpu_s([server]), pipe.snapshot().sources, tree(),
                                              host_busy_s())
            time.sleep(GRACE_S)               # frames sent in the window, still on their way
            lat, streams, unreadable, span = glass.collect()
            kills.end()
        finally:
            pipe.stop(drain=False)
            runner.join(timeout=60)
    wall, sids = res["wall_s"], list(range(n))
    fps = {i: (streams[i].seen if i in streams else 0) / span for i in sids}
    served = [(b - a) / (st1["t"] - st0["t"]) for a, b in zip(st0["sent"], st1["sent"])]
    others = [fps[i] for i in sids if i not in kills.ids]
    lost = sum(streams[i].lost - (snap1[i].dropped - snap0[i].dropped) for i in kills.ids if i in streams)
    server_cpu = (scpu1 - scpu0) / wall
    backends = sorted({s.backend or "?" for s in sources})

    def delta(name: str) -> int:
        return sum(getattr(snap1[i], name) - getattr(snap0[i], name) for i in sids)

    return {
        "bench": "live", "streams": n, "codec": args.codec, "size": f"{args.size[0]}x{args.size[1]}",
        "offered_fps": args.fps, "decoder": ",".join(backends), "decoder_requested": args.decoder, "backends": backends,
        "procs": args.procs, "stages": args.stages, "model": os.path.basename(args.model) if args.stages != "none" else None,
        "low_latency": args.low_latency == "on", "source_options": opts_of(args), "measured_s": round(wall, 1),
        "startup_s": round(startup, 1), "delivered_fps_min": round(min(fps.values()), 2),
        "delivered_fps_median": round(statistics.median(fps.values()), 2),
        "delivered_over_offered_min": round(min(fps.values()) / args.fps, 3),
        "served_fps_min": round(min(served), 2), "served_fps_median": round(statistics.median(served), 2),
        "camera_late_ms_p95": st1["late_ms_p95"], "camera_late_ms_max": st1["late_ms_max"],
        "dropped": delta("dropped"), "cpu_cores": res["cpu_cores"], "cpu_cores_per_stream": round(res["cpu_cores"] / n, 4),
        "server_cpu_cores": round(server_cpu, 3), "server_cpu_cores_per_stream": round(server_cpu / n, 4),
        "host_busy_cores": round((busy1 - busy0) / wall, 2),
        "latency_p50_ms": _r(quantile(lat, 0.5)), "latency_p95_ms": _r(quantile(lat, 0.95)),
        "latency_max_ms": _r(max(lat) if lat else None), "latency_samples": len(lat), "unreadable_frames": unreadable,
        "decoded_to_result_ms_p50": _r(quantile(glass.decoded_ms, 0.5)),
        "decoded_to_result_ms_p95": _r(quantile(glass.decoded_ms, 0.95)),
        "kills": kills.done, "kill_streams": len(kills.ids), "recovered": kills.recovered,
        "reconnects": delta("reconnects"), "stalls": delta("stalls"),
        "frames_lost_per_reconnect": round(lost / kills.done / len(kills.ids), 1) if kills.done else None,
        "others_delivered_fps_min": round(min(others), 2) if kills.ids and others else None,
        "decode_errors": sum(s.decode_errors for s in sources), "processes_measured": 1 + len(pids),
        "rss_peak_mb": res["rss_peak_mb"], "gpu_used_peak_mb": res["gpu_used_peak_mb"],
        **{k: res[k] for k in ("memory_first_last_tenth", "memory_curve_s_rss_gpu_mb") if k in res},
        "camera_clip": {"bytes": info["clip_bytes"], "frames": info["frames"], "gop": info["gop"],
                        "bitrate": args.bitrate}, "run_s": round(time.monotonic() - t_start, 1),
    }


def opts_of(args: argparse.Namespace) -> dict[str, str]:
    bad = [o for o in args.source_option if "=" not in o]
    if bad:
        raise ValueError(f"--source-option: expected KEY=VALUE, got {bad}")
    return dict(o.split("=", 1) for o in args.source_option)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    """Run the live benchmark; prints JSON lines. Returns 1 when a run failed, else 0."""
    args = parser().parse_args(argv)
    from ..device import resolve_device

    dev = resolve_device(args.device)
    if args.procs is None:
        args.procs = 8 if dev.type == "cuda" else 0
    if args.streams < 1 or args.fps < 1 or args.seconds <= 0:
        raise SystemExit("vidflow bench --live: --streams, --fps and --seconds must be positive")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    host = host_cpu()
    out = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed below

    def emit(rec: dict[str, Any]) -> None:
        rec = {"device": gpu, **host, **rec}
        line = json.dumps({k: rec.get(k) for k in LIVE_FIELDS if k in rec} | rec)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    def one(n: int) -> dict[str, Any] | None:
        try:
            rec = run_once(args, n, dev)
        except Exception as e:  # noqa: BLE001 - a line saying why, then the rest
            emit({"bench": "live", "streams": n, "codec": args.codec, "error": f"{type(e).__name__}: {e}"})
            return None
        emit(rec)
        return rec

    try:
        if not args.max_cameras:
            return 0 if one(args.streams) is not None else 1
        step = args.step or max(1, args.streams // 4)
        from ._search import search_max

        trials: list[list[Any]] = []            # [streams, delivered/offered of the slowest], in order

        def trial(n: int) -> tuple[bool, Any]:
            rec = one(n)
            ratio = rec["delivered_over_offered_min"] if rec else 0.0
            trials.append([n, ratio])
            return ratio >= args.threshold, rec

        found = search_max(trial, args.streams, step, max_streams=args.max_streams, resolution=args.resolution)
        good, failing, last = found.good, found.failing, found.failing_record
        mine = last is not None and (last["cpu_cores"] + last["server_cpu_cores"]) >= 0.9 * host["host_cores"]
        busy = last is not None and last["host_busy_cores"] >= 0.9 * host["host_cores"]
        limit = (f"none up to --max-streams {args.max_streams}" if failing is None
                 else "the run failed (see its error line)" if last is None
                 else "the host CPU (pipeline + cameras use >= 90% of its cores)" if mine
                 else "the host CPU, shared: other processes kept it >= 90% busy" if busy
                 else "not the host CPU: see the failing line (decode, model, loop)")
        emit({"bench": "live-max", "max_cameras": good, "first_failing": failing, "threshold": args.threshold,
              "step": step, "codec": args.codec, "size": f"{args.size[0]}x{args.size[1]}", "offered_fps": args.fps,
              "resolution": args.resolution or step, "trials": trials, "limit": limit})
        return 0 if good is not None else 1
    finally:
        if out is not None:
            out.close()
