"""Transports: bytes -> a broker. Each is an optional extra with the field's standard client.

========== ================================ ============================== =====================
kind       class                            client (extra)                 default topic
========== ================================ ============================== =====================
mqtt       ``mqtt.MqttTransport``           paho-mqtt (``vidflow[mqtt]``)  ``vidflow/{source_id}/frames``
kafka      ``kafka.KafkaTransport``         confluent-kafka (``[kafka]``)  ``vidflow.frames`` (keyed)
redis      ``redis.RedisTransport``         redis (``[redis]``)            ``vidflow:{source_id}:frames``
zmq        ``zmq.ZmqTransport``             pyzmq (``[zmq]``)              ``vidflow/{source_id}/frames``
webhook    ``webhook.WebhookTransport``     stdlib urllib                  the URL template
========== ================================ ============================== =====================
"""

from ...kinds import KINDS
from .base import Transport, TransportUnavailable, import_client

__all__ = ["Transport", "TransportUnavailable", "import_client", "TRANSPORTS"]

#: transport kind -> class, from the one name table (``vidflow.kinds``)
TRANSPORTS = KINDS["transports"]
