"""The pipeline's fps with the HTTP server off, on with a Prometheus-like scraper every 1 s, and
on with the scraper plus a live-view client; prints one JSON line per run and a summary.

python benchmarks/serve_overhead.py [--streams 4] [--frames 300] [--size 320x240] [--repeat 3] [--device cpu] [--torch-threads N]

Runs alternate (off, scrape, scrape+view, off, ...) so drift on a shared machine hits all alike.
Sources are non-live SyntheticSource scenes, so the pipeline runs as fast as the CPU allows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request

from vidflow.mux import Muxer
from vidflow.ops.draw import Annotate
from vidflow.pipeline import Pipeline
from vidflow.sources.synthetic import SyntheticSource
from vidflow.testing import MemorySink


def _poll(url: str, every: float, stop: threading.Event, counts: dict, key: str) -> None:
    while not stop.is_set():
        t = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            counts[key] = counts.get(key, 0) + 1
        except OSError:
            pass
        stop.wait(max(0.0, every - (time.monotonic() - t)))


def run(mode: str, args: argparse.Namespace) -> dict:
    w, h = (int(x) for x in args.size.split("x"))
    pipe = Pipeline([SyntheticSource(w, h, frames=args.frames, seed=i) for i in range(args.streams)],
                    Muxer(batch_size=args.streams, max_wait_ms=20), [Annotate()], [MemorySink(keep_images=False)],
                    device=args.device, torch_threads=args.torch_threads)
    server, stop, counts, pollers = None, threading.Event(), {}, []
    if mode != "off":
        from vidflow import serve

        server = serve.start(pipe, "127.0.0.1:0")
        pollers.append(threading.Thread(target=_poll, args=(server.url + "/metrics", 1.0, stop, counts, "scrapes")))
        if mode == "scrape+view":
            pollers.append(threading.Thread(target=_poll, args=(server.url + "/view/frame.jpg", 0.2, stop, counts,
                                                                 "jpegs")))
        for p in pollers:
            p.start()
    t0 = time.perf_counter()
    s = pipe.run()
    wall = time.perf_counter() - t0
    stop.set()
    for p in pollers:
        p.join()
    if server is not None:
        server.stop()
    return {"mode": mode, "frames": s.frames, "wall_s": round(wall, 3), "fps": round(s.frames / wall, 1), **counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads while running (default: the Pipeline's own choice)")
    args = ap.parse_args()
    modes = ("off", "scrape", "scrape+view")
    results: dict[str, list[float]] = {m: [] for m in modes}
    run("off", args)                                            # warm-up: imports, first allocations
    for _ in range(args.repeat):
        for m in modes:
            r = run(m, args)
            results[m].append(r["fps"])
            print(json.dumps(r), flush=True)
    base = statistics.median(results["off"])
    print(json.dumps({"summary": {m: {"median_fps": statistics.median(v), "vs_off": round(statistics.median(v) / base, 3)}
                                  for m, v in results.items()}, "streams": args.streams, "size": args.size,
                      "torch_threads": args.torch_threads}))


if __name__ == "__main__":
    main()
