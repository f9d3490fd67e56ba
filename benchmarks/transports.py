"""Does each transport keep up with 64 cameras x 30 fps x ~10 objects? Prints JSON lines.

    python benchmarks/transports.py [--sources 64] [--objects 10] [--fps 30] [--seconds 10]
                                    [--transports mqtt redis kafka zmq webhook]
                                    [--encoders vidflow.v1 deepstream-minimal] [--modes max paced outage]
    python benchmarks/transports.py --transports mqtt redis --modes outage --seconds 20 --encoders vidflow.v1

Per transport and encoder, the same ``BrokerSink`` the pipeline uses gets ``--seconds`` x
``--fps`` batches of one frame per source (``--objects`` objects each, an 8-float embedding
attribute), two ways:

- ``max``: written as fast as the sink takes them (``when_full="block"``); ``msgs_per_s`` and
  ``frames_per_s`` from the first write until the broker acknowledged the last message
  (``flush``), and ``keeps_up``: that rate against the offered ``sources x fps``.
- ``outage`` (mqtt, redis): paced, with the broker killed (SIGKILL) after a quarter of the run and
  started again ``--outage-s`` seconds later: ``write_ms_max`` (the longest ``write()``, i.e. what
  the pipeline waits), ``written_fps`` against the offered rate (the pipeline's fps while the
  broker is down), ``spooled_max``, ``reconnects``, and whether every message was acknowledged
  after the broker came back (``messages == frames``; the broker's own at-most-once loss of what
  it held in memory when killed is not counted here, the tests check delivery end to end).
- ``paced``: written at ``--fps`` batches per second, like the pipeline would; ``backlog_max``
  (messages spooled but not yet acknowledged, sampled every batch) and ``drain_s`` (from the last
  write until everything was acknowledged): a transport that keeps up has a small backlog and a
  drain of about one send window.

``bytes_per_msg`` is the mean payload size, ``cpu_s_per_1k_msgs`` this process's CPU (encode +
spool + client library) per thousand messages. The brokers: mosquitto and redis-server from the
OS packages on free loopback ports (as the tests start them), Kafka on librdkafka's mock cluster
inside the producer (not a real broker: its figure is the client's), ZeroMQ PUSH to a PULL socket
in this process, a webhook to a ``ThreadingHTTPServer`` in this process. Every line names the
machine (CPU model, cores, load average).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit._brokers import free_port, mosquitto, redis_server  # noqa: E402  (the tests' broker starters)
from tests.unit._sinkdata import batches  # noqa: E402
from vidflow.bench.meters import host_cpu  # noqa: E402
from vidflow.sinks.broker import BrokerSink  # noqa: E402


def machine() -> dict[str, Any]:
    return {**host_cpu(), "load_avg": round(os.getloadavg()[0], 2)}


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a: Any) -> None:
        pass


class _Pull:
    """A ZeroMQ PULL socket draining on a thread (PUSH refuses without a peer)."""

    def __init__(self, port: int) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.bind(f"tcp://127.0.0.1:{port}")
        self.sock.setsockopt(zmq.RCVTIMEO, 200)
        self.n, self._stop = 0, False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import zmq

        while not self._stop:
            try:
                self.sock.recv()
                self.n += 1
            except zmq.Again:
                pass

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close(0)
        self.ctx.term()


def transport(kind: str, tmp: Path, servers: list | None = None) -> tuple[dict[str, Any], Any]:
    """``(BrokerSink options, a closer)`` for a transport with its broker running (appended to
    ``servers`` when it is a process)."""
    if kind == "mqtt":
        srv = mosquitto(tmp).start()
        if servers is not None:
            servers.append(srv)
        return {"host": "127.0.0.1", "port": srv.port, "qos": 1}, srv.stop
    if kind == "redis":
        srv = redis_server(tmp).start()
        if servers is not None:
            servers.append(srv)
        return {"url": f"redis://127.0.0.1:{srv.port}/0"}, srv.stop
    if kind == "kafka":
        return {"config": {"test.mock.num.brokers": 1}}, lambda: None
    if kind == "zmq":
        port = free_port()
        pull = _Pull(port)
        return {"endpoint": f"tcp://127.0.0.1:{port}"}, pull.close
    if kind == "webhook":
        hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=hook.serve_forever, daemon=True).start()

        def stop() -> None:
            hook.shutdown()
            hook.server_close()
        return {"url": f"http://127.0.0.1:{hook.server_address[1]}/hook/{{source_id}}"}, stop
    raise ValueError(f"unknown transport {kind!r}")


def one(kind: str, encoder: str, mode: str, data: list, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        servers: list = []
        options, close = transport(kind, Path(d), servers)
        if mode == "outage" and not servers:
            raise ValueError(f"outage: {kind} has no broker process to kill (mqtt, redis)")
        sizes: list[int] = []
        sink = BrokerSink(kind, options=options, encoder=encoder, retry_s=(0.05, 0.5), when_full="block",
                          queue_size=16, drain_timeout_s=120)
        enc = sink.encoder.encode

        def measured(frames: Any, seq: Any) -> Any:        # the payload sizes, seen on the way out
            out = enc(frames, seq)
            sizes.extend(len(payload) for _, payload in out)
            return out
        sink.encoder.encode = measured                    # type: ignore[method-assign]
        backlog, write_max, down_at, up_at = 0, 0.0, len(data) // 4, len(data) // 4 + round(args.outage_s * args.fps)
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            for i, b in enumerate(data):
                if mode != "max":
                    wait = t0 + i / args.fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    backlog = max(backlog, int(sink.stats().get("spooled", 0)))
                if mode == "outage" and i == down_at:
                    servers[0].kill()
                if mode == "outage" and i == up_at:
                    servers[0].start()
                tw = time.perf_counter()
                sink.write(b)
                write_max = max(write_max, time.perf_counter() - tw)
            t_last = time.perf_counter()
            ok = sink.flush(300)
            t1, c1 = time.perf_counter(), time.process_time()
            st = sink.stats()
        finally:
            sink.close()
            close()
    sent = int(st.get("sent", 0))
    frames = len(data) * args.sources
    offered = args.sources * args.fps
    line: dict[str, Any] = {"bench": "transport", "transport": kind, "encoder": encoder, "mode": mode,
                            "sources": args.sources, "objects": args.objects, "frames": frames,
                            "messages": sent, "flushed": bool(ok), "wall_s": round(t1 - t0, 3)}
    if mode == "max":
        fps = frames / (t1 - t0)
        line.update(msgs_per_s=round(sent / (t1 - t0)), frames_per_s=round(fps), offered_frames_per_s=offered,
                    keeps_up=bool(ok and fps >= offered))
    elif mode == "paced":
        line.update(backlog_max=backlog, drain_s=round(t1 - t_last, 3), offered_frames_per_s=offered)
    else:
        line.update(written_fps=round(frames / (t_last - t0), 1), offered_frames_per_s=offered,
                    write_ms_max=round(1000 * write_max, 2), spooled_max=backlog, drain_s=round(t1 - t_last, 3),
                    reconnects=int(st.get("reconnects", 0)), outage_s=args.outage_s,
                    delivered_all=bool(ok and sent == frames))
    line.update(bytes_per_msg=round(sum(sizes) / max(len(sizes), 1)),
                cpu_s_per_1k_msgs=round(1000 * (c1 - c0) / max(sent, 1), 3), **machine())
    return line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=64)
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--transports", nargs="+", default=["mqtt", "redis", "kafka", "zmq", "webhook"])
    p.add_argument("--encoders", nargs="+", default=["vidflow.v1", "deepstream-minimal"])
    p.add_argument("--modes", nargs="+", default=["max", "paced"], choices=["max", "paced", "outage"])
    p.add_argument("--outage-s", type=float, default=10.0, help="outage mode: seconds the broker is down")
    args = p.parse_args(argv)
    n = max(1, round(args.seconds * args.fps))
    data = list(batches(n, sources=args.sources, per_source=1, objects=args.objects))
    for kind in args.transports:
        for encoder in args.encoders:
            for mode in args.modes:
                try:
                    print(json.dumps(one(kind, encoder, mode, data, args)), flush=True)
                except Exception as e:  # noqa: BLE001 - one transport's failure is its line, the others run
                    print(json.dumps({"bench": "transport", "transport": kind, "encoder": encoder, "mode": mode,
                                      "error": f"{type(e).__name__}: {e}", **machine()}), flush=True)


if __name__ == "__main__":
    main()
