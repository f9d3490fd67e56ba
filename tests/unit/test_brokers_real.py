"""BrokerSink against real brokers: mosquitto and redis-server (OS packages, started here on free
ports) killed mid-run and restarted; every frame's message arrives in order per source, with
duplicates only within the sink's window; auth failure names the sink; Kafka on librdkafka's
mock cluster. No wall-clock assertions: polling with timeouts."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from tests.unit._brokers import mosquitto, need_module, redis_server, wait_until
from tests.unit._sinkdata import batches, check_in_order
from vidflow.consume import Dedup, consume, decode
from vidflow.errors import SinkError
from vidflow.sinks.broker import BrokerSink


class Reader:
    """vidflow.consume on a thread, keeping every message (duplicates too)."""

    def __init__(self, uri, **kw):
        self.raw: list = []
        self.probed = False
        self._stop = False
        self._t = threading.Thread(target=self._run, args=(uri, kw), daemon=True)
        self._t.start()

    def _run(self, uri, kw):
        for m in consume(uri, dedup=False, **kw):
            if "probe" in m:
                self.probed = True
                continue
            self.raw.append(m)
            if self._stop:
                return

    def deduped(self):
        d = Dedup()
        return [m for m in list(self.raw) if d(m)], d.duplicates

    def eos_count(self):
        return sum(bool(m.get("end-of-stream")) for m in list(self.raw))


def run_with_outage(sink, server, reader, *, sources=2, n=10, window=None):
    bs = list(batches(n, sources=sources))
    for b in bs[:3]:
        sink.write(b)
    wait_until(lambda: sink.stats()["sent"] >= 6 * sources, what="first messages delivered")
    server.kill()
    for b in bs[3:7]:
        sink.write(b)
    wait_until(lambda: sink.stats()["broker"] == "down", what="the sink to see the outage")
    wait_until(lambda: sink.stats()["spooled"] > 0, what="messages spooled")
    server.start()
    for b in bs[7:]:
        sink.write(b)
    for s in range(sources):
        sink.end_source(s)
    assert sink.flush(60)
    sink.close()
    wait_until(lambda: reader.eos_count() >= sources, 60, "both end-of-stream messages")
    msgs, dups = reader.deduped()
    check_in_order(msgs, sources, 2 * n)
    assert dups <= sink.window * (sink.stats()["reconnects"] + 1)
    assert sink.stats()["reconnects"] >= 1 and sink.stats()["spool_dropped"] == 0


def test_mqtt_broker_killed_and_restarted(tmp_path):
    need_module("paho.mqtt")
    srv = mosquitto(tmp_path)
    # mosquitto keeps QoS 1 messages for a persistent subscriber only in memory: stopped with SIGKILL
    # it would lose what it had acknowledged but not yet forwarded (the broker's promise, not
    # ours), so this broker runs with persistence and is "killed" with SIGTERM after saving.
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(conf.read_text().replace("persistence false", f"persistence true\npersistence_location {tmp_path}/"))
    srv.start()
    srv.kill = lambda: (srv.proc.terminate(), srv.proc.wait(10))  # SIGTERM: mosquitto saves its queues
    reader = Reader(f"mqtt://127.0.0.1:{srv.port}/vidflow/+/frames",
                    options={"client_id": "vidflow-test-reader", "clean_session": False})
    wait_until(lambda: _probe(srv.port) and reader.probed, what="reader subscribed")
    sink = BrokerSink("mqtt", options={"host": "127.0.0.1", "port": srv.port, "qos": 1}, retry_s=(0.05, 0.2),
                      window=16)
    try:
        run_with_outage(sink, srv, reader)
    finally:
        srv.stop()


def _probe(port):
    """Publish a probe the reader recognises (it is subscribed once one arrives)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        c.connect("127.0.0.1", port)
        c.publish("vidflow/probe/frames", b'{"probe": 1}', qos=0)
        c.loop(0.05)
        c.disconnect()
        return True
    except OSError:
        return False


def _subscribed(port):
    """The broker accepts MQTT connections (the reader's own connect then follows)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        c.connect("127.0.0.1", port)
        c.disconnect()
        return True
    except OSError:
        return False


def test_redis_killed_and_restarted(tmp_path):
    need_module("redis")
    srv = redis_server(tmp_path, durable=True).start()   # killed with SIGKILL below
    url = f"redis://127.0.0.1:{srv.port}/0"
    reader = Reader(url)
    sink = BrokerSink("redis", options={"url": url}, retry_s=(0.05, 0.2), window=16)
    try:
        run_with_outage(sink, srv, reader)
    finally:
        srv.stop()


def test_mqtt_down_at_start_then_up(tmp_path):
    need_module("paho.mqtt")
    srv = mosquitto(tmp_path)
    sink = BrokerSink("mqtt", options={"host": "127.0.0.1", "port": srv.port}, retry_s=(0.05, 0.2))
    try:
        for b in batches(2):
            sink.write(b)
        wait_until(lambda: sink.stats()["broker"] == "down" and sink.stats()["spooled"] == 8, what="down + spooled")
        assert sink.stats()["state"] == "running"          # a state, not an error
        srv.start()
        sink.end_source(0)
        sink.end_source(1)
        assert sink.flush(60)
        sink.close()
        assert sink.stats()["sent"] == 10
    finally:
        srv.stop()


def test_mqtt_auth_failure_names_the_sink(tmp_path):
    need_module("paho.mqtt")
    srv = mosquitto(tmp_path, password=("cam", "right")).start()
    try:
        sink = BrokerSink("mqtt", options={"host": "127.0.0.1", "port": srv.port, "username": "cam",
                                           "password": "wrong"}, name="mqtt-events")
        sink.write(next(batches(1)))
        wait_until(lambda: sink.failed, what="the sink to fail")
        assert sink.stats()["broker"] == "failed"
        with pytest.raises(SinkError, match=r"mqtt-events.*refused.*username/password") as e:
            sink.close()
        assert "wrong" not in str(e.value)
        ok = BrokerSink("mqtt", options={"host": "127.0.0.1", "port": srv.port, "username": "cam",
                                         "password": "right"})
        ok.write(next(batches(1)))
        assert ok.flush(30)
        ok.close()
    finally:
        srv.stop()


def test_kafka_mock_cluster():
    ck = need_module("confluent_kafka")
    # librdkafka's mock cluster lives inside the producer; its bootstrap address is logged
    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, rec):
            lines.append(rec.getMessage())

    lg = logging.getLogger("vidflow-test-kafka")
    lg.addHandler(Grab())
    lg.setLevel(logging.DEBUG)
    sink = BrokerSink("kafka", options={"config": {"test.mock.num.brokers": 3, "logger": lg}},
                      retry_s=(0.05, 0.2))
    for b in batches(5):
        sink.write(b)
    sink.end_source(0)
    sink.end_source(1)
    assert sink.flush(60)
    boot = wait_until(lambda: next((m.group(1) for ln in lines for m in [re.search(
        r"Mock cluster enabled.*replaced with ([\d.:,]+)", ln)] if m), None), 10, "mock cluster address")
    got = []
    for m in consume(f"kafka://{boot}/vidflow.frames", dedup=False, timeout=30):
        got.append(m)
        if sum(bool(x.get("end-of-stream")) for x in got) == 2:
            break
    check_in_order(got, 2, 10)
    # keyed by source: one camera's messages share a partition (checked with the client itself)
    c = ck.Consumer({"bootstrap.servers": boot, "group.id": "keys", "auto.offset.reset": "earliest"})
    c.subscribe(["vidflow.frames"])
    keyed: list = []
    def done():
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            keyed.append((m.key().decode(), m.partition(), decode(m.value())))
        return len(keyed) == 22
    wait_until(done, 60, "all Kafka messages")
    c.close()
    sink.close()                           # (the mock cluster lives in the producer: close it last)
    assert all(k == str(m["source-id"]) for k, _, m in keyed)
    assert len({p for k, p, _ in keyed if k == "0"}) == 1 and len({p for k, p, _ in keyed if k == "1"}) == 1


def test_redis_auth_failure_names_the_sink(tmp_path):
    need_module("redis")
    srv = redis_server(tmp_path)
    srv.argv += ["--requirepass", "right"]
    srv.start()
    try:
        sink = BrokerSink("redis", options={"url": f"redis://:wrong@127.0.0.1:{srv.port}/0"}, name="redis-frames")
        sink.write(next(batches(1)))
        wait_until(lambda: sink.failed, what="the sink to fail")
        with pytest.raises(SinkError, match="redis-frames.*refused the credentials") as e:
            sink.close()
        assert "wrong" not in str(e.value)
        ok = BrokerSink("redis", options={"url": f"redis://127.0.0.1:{srv.port}/0", "password": "right"})
        ok.write(next(batches(1)))
        assert ok.flush(30)
        ok.close()
    finally:
        srv.stop()
