"""MQTT through paho-mqtt (``pip install 'vidflow[mqtt]'``): QoS 0 or 1, TLS, username/password.

QoS 1 messages count as delivered when the broker's PUBACK arrived; QoS 0 when written to the
socket (no acknowledgement exists, so an outage can lose what was in flight). Each connection is
a fresh clean session; the sink resends its unacknowledged window after a reconnect.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Literal

from ...errors import SinkError, redact_uri
from .base import TransportUnavailable, import_client

__all__ = ["MqttTransport"]

# CONNACK reason codes retrying cannot fix (MQTT 3.1.1: 1 protocol, 2 client id, 4 bad
# credentials, 5 not authorised; as MQTT 5 reason codes 0x84-0x87, 0x8C)
_FATAL = {1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8C}


class MqttTransport:
    """MQTT (paho-mqtt): one message per record on ``topic``; QoS 1 waits for the broker's PUBACK.

    Args:
        host / port: the broker.
        qos: 0 (at most once) or 1 (at least once: acknowledged before the spool forgets it).
        username / password: broker credentials (never logged).
        tls / ca_certs: TLS to the broker, with this CA bundle (default: the system's).
        client_id: MQTT client id (empty: one the broker assigns).
        keepalive: seconds between keep-alive pings.
        connect_timeout: seconds to wait for the connection.
        retain: publish with the retain flag.
    """

    name = "mqtt"
    default_topic = "vidflow/{source_id}/frames"

    def __init__(self, host: str = "localhost", port: int = 1883, *, qos: Literal[0, 1] = 1,
                 username: str | None = None, password: str | None = None, tls: bool = False,
                 ca_certs: str | None = None, client_id: str = "", keepalive: int = 30,
                 connect_timeout: float = 5.0, retain: bool = False) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos: expected 0 or 1, got {qos!r}")
        self.host, self.port, self.qos = str(host), int(port), int(qos)
        self.username, self.password, self.tls, self.ca_certs = username, password, bool(tls), ca_certs
        self.client_id, self.keepalive, self.connect_timeout, self.retain = client_id, int(keepalive), float(
            connect_timeout), bool(retain)
        self._c: Any = None
        self._pending: list[Any] = []
        self._up = False

    def __repr__(self) -> str:
        return redact_uri(f"MqttTransport(mqtts://{self.host}:{self.port})" if self.tls else
                          f"MqttTransport(mqtt://{self.host}:{self.port})")

    def connect(self) -> None:
        mqtt = import_client("paho.mqtt.client", "mqtt", "mqtt sink")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                        clean_session=True)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        if self.tls:
            c.tls_set(ca_certs=self.ca_certs)
        done, result = threading.Event(), {}

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            result["rc"] = rc
            self._up = not rc.is_failure
            done.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self._up = False

        c.on_connect, c.on_disconnect = on_connect, on_disconnect
        where = f"mqtt://{self.host}:{self.port}"
        try:
            c.connect(self.host, self.port, self.keepalive)
        except socket.gaierror as e:
            raise SinkError(f"mqtt sink: unknown host {self.host!r}: {e}") from e
        except OSError as e:
            raise TransportUnavailable(f"{where}: {e}") from e
        c.loop_start()
        if not done.wait(self.connect_timeout):
            c.loop_stop()
            raise TransportUnavailable(f"{where}: no CONNACK within {self.connect_timeout} s")
        rc = result["rc"]
        if rc.is_failure:
            c.loop_stop()
            c.disconnect()
            if rc.value in _FATAL:
                raise SinkError(f"mqtt sink: {where} refused the connection: {rc} (check username/password)")
            raise TransportUnavailable(f"{where}: connection refused: {rc}")
        self._c, self._pending = c, []

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        if self._c is None or not self._up:
            raise TransportUnavailable("mqtt: not connected")
        info = self._c.publish(topic, payload, qos=self.qos, retain=self.retain)
        if info.rc != 0:
            raise TransportUnavailable(f"mqtt: publish failed (rc {info.rc})")
        self._pending.append(info)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for info in self._pending:
            while not info.is_published():
                if not self._up:
                    raise TransportUnavailable("mqtt: connection lost before PUBACK")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportUnavailable(f"mqtt: no PUBACK within {timeout} s")
                try:
                    info.wait_for_publish(min(left, 0.05))
                except (RuntimeError, ValueError) as e:
                    raise TransportUnavailable(f"mqtt: {e}") from e
        self._pending = []

    def close(self) -> None:
        c, self._c, self._up = self._c, None, False
        if c is not None:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:  # noqa: BLE001 - close never raises
                pass
