"""Kafka through confluent-kafka / librdkafka (``pip install 'vidflow[kafka]'``): idempotent
producer, ``acks=all``, keyed by source so one camera's messages share a partition (ordered).
``config``: extra librdkafka settings (``security.protocol``, ``sasl.*``, ``test.mock.num.brokers``)."""

from __future__ import annotations

from typing import Any

from ...errors import SinkError
from .base import TransportUnavailable, import_client

__all__ = ["KafkaTransport"]


class KafkaTransport:
    """Kafka (confluent-kafka): records keyed by source, delivered when the broker acknowledges them.

    Args:
        bootstrap_servers: ``host:port[,host:port...]`` of the cluster.
        config: further librdkafka producer settings (e.g. ``{"acks": "all"}``).
        connect_timeout: seconds to wait for the cluster's metadata.
    """

    name = "kafka"
    default_topic = "vidflow.frames"

    def __init__(self, bootstrap_servers: str = "localhost:9092", *, config: dict[str, Any] | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.bootstrap_servers, self.config, self.connect_timeout = bootstrap_servers, dict(config or {}), float(
            connect_timeout)
        self._p: Any = None
        self._errors: list[Any] = []

    def __repr__(self) -> str:
        return f"KafkaTransport({self.bootstrap_servers})"

    def connect(self) -> None:
        ck = import_client("confluent_kafka", "kafka", "kafka sink")
        conf = {"bootstrap.servers": self.bootstrap_servers, "enable.idempotence": True, "acks": "all",
                "linger.ms": 5, **self.config}
        try:
            p = ck.Producer(conf)
        except ck.KafkaException as e:
            raise SinkError(f"kafka sink: bad configuration: {e}") from e
        try:
            p.list_topics(timeout=self.connect_timeout)
        except ck.KafkaException as e:
            raise TransportUnavailable(f"kafka {self.bootstrap_servers}: {e}") from e
        self._p, self._errors = p, []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(err)

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        if self._p is None:
            raise TransportUnavailable("kafka: not connected")
        while True:
            try:
                self._p.produce(topic, value=payload, key=key, on_delivery=self._delivered)
                return
            except BufferError:
                self._p.poll(0.05)

    def flush(self, timeout: float) -> None:
        if self._p is None:
            raise TransportUnavailable("kafka: not connected")
        left = self._p.flush(timeout)
        if self._errors:
            err, self._errors = self._errors[0], []
            if getattr(err, "fatal", lambda: False)():
                raise SinkError(f"kafka sink: {err}")
            raise TransportUnavailable(f"kafka: delivery failed: {err}")
        if left:
            raise TransportUnavailable(f"kafka: {left} messages not acknowledged within {timeout} s")

    def close(self) -> None:
        p, self._p = self._p, None
        if p is not None:
            try:
                p.flush(1.0)
            except Exception:  # noqa: BLE001
                pass
