"""BrokerSink through in-process transports: ordering, seq, down-at-start, full spool policy,
spool surviving SIGKILL (ZeroMQ PUSH with no peer), webhook, ZeroMQ, errors naming the sink."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import orjson
import pytest

from tests.unit._brokers import free_port, need_module, wait_until
from tests.unit._sinkdata import batches, check_in_order
from vidflow.consume import Dedup, consume
from vidflow.errors import SinkError
from vidflow.sinks.broker import BrokerSink
from vidflow.sinks.transports import TransportUnavailable

ROOT = Path(__file__).resolve().parents[2]


class FakeTransport:
    """In-memory broker that can be switched down; acknowledges on flush."""

    name = "fake"
    default_topic = "t/{source_id}"

    def __init__(self, up: bool = True, fatal: str | None = None) -> None:
        self.up, self.fatal, self.got, self._pending, self.connects = up, fatal, [], [], 0

    def connect(self) -> None:
        if self.fatal:
            raise SinkError(self.fatal)
        if not self.up:
            raise TransportUnavailable("down")
        self.connects += 1
        self._pending = []

    def publish(self, topic, key, payload) -> None:
        if not self.up:
            raise TransportUnavailable("down")
        self._pending.append((topic, key, payload))

    def flush(self, timeout) -> None:
        if not self.up:
            raise TransportUnavailable("down")
        self.got += self._pending
        self._pending = []

    def close(self) -> None:
        self._pending = []

    def messages(self):
        return [orjson.loads(p) for _, _, p in self.got]


def test_order_seq_topics_and_eos():
    t = FakeTransport()
    with BrokerSink(t, retry_s=(0.01, 0.05)) as sink:
        for b in batches(4):
            sink.write(b)
        sink.end_source(0)
        sink.end_source(1)
    msgs = t.messages()
    check_in_order(msgs, 2, 8)
    assert {topic for topic, _, _ in t.got} == {"t/0", "t/1"} and {k for _, k, _ in t.got} == {"0", "1"}
    st = sink.stats()
    assert st["sent"] == 18 and st["spooled"] == 0 and st["state"] == "closed" and st["dropped"] == 0


def test_down_at_start_is_a_state_then_delivers():
    t = FakeTransport(up=False)
    sink = BrokerSink(t, retry_s=(0.01, 0.02))
    for b in batches(3):
        sink.write(b)
    wait_until(lambda: sink.stats()["spooled"] == 12, what="12 spooled")
    st = sink.stats()
    assert st["broker"] == "down" and st["state"] == "running" and st["last_error"] == "down"
    t.up = True
    assert sink.flush(20)
    sink.end_source(0)
    sink.end_source(1)
    sink.close()
    check_in_order(t.messages(), 2, 6)
    assert sink.stats()["reconnects"] == 1


def test_full_spool_drops_oldest_counted():
    t = FakeTransport(up=False)
    sink = BrokerSink(t, spool_max_messages=5, retry_s=(0.01, 0.02))
    for b in batches(3, sources=1):   # 6 frames of one source
        sink.write(b)
    wait_until(lambda: sink.stats()["spool_dropped"] == 1, what="one drop")
    t.up = True
    assert sink.flush(20)
    sink.close()
    assert [m["frame-num"] for m in t.messages()] == [1, 2, 3, 4, 5]
    assert sink.stats()["spool_dropped"] == 1


def test_fatal_error_names_the_sink_and_is_isolated():
    sink = BrokerSink(FakeTransport(fatal="bad password"), name="cams-out")
    sink.write(next(batches(1)))
    wait_until(lambda: sink.stats()["state"] == "failed", what="failed")
    assert "cams-out" in sink.stats()["error"] and "bad password" in sink.stats()["error"]
    sink.write(next(batches(1)))                      # isolated: no raise, counted
    assert sink.stats()["dropped"] >= 1
    with pytest.raises(SinkError, match="cams-out"):
        sink.close()


def test_on_error_stop_raises_from_write():
    sink = BrokerSink(FakeTransport(fatal="nope"), on_error="stop")
    sink.write(next(batches(1)))
    wait_until(lambda: sink.failed, what="failed")
    with pytest.raises(SinkError, match="nope"):
        sink.write(next(batches(1)))
    sink.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="transport"):
        BrokerSink("carrier-pigeon")
    with pytest.raises(ValueError, match="encoder"):
        BrokerSink(FakeTransport(), encoder="xml")
    with pytest.raises(ValueError, match="template"):
        BrokerSink(FakeTransport(), topic="x/{camera}")


def test_zmq_push_pull_in_order():
    need_module("zmq")
    port = free_port()
    ready = threading.Event()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(consume(f"zmq+tcp://127.0.0.1:{port}", timeout=3,
                                                                options={"ready": ready})))
    reader.start()
    ready.wait(10)
    with BrokerSink("zmq", options={"endpoint": f"tcp://127.0.0.1:{port}"}, retry_s=(0.01, 0.05)) as sink:
        for b in batches(5):
            sink.write(b)
        sink.end_source(0)
        sink.end_source(1)
        assert sink.flush(20)
    reader.join(30)
    check_in_order(got, 2, 10)


SPOOL_CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {src!r}]
    from tests.unit._sinkdata import batches
    from vidflow.sinks.broker import BrokerSink
    sink = BrokerSink("zmq", options={{"endpoint": "tcp://127.0.0.1:{port}"}}, spool={spool!r}, retry_s=(0.05, 0.1))
    for b in batches(5):
        sink.write(b)
    sink.end_source(0)
    while sink.stats()["spooled"] < 21:
        time.sleep(0.01)
    print("spooled", flush=True)
    time.sleep(600)
""")


def test_spool_survives_sigkill_and_is_replayed_in_order(tmp_path):
    need_module("zmq")
    port, spool = free_port(), str(tmp_path / "spool.db")
    code = SPOOL_CHILD.format(root=str(ROOT), src=str(ROOT / "src"), port=port, spool=spool)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "spooled"    # nobody listens: all 21 in the spool
        finally:
            p.kill()                    # (leaving the block closes its stdout and waits for it)
    ready = threading.Event()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(consume(f"zmq+tcp://127.0.0.1:{port}", timeout=3,
                                                                options={"ready": ready})))
    reader.start()
    ready.wait(10)
    sink = BrokerSink("zmq", options={"endpoint": f"tcp://127.0.0.1:{port}"}, spool=spool, retry_s=(0.01, 0.05))
    assert sink.stats()["spooled"] == 21
    sink.start()
    assert sink.flush(20)
    for b in batches(1, start=10):      # seq continues after the restart
        sink.write(b)
    sink.end_source(1)
    sink.close()
    reader.join(30)
    s0 = [m for m in got if m["source-id"] == 0]
    assert [m.get("frame-num") for m in s0] == [*range(10), None, 10, 11] and s0[10]["end-of-stream"]
    assert [m["seq"] for m in s0] == list(range(13))
    check_in_order([m for m in got if m["source-id"] == 1], 0, 0, eos=False)
    assert [m.get("frame-num") for m in got if m["source-id"] == 1] == [*range(12), None]


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).status == 200:
            type(self).bodies.append((self.path, body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_webhook_in_process_and_refusal():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook/{{source_id}}"
    try:
        _Hook.status, _Hook.bodies = 503, []
        sink = BrokerSink("webhook", options={"url": url}, retry_s=(0.01, 0.05))
        for b in batches(2):
            sink.write(b)
        wait_until(lambda: sink.stats()["broker"] == "down", what="503 -> down")
        _Hook.status = 200
        sink.end_source(0)
        sink.end_source(1)
        sink.close()
        msgs = [orjson.loads(line) for path, body in _Hook.bodies for line in body.splitlines()]
        dd = Dedup()
        check_in_order([m for m in msgs if dd(m)], 2, 4)
        assert {p for p, _ in _Hook.bodies} == {"/hook/0", "/hook/1"}
        _Hook.status = 401
        sink = BrokerSink("webhook", options={"url": url}, name="hook")
        sink.write(next(batches(1)))
        with pytest.raises(SinkError, match="401"):
            sink.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_in_a_pipeline_end_of_stream_per_source(tmp_path):
    from vidflow import Muxer, Pipeline
    from vidflow.sinks.jsonl import JsonlSink
    from vidflow.testing import FakeSource

    t = FakeTransport()
    broker = BrokerSink(t, retry_s=(0.01, 0.05))
    jsonl = JsonlSink(tmp_path / "f.jsonl", format="vidflow.v1")
    Pipeline([FakeSource(13), FakeSource(5)], Muxer(batch_size=4, max_wait_ms=20), [], [broker, jsonl],
             device="cpu").run()
    for sid, n in ((0, 13), (1, 5)):
        mine = [m for m in t.messages() if m["source-id"] == sid]
        assert [m.get("frame-num") for m in mine] == [*range(n), None] and mine[-1]["end-of-stream"]
    lines = [orjson.loads(x) for x in (tmp_path / "f.jsonl").read_bytes().splitlines()]
    assert len(lines) == 20 and sum(bool(m.get("end-of-stream")) for m in lines) == 2


def test_flush_includes_batches_still_queued_for_encoding():
    """``flush`` right after ``write``: the batches not yet encoded count too (the transport is slow
    to take the first, so the rest wait in the sink's queue when flush starts)."""
    need_module("zmq")
    port = free_port()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(consume(f"zmq+tcp://127.0.0.1:{port}", timeout=3,
                                                                dedup=False)), daemon=True)
    reader.start()
    sink = BrokerSink("zmq", options={"endpoint": f"tcp://127.0.0.1:{port}"}, retry_s=(0.01, 0.05),
                      queue_size=64, drain_timeout_s=600)
    for b in batches(20):
        sink.write(b)
    assert sink.flush(60)
    assert sink.stats()["sent"] == 20 * 2 * 2 and sink.stats()["queued"] == 0
    # close() flushes from the sink's own thread: nothing is queued ahead of it there, so it must not
    # wait out drain_timeout_s for itself
    closer = threading.Thread(target=sink.close, daemon=True)
    closer.start()
    wait_until(lambda: not closer.is_alive(), 60, "close() to return")
    assert sink.stats()["state"] == "closed" and sink.stats()["unsent"] == 0

