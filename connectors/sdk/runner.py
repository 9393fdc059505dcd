"""Runs one connector: source -> validation -> envelopes -> disk buffer -> Kafka.

The pieces a connector author never writes: the source is iterated in its own task and
reconnected with backoff when it fails; samples are validated with the reading contract
(bad ones go to the dead-letter topic with their reason and raw bytes, their neighbours go
on); good readings are grouped per site into envelopes of up to ``batch.max_readings``,
flushed at the latest after ``batch.max_delay_ms``; envelopes go through the on-disk buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from clustertwin_base.kafka_auth import (
    KafkaAuthError,
    KafkaUnreachable,
    check_credentials,
    client_security,
)
from clustertwin_base.settings import MissingCredentialError, Settings, cache_dir
from connectors.sdk.backoff import Backoff
from connectors.sdk.base import (
    BadSample,
    Connector,
    ConnectorConfig,
    Item,
    Sample,
    SourceMisconfigured,
)
from connectors.sdk.buffer import BufferFull, DiskBuffer, Record
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.publisher import KafkaPublisher, producer_config
from twin import deadletter
from twin.contract import unknown_meter
from twin.readings import (
    SCHEMA_VERSION,
    MeterIndex,
    ReadingDict,
    Rejection,
    encode_envelope,
    kafka_headers,
    now_ms,
    schema_for,
    validate_readings,
)

log = logging.getLogger(__name__)

REASON_HEADER = deadletter.REASON_HEADER  # one sample, one dead letter: twin/deadletter.py
SOURCE_HEADER = "clustertwin-source"


def buffer_dir(config: ConnectorConfig) -> Path:
    if config.buffer.dir is not None:
        return config.buffer.dir.expanduser()
    return cache_dir() / "connectors" / config.name


class ConnectorStartError(RuntimeError):
    """The connector must not start; the message says what to fix."""


def check_kafka_access(
    config: ConnectorConfig,
    *,
    bootstrap: str | None = None,
    settings: Settings | None = None,
    timeout: float = 10.0,
) -> None:
    """Refuse to start when Kafka refuses our credentials (or they are missing).

    Checked once at start-up, against the broker, within ``timeout``: a wrong password
    otherwise looks like an endless outage while the disk buffer fills. A broker that is
    merely unreachable is not a reason to refuse: the buffer exists for that.
    """
    settings = settings or Settings.load()
    target = bootstrap or config.kafka.bootstrap or settings.kafka_bootstrap
    try:
        check_credentials(settings, target, timeout=timeout)
    except (KafkaAuthError, MissingCredentialError) as exc:
        raise ConnectorStartError(str(exc)) from exc
    except KafkaUnreachable as exc:
        log.warning("%s; starting anyway: readings wait in the disk buffer", exc)


def make_publisher(
    config: ConnectorConfig,
    metrics: ConnectorMetrics,
    *,
    bootstrap: str | None = None,
    settings: Settings | None = None,
) -> KafkaPublisher:
    """The buffer-backed producer a config asks for (bootstrap: config, else settings;
    credentials: settings)."""
    settings = settings or Settings.load()
    bootstrap = bootstrap or config.kafka.bootstrap or settings.kafka_bootstrap
    buffer = DiskBuffer(
        buffer_dir(config),
        max_bytes=config.buffer.max_bytes,
        segment_bytes=config.buffer.segment_bytes,
        fsync=config.buffer.fsync,
    )
    return KafkaPublisher(
        buffer,
        producer_config(
            bootstrap,
            client_id=f"clustertwin-{config.source_name().replace('/', '-')}",
            compression=config.kafka.compression,
            linger_ms=config.kafka.linger_ms,
            delivery_timeout_ms=config.kafka.delivery_timeout_ms,
            security=client_security(settings),
        ),
        metrics,
        diagnose=lambda: _refusal(settings, bootstrap),
    )


def _refusal(settings: Settings, bootstrap: str) -> str | None:
    """Why Kafka refuses us, if it does (None: it accepts us, or cannot be asked)."""
    try:
        check_credentials(settings, bootstrap, timeout=5.0)
    except (KafkaAuthError, MissingCredentialError) as exc:
        return str(exc)
    except KafkaUnreachable:
        return None
    return None


class ConnectorRunner:
    """Drive ``connector`` until its source ends, ``stop()`` is called or a limit is hit."""

    def __init__(
        self,
        connector: Connector[Any],
        publisher: KafkaPublisher,
        *,
        metrics: ConnectorMetrics | None = None,
        backoff: Backoff | None = None,
        queue_batches: int = 64,
    ) -> None:
        self.connector = connector
        self.config: ConnectorConfig = connector.config
        self.index: MeterIndex = connector.index
        self.publisher = publisher
        self.metrics = metrics or publisher.metrics
        self.backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self.source = self.config.source_name()
        self._queue: asyncio.Queue[Sequence[Item] | None] = asyncio.Queue(queue_batches)
        self._pending: dict[str, list[ReadingDict]] = {}
        self._pending_since: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._spill: list[Record] = []
        #: the source worked once in this run: it yielded, or opened (``connected_on_open``)
        self.source_worked = False
        #: the misconfiguration that ended the run before the source ever worked
        self.fatal: SourceMisconfigured | None = None

    def stop(self) -> None:
        """Ask the run to end (signal handlers call this): flush, drain, close."""
        self._stop.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wake the loop now, not at the next batch

    # -- source side ------------------------------------------------------------------

    async def _pump(self) -> None:
        """Iterate the source, reconnecting with backoff; a bad sample never ends this loop."""
        while not self._stop.is_set():
            try:
                await self.connector.open()
                if self.connector.connected_on_open:
                    self.source_worked = True
                async for batch in self.connector.stream():
                    self.source_worked = True
                    self.backoff.reset()
                    await self._queue.put(batch)
                    if self._stop.is_set():
                        break
                break  # a finite source (file replay) is done
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._source_failed(exc)
                if delay is None:
                    break
                with contextlib.suppress(Exception):
                    await self.connector.close()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        with contextlib.suppress(Exception):
            await self.connector.close()
        await self._queue.put(None)

    def _source_failed(self, exc: Exception) -> float | None:
        """Count and report a source failure; the seconds to wait before reopening, or None
        when the run must end. The rule for a misconfiguration (SourceMisconfigured): before
        the source ever worked in this run nothing but an operator can fix it, so the run
        ends with it (``fatal``); after, it may be a certificate rotation in progress, so it
        is retried at the longest backoff, the reason logged at every attempt."""
        self.metrics.add(source_reconnects=1)
        if not isinstance(exc, SourceMisconfigured):
            self.metrics.last_error = f"source: {exc!r}"
            delay = self.backoff.next()
            log.warning("%s: source failed (%r); reconnecting in %.1f s", self.source, exc, delay)
            return delay
        self.metrics.last_error = f"source: {exc}"
        if not self.source_worked:
            self.fatal = exc
            log.error("%s: %s; not retrying: fix the configuration", self.source, exc)
            return None
        delay = self.backoff.maximum
        log.error(
            "%s: %s; it worked before in this run (a certificate rotation?), retrying in %.0f s",
            self.source,
            exc,
            delay,
        )
        return delay

    # -- intake -----------------------------------------------------------------------

    def _intake(self, batch: Sequence[Item]) -> None:
        by_site: dict[str, list[dict[str, Any]]] = {}
        originals: dict[str, list[Sample]] = {}
        rejects: list[tuple[str, str, bytes]] = []  # (site, reason, raw)
        index = self.index
        for item in batch:
            if isinstance(item, BadSample):
                site = ""
                if item.meter is not None and (info := index.get(item.meter)) is not None:
                    site = info.site
                rejects.append((site, item.reason, item.raw))
                continue
            info = index.get(item.meter)
            if info is None:
                rejects.append(("", unknown_meter(item.meter, index.cluster), _sample_bytes(item)))
                continue
            raw_reading: dict[str, Any] = {
                "meter": item.meter,
                "ts": item.ts,
                "value": item.value,
                "unit": item.unit if item.unit is not None else info.unit,
                "carrier": item.carrier if item.carrier is not None else info.carrier,
                "quality": item.quality,
            }
            if item.start is not None:
                raw_reading["start"] = item.start
            by_site.setdefault(info.site, []).append(raw_reading)
            originals.setdefault(info.site, []).append(item)
        now = now_ms()
        accepted_total = 0
        for site, raws in by_site.items():
            accepted, rejected = validate_readings(raws, site=site, index=index, now=now)
            accepted_total += len(accepted)
            if accepted:
                if site not in self._pending:
                    self._pending[site] = []
                    self._pending_since[site] = time.monotonic()
                self._pending[site].extend(accepted)
            for rej in rejected:
                assert rej.position is not None
                original = originals[site][rej.position]
                raw = original.raw if original.raw is not None else Rejection.raw_bytes(rej)
                rejects.append((site, rej.reason, raw))
        self.metrics.add(
            samples_in=len(batch), readings_accepted=accepted_total, readings_rejected=len(rejects)
        )
        for site, reason, raw in rejects:
            log.debug("%s: rejected reading: %s", self.source, reason)
            self._append_blocking_free(
                Record(
                    topic=self.config.kafka.deadletter_topic,
                    key=site.encode() if site else None,
                    value=raw,
                    headers=(
                        ("content-type", b"application/json"),
                        (REASON_HEADER, reason.encode()[:4000]),
                        (SOURCE_HEADER, self.source.encode()),
                        ("clustertwin-schema", SCHEMA_VERSION.encode()),
                    ),
                )
            )

    # -- envelopes --------------------------------------------------------------------

    def _envelopes(self, site: str) -> list[Record]:
        readings = self._pending.pop(site, [])
        self._pending_since.pop(site, None)
        out = []
        size = self.config.batch.max_readings
        for i in range(0, len(readings), size):
            chunk = readings[i : i + size]
            schema = schema_for(chunk)
            value = encode_envelope(
                cluster=self.index.cluster,
                site=site,
                source=self.source,
                readings=chunk,
                schema=schema,
            )
            out.append(
                Record(
                    topic=self.config.kafka.topic,
                    key=site.encode(),
                    value=value,
                    headers=tuple(kafka_headers(schema)),
                    n_readings=len(chunk),
                    newest_ts=max(r["ts"] for r in chunk),
                )
            )
        return out

    def _append_blocking_free(self, record: Record) -> None:
        self._spill.append(record)

    async def _flush_spill(self, final: bool = False) -> None:
        """Append queued records to the buffer; when it is full, wait (back-pressure).

        On shutdown (``final``) the bound is exceeded rather than dropping what was read.
        """
        warned = False
        while self._spill:
            try:
                self.publisher.append(self._spill[0], force=final)
            except BufferFull as exc:
                if not warned:
                    log.warning(
                        "%s: %s; pausing the source until Kafka drains it", self.source, exc
                    )
                    self.metrics.add(buffer_full_waits=1)
                    warned = True
                await asyncio.sleep(0.2)
                continue
            self._spill.pop(0)

    async def _flush_due(self, force: bool = False) -> None:
        now = time.monotonic()
        delay = self.config.batch.max_delay_ms / 1000
        for site in list(self._pending):
            full = len(self._pending[site]) >= self.config.batch.max_readings
            if force or full or now - self._pending_since[site] >= delay:
                self._spill.extend(self._envelopes(site))
        await self._flush_spill(final=force)

    def _confirm_durable(self) -> None:
        """Tell the connector when all it yielded is in the disk buffer. The pump puts a
        yielded batch on the queue without suspending (it waits only when the queue is full,
        and then the queue is not empty), so an empty queue, no pending readings and no
        spill mean nothing yielded is still only in memory."""
        if self._queue.empty() and not self._pending and not self._spill:
            try:
                self.connector.readings_durable()
            except Exception as exc:  # a state file that cannot be written: say so, go on
                self.metrics.last_error = f"readings_durable: {exc!r}"
                log.warning("%s: readings_durable failed: %r", self.source, exc)

    def _next_deadline(self) -> float | None:
        if not self._pending_since:
            return None
        oldest = min(self._pending_since.values())
        return max(0.0, oldest + self.config.batch.max_delay_ms / 1000 - time.monotonic())

    async def run(
        self,
        *,
        max_readings: int | None = None,
        duration: float | None = None,
        drain_timeout: float = 60.0,
    ) -> ConnectorMetrics:
        """Run until the source ends, ``stop()``, ``max_readings`` samples or ``duration`` s.

        Raises the source's SourceMisconfigured, after flushing and closing, when it ended
        the run before the source ever worked (``connector run`` exits 2 on it)."""
        self.publisher.start()
        pump = asyncio.create_task(self._pump(), name=f"pump-{self.source}")
        loop = asyncio.get_running_loop()
        ends_at = None if duration is None else loop.time() + duration
        try:
            while True:
                timeout = self._next_deadline()
                if ends_at is not None:
                    left = max(0.0, ends_at - loop.time())
                    timeout = left if timeout is None else min(timeout, left)
                try:
                    batch = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    batch = []
                if batch is None:
                    break
                if batch:
                    self._intake(batch)
                await self._flush_due()
                self._confirm_durable()
                if self._stop.is_set():
                    break
                if max_readings is not None and self.metrics.samples_in >= max_readings:
                    break
                if ends_at is not None and loop.time() >= ends_at:
                    break
        finally:
            self._stop.set()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            with contextlib.suppress(Exception):
                await self.connector.close()
            await self._flush_due(force=True)
            self._confirm_durable()
            await asyncio.to_thread(self.publisher.close, drain_timeout)
        if self.fatal is not None:
            raise self.fatal
        return self.metrics


def _sample_bytes(s: Sample) -> bytes:
    if s.raw is not None:
        return s.raw
    return orjson.dumps(
        {
            "meter": s.meter,
            "ts": s.ts,
            "value": s.value,
            "unit": s.unit,
            "carrier": s.carrier,
            "quality": s.quality,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
