"""Moves records from the on-disk buffer to Kafka, in order, surviving Kafka outages.

One sender thread owns an idempotent kafka-python producer (acks=all, compression). It reads
records from the buffer, sends them, and acknowledges them in the buffer only once Kafka has
(so a record is deleted from disk only when it is safely in Kafka). When Kafka is unreachable
— at start-up or mid-stream — the producer is dropped, the buffer is rewound to the first
unacknowledged record and the thread retries with backoff, while the connector keeps
appending to disk. Delivery is at-least-once: after an outage a record may reach Kafka twice,
which the stream processor's idempotent writes absorb.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError

from connectors.sdk.backoff import Backoff
from connectors.sdk.buffer import DiskBuffer, Position, Record
from connectors.sdk.metrics import ConnectorMetrics

log = logging.getLogger(__name__)

#: Largest Kafka message the producer will send (the local stack's broker accepts 8 MiB).
MAX_REQUEST_BYTES = 8 * 1024 * 1024 - 64 * 1024


def producer_config(
    bootstrap: str,
    *,
    client_id: str,
    compression: str = "lz4",
    linger_ms: int = 20,
    delivery_timeout_ms: int = 30_000,
    security: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """kafka-python settings for an ordered, idempotent, compressed producer.

    ``security``: SASL/TLS settings from ``clustertwin_base.kafka_auth.client_security``.
    """
    request_timeout = min(10_000, delivery_timeout_ms - linger_ms - 1)
    return {
        **(security or {}),
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,  # the idempotent maximum: keeps order
        "compression_type": None if compression == "none" else compression,
        "linger_ms": linger_ms,
        "batch_size": 1 << 20,
        "max_request_size": MAX_REQUEST_BYTES,
        "request_timeout_ms": request_timeout,
        "delivery_timeout_ms": delivery_timeout_ms,
        "max_block_ms": 5_000,
        "reconnect_backoff_max_ms": 5_000,
        "bootstrap_timeout_ms": 5_000,
    }


class KafkaPublisher:
    """Buffer-backed Kafka sender. ``append`` never blocks on the network."""

    def __init__(
        self,
        buffer: DiskBuffer,
        config: dict[str, Any],
        metrics: ConnectorMetrics | None = None,
        *,
        max_in_flight: int = 64,
        backoff: Backoff | None = None,
        diagnose: Callable[[], str | None] | None = None,
    ) -> None:
        """``diagnose``: asked when a connection fails, returns why if Kafka refused us (a
        wrong password mid-run otherwise reads as "unable to bootstrap")."""
        self.buffer = buffer
        self.config = config
        self.diagnose = diagnose
        self.metrics = metrics or ConnectorMetrics()
        self.max_in_flight = max_in_flight
        self._backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._producer: KafkaProducer | None = None
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    # -- the connector side ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="clustertwin-publisher", daemon=True)
        self._thread.start()

    def append(self, record: Record, *, force: bool = False) -> None:
        """Hand a record over; raises BufferFull when the bounded buffer is full."""
        self.buffer.append(record, force=force)
        with self._wake:
            self._wake.notify()

    def drain(self, timeout: float) -> bool:
        """Wait until Kafka has acknowledged everything appended so far."""
        deadline = time.monotonic() + timeout
        while self.buffer.pending:
            if time.monotonic() >= deadline:
                return False
            if self._thread is not None and not self._thread.is_alive():
                return False  # the sender died (see last_error); the backlog stays on disk
            with self._wake:
                self._wake.notify()
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 30.0) -> bool:
        """Drain (up to ``timeout``), stop the thread. What is left stays on disk for next time."""
        drained = self.drain(timeout)
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.buffer.close()
        return drained

    # -- the sender thread ---------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            self._producer = KafkaProducer(**self.config)
        except (KafkaConfigurationError, TypeError, AssertionError):
            raise  # a wrong setting is not an outage: fail loudly
        except Exception as exc:  # NoBrokersAvailable, KafkaTimeoutError, socket errors...
            self._producer = None
            why = f"cannot reach Kafka at {self.config['bootstrap_servers']}: {exc}"
            refused = self._diagnose()
            self._failed(refused or why)
            return False
        self.connected.set()
        log.info("connected to Kafka at %s", self.config["bootstrap_servers"])
        return True

    def _diagnose(self) -> str | None:
        if self.diagnose is None:
            return None
        try:
            return self.diagnose()
        except Exception as exc:  # a diagnosis must never stop the sender
            log.debug("diagnosis failed: %r", exc)
            return None

    def _failed(self, why: str) -> None:
        self.metrics.add(kafka_failures=1)
        self.metrics.last_error = why
        self.connected.clear()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=0)
            self._producer = None
        self.buffer.rewind()  # everything unacknowledged is sent again, in order
        delay = self._backoff.next()
        log.warning(
            "%s; buffering on disk (%d records), retry in %.1f s", why, self.buffer.pending, delay
        )
        self._stop.wait(delay)

    def _run(self) -> None:
        try:
            self._send_loop()
        except Exception as exc:  # a wrong setting: nothing to retry; the data stays on disk
            log.exception("Kafka publisher stopped: %s", exc)
            self.metrics.last_error = f"publisher stopped: {exc!r}"

    def _send_loop(self) -> None:
        inflight: deque[tuple[Position, Any, Record]] = deque()
        while True:
            if self._stop.is_set() and (not inflight or self._producer is None):
                break
            if self._producer is None and not self._connect():
                continue
            producer = self._producer
            assert producer is not None
            try:
                if len(inflight) < self.max_in_flight and not self._stop.is_set():
                    for pos, rec in self.buffer.read(self.max_in_flight - len(inflight)):
                        fut = producer.send(
                            rec.topic, key=rec.key, value=rec.value, headers=list(rec.headers)
                        )
                        inflight.append((pos, fut, rec))
                if not inflight:
                    with self._wake:
                        self._wake.wait(0.05)
                    continue
                # Settle finished sends from the head, strictly in order.
                head_pos, head_fut, _ = inflight[0]
                if not head_fut.is_done:
                    head_fut.get(timeout=self.config["delivery_timeout_ms"] / 1000 + 5)
                acked, last = 0, head_pos
                while inflight and inflight[0][1].is_done:
                    pos, fut, rec = inflight[0]
                    if fut.failed():
                        raise fut.exception
                    inflight.popleft()
                    acked += 1
                    last = pos
                    self.metrics.sent(
                        rec.n_readings, rec.newest_ts, deadletter=rec.topic != _main_topic(rec)
                    )
                if acked:
                    self.buffer.ack(last, acked)
                    self._backoff.reset()
            except Exception as exc:
                inflight.clear()
                self._failed(f"Kafka send failed: {exc!r}")
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)


def _main_topic(rec: Record) -> str:
    """Dead-letter records carry a reason header; envelopes do not."""
    for k, _v in rec.headers:
        if k == "clustertwin-reason":
            return ""
    return rec.topic
