"""``BrokerSink``: per-frame (or per-track) messages to a message broker, at least once, in order
per source, never blocking the pipeline.

Path of a message: ``write(batch)`` queues the batch (``ThreadedSink``); the sink's worker builds
the records from the batch's columns, encodes them (``encoder=``), and appends them with their
``(source-id, seq)`` to the spool in one transaction; a sender thread publishes the spool's
oldest ``window`` messages, waits for the broker's acknowledgement (``flush``), then deletes them.

Delivery promise:

- **at least once**: a message leaves the spool only after the broker acknowledged it. After an
  outage (or a crash between acknowledgement and delete) the unacknowledged window is sent again,
  so a consumer sees at most ``window`` duplicates per outage, recognisable by ``(source-id, seq)``
  (``vidflow.consume(..., dedup=True)`` drops them).
- **ordered per source**: one sender, spool order = encode order; keys = the source, so Kafka
  partitions and Redis streams keep each camera's order.
- **outages**: while the broker is unreachable messages stay in the spool and the sink retries
  with capped backoff; a broker down at start is the state ``"down"``, not an error. With
  ``spool="path.db"`` (SQLite WAL) spooled messages survive a restart (even SIGKILL) and go first.
- **bounded**: a full spool applies ``on_full`` (``drop_oldest`` default / ``drop_newest``),
  counted in ``stats()["spool_dropped"]`` and logged.
- errors retrying can't fix (refused credentials, unknown host) fail the sink with a
  :class:`~vidflow.errors.SinkError` naming it (``on_error`` decides: isolate or stop).

``end_source(sid)`` sends the source's end-of-stream message (``translate.eos_message`` plus
``schema`` and ``seq``), after ``object.end`` events for the ``events`` encoder.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from ..batch import Batch
from ..errors import SinkError
from ._spool import DiskSpool, MemorySpool
from .base import ThreadedSink
from .encoders import Encoder, JsonlEncoder, make_encoder
from .records import host_frames
from .transports import TRANSPORTS, Transport, TransportUnavailable

__all__ = ["BrokerSink", "make_transport"]

log = logging.getLogger(__name__)


def make_transport(spec: str | Transport, **kw: Any) -> Transport:
    """A transport by kind (``mqtt``, ``kafka``, ``redis``, ``zmq``, ``webhook``) or ``spec`` itself."""
    if not isinstance(spec, str):
        if not isinstance(spec, Transport):
            raise ValueError(f"transport: expected one of {sorted(TRANSPORTS)} or a Transport, got {type(spec).__name__}")
        return spec
    if spec not in TRANSPORTS:
        raise ValueError(f"transport: expected one of {sorted(TRANSPORTS)}, got {spec!r}")
    mod, name = TRANSPORTS[spec].split(":")
    return getattr(importlib.import_module(mod), name)(**kw)


class BrokerSink(ThreadedSink):
    """Publish every frame's record (or per-track events) to a message broker through a transport,
    with a bounded spool that keeps what the broker has not acknowledged.

    Args:
        transport: a :class:`~vidflow.sinks.transports.Transport` or its kind (then ``options``
            are its keyword arguments, e.g. ``{"host": "broker", "qos": 1}``).
        encoder: an encoder name (``sinks.encoders.ENCODERS``) or object; ``encoder_options``
            its keyword arguments.
        topic / key: templates with ``{source_id}`` (default: the transport's, key = the source).
        spool: SQLite file for a spool that survives restarts; ``None``: in memory.
        spool_max_messages / spool_max_bytes / on_full: the spool's bound and policy.
        window: messages per publish-and-acknowledge round (= the duplicate bound per outage).
        attrs: ``infer-tensor-object-*`` columns to send (True / False / list of attribute keys).
        retry_s: first and largest wait between reconnects.
        drain_timeout_s: how long ``close`` waits for the spool to empty before leaving the rest
            (kept on disk with a disk spool; counted as ``unsent`` otherwise).
        name: the sink's name in the summary and logs (default: the transport's kind).
        queue_size / when_full / on_error: see :class:`~vidflow.sinks.base.ThreadedSink`.
    """

    def __init__(self, transport: str | Transport, *, options: dict[str, Any] | None = None,
                 encoder: str | Encoder = "vidflow.v1", encoder_options: dict[str, Any] | None = None,
                 topic: str | None = None, key: str = "{source_id}", spool: str | Path | None = None,
                 spool_max_messages: int = 1_000_000, spool_max_bytes: int = 1 << 30,
                 on_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest", window: int = 256,
                 attrs: bool | list[str] = True, retry_s: tuple[float, float] | list[float] = (0.1, 5.0),
                 drain_timeout_s: float = 10.0, queue_size: int = 16,
                 when_full: Literal["block", "drop_oldest"] = "block",
                 on_error: Literal["isolate", "stop"] = "isolate", name: str | None = None) -> None:
        self.transport = make_transport(transport, **(options or {}))
        super().__init__(name=name or f"{self.transport.name}", queue_size=queue_size, when_full=when_full,
                         on_error=on_error)
        self.encoder = make_encoder(encoder, **(encoder_options or {}))
        self.topic = topic or self.transport.default_topic
        self.key = key
        for t in (self.topic, self.key):
            try:
                t.format(source_id=0)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"topic/key template {t!r}: only {{source_id}} may be used ({e})") from e
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not (0 < retry_s[0] <= retry_s[1]):
            raise ValueError(f"retry_s: expected (first, max) with 0 < first <= max, got {retry_s}")
        self.window, self.attrs, self.retry_s, self.drain_timeout_s = int(window), attrs, tuple(retry_s), float(
            drain_timeout_s)
        self.spool = (DiskSpool(spool, max_messages=spool_max_messages, max_bytes=spool_max_bytes, on_full=on_full)
                      if spool is not None else
                      MemorySpool(max_messages=spool_max_messages, max_bytes=spool_max_bytes, on_full=on_full))
        self._seqs: dict[Any, int] = self.spool.seqs()
        self._wake = threading.Event()
        self._stop_sender = threading.Event()
        self._sender: threading.Thread | None = None
        self._state = "idle"
        self._sent = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._unsent = 0

    # ---- encode side (ThreadedSink worker) -------------------------------------------------
    @property
    def host_masks(self) -> bool:
        """Reads the masks' RLE (``records.ReadsHostFrames``): the ``jsonl`` encoder writes them."""
        return isinstance(self.encoder, JsonlEncoder)

    def _next_seq(self, sid: Any) -> int:
        n = self._seqs.get(sid, 0)
        self._seqs[sid] = n + 1
        return n

    def _spool(self, msgs: list[tuple[Any, bytes]]) -> None:
        if msgs:
            rows = [(self.topic.format(source_id=s), self.key.format(source_id=s), p) for s, p in msgs]
            self.spool.append(rows, self._seqs)
            self._wake.set()

    def _process(self, batch: Batch) -> None:
        self._start_sender()
        self._spool(self.encoder.encode(host_frames(batch, attrs=self.attrs, masks=self.host_masks), self._next_seq))

    def _end_source(self, source_id: int | str) -> None:
        self._start_sender()
        self._spool(self.encoder.end_source(source_id, self._next_seq))

    def _finish(self) -> None:
        if self._sender is None and self.spool.size()[0]:
            self._start_sender()
        if self._sender is not None:
            self.flush(self.drain_timeout_s)
            self._stop_sender.set()
            self._wake.set()
            self._sender.join()
        left = self.spool.size()[0]
        if left:
            if isinstance(self.spool, DiskSpool):
                log.warning("%s: %d messages left in the spool %s; they are sent first on the next run", self.name,
                            left, self.spool.path)
            else:
                self._unsent = left
                log.error("%s: %d messages could not be delivered before close (in-memory spool: lost)",
                          self.name, left)
        self.transport.close()
        self.spool.close()
        self._state = "closed"

    # ---- public ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start sending what the spool holds (from an earlier run) before the first write."""
        self._start_sender()

    def flush(self, timeout: float) -> bool:
        """Wait until every batch written so far was encoded and the broker acknowledged every
        message (True), or ``timeout`` seconds passed or the sink failed (False)."""
        deadline = time.monotonic() + timeout
        if not self.wait_idle(timeout):
            return False
        self._start_sender()
        while self.spool.size()[0]:
            if time.monotonic() >= deadline or self._error is not None or not self._sender_alive():
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def stats(self) -> dict[str, Any]:
        """ThreadedSink's counters plus ``broker`` (idle | connecting | up | down | failed |
        closed), ``sent``, ``spooled`` / ``spool_bytes`` (waiting), ``spool_dropped``,
        ``reconnects``, ``unsent`` (lost at close, memory spool only), ``last_error``."""
        s = super().stats()
        n, b = self.spool.size() if self._state != "closed" else (self._unsent, 0)
        s.update(broker=self._state, sent=self._sent, spooled=n, spool_bytes=b, spool_dropped=self.spool.dropped,
                 reconnects=self._reconnects, unsent=self._unsent, last_error=self._last_error)
        return s

    # ---- sender thread ---------------------------------------------------------------------
    def _sender_alive(self) -> bool:
        return self._sender is not None and self._sender.is_alive()

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name=f"vidflow-send-{self.name}", daemon=True)
            self._sender.start()

    def _send_loop(self) -> None:
        up, delay, was_down = False, self.retry_s[0], False
        while not self._stop_sender.is_set():
            try:
                if not up:
                    self._state = "connecting" if not was_down else "down"
                    self.transport.connect()
                    up, delay = True, self.retry_s[0]
                    self._state = "up"
                    if was_down:
                        self._reconnects += 1
                        log.info("%s: broker reachable again; sending %d spooled messages", self.name,
                                 self.spool.size()[0])
                rows = self.spool.peek(self.window)
                if not rows:
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                for _, topic, key, payload in rows:
                    self.transport.publish(topic, key, payload)
                self.transport.flush(30.0)
                self.spool.ack(rows[-1][0])
                self._sent += len(rows)
            except TransportUnavailable as e:
                if not was_down or up:
                    log.warning("%s: broker unreachable (%s); spooling (%d waiting)", self.name, e,
                                self.spool.size()[0])
                self._last_error, up, was_down, self._state = str(e), False, True, "down"
                self.transport.close()
                self._stop_sender.wait(delay)
                delay = min(delay * 2, self.retry_s[1])
            except SinkError as e:
                self._state, self._last_error = "failed", str(e)
                self.transport.close()
                self._fail(SinkError(f"sink {self.name!r}: {e}"))
                return
            except Exception as e:  # noqa: BLE001 - a bug or an unexpected client error: fail loudly
                self._state, self._last_error = "failed", f"{type(e).__name__}: {e}"
                self.transport.close()
                self._fail(SinkError(f"sink {self.name!r}: {type(e).__name__}: {e}"))
                return
        self.transport.close()
