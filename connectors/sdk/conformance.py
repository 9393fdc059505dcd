"""The conformance kit: what every connector must show before it meets a real site.

Run it from a connector's tests against the connector's own simulator/server and a real
Kafka (``connectors.sdk.pytest_plugin`` gives a ready fixture). It checks:

- packaging: installed under the ``clustertwin.connectors`` entry point, a config model
  derived from ConnectorConfig, a README and a sample config that validates;
- contract: everything that reaches Kafka is a ``readings/1`` envelope with the right key and
  headers, every reading passes the same validation as the stream processor, bad samples go
  to the dead-letter topic with a reason, and nothing accepted is lost;
- ordering: per meter, timestamps never go backwards within a site's partition;
- reconnect: the source failing mid-stream (the harness's ``disrupt``, e.g. restarting the
  server, or an injected failure) does not end the run: readings keep coming;
- buffering: with Kafka unreachable readings pile up on disk, and are all delivered, in
  order, by the next process once Kafka is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from clustertwin_base.kafka_topics import delete_topics
from connectors.sdk.base import Connector, ConnectorConfig, Item, SourceUnavailable
from connectors.sdk.buffer import DiskBuffer
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.registry import load_config, load_connector
from connectors.sdk.runner import REASON_HEADER, ConnectorRunner, make_publisher
from twin.readings import (
    SCHEMA_HEADER,
    SCHEMA_VERSIONS,
    MeterIndex,
    validate_envelope,
)


class ConformanceError(AssertionError):
    """The connector broke the contract; the message says how."""


@dataclass
class KafkaRecord:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


@dataclass
class ConformanceReport:
    envelopes: int = 0
    readings: list[dict[str, Any]] = field(default_factory=list)  # in Kafka order
    deadletters: list[KafkaRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def consume_all(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout: float = 60.0
) -> list[KafkaRecord]:
    """Every record of ``topic`` (waits until ``expect`` records or the end offsets)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[KafkaRecord] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500, max_records=5000).values():
                for r in recs:
                    out.append(
                        KafkaRecord(
                            r.key, r.value, {k: v for k, v in r.headers}, r.partition, r.offset
                        )
                    )
            done = all(consumer.position(tp) >= ends[tp] for tp in tps)
            if done and (expect is None or len(out) >= expect):
                break
            if done:
                ends = consumer.end_offsets(tps)
        return out
    finally:
        consumer.close()


class _InjectedFailure(Connector[Any]):
    """Wraps a connector so its source fails once, mid-stream, after ``after`` batches."""

    def __init__(self, inner: Connector[Any], after: int) -> None:
        super().__init__(inner.config, inner.index)
        self.inner, self.after, self.failed = inner, after, False

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        n = 0
        async for batch in self.inner.stream():
            yield batch
            n += 1
            if not self.failed and n >= self.after:
                self.failed = True
                raise SourceUnavailable("conformance kit: injected source failure")


class ConformanceKit:
    def __init__(self, kafka_bootstrap: str, work_dir: Path) -> None:
        self.bootstrap = kafka_bootstrap
        self.work_dir = Path(work_dir)
        self.topics: list[str] = []  # made for this kit's runs, dropped by drop_topics

    def drop_topics(self) -> None:
        """Delete the private topics of this kit's runs (best effort: a check that stopped
        the broker may leave it down). Keeps a developer's broker from growing by two
        topics per run."""
        if not self.topics:
            return
        try:
            delete_topics(self.bootstrap, names=self.topics)
        except Exception as exc:
            warnings.warn(f"conformance kit: topics left on the broker ({exc!r})", stacklevel=2)
        self.topics = []

    # -- packaging --------------------------------------------------------------------

    def check_package(self, name: str) -> type[Connector[Any]]:
        cls = load_connector(name)  # raises if the entry point is missing
        if not issubclass(cls.config_model, ConnectorConfig):
            raise ConformanceError(f"{name}: config_model must derive from ConnectorConfig")
        folder = Path(inspect.getfile(cls)).parent
        readme = folder / "README.md"
        if not readme.is_file() or len(readme.read_text().strip()) < 200:
            raise ConformanceError(f"{name}: {readme} missing or too short to help anyone")
        samples = sorted(folder.glob("sample*.yaml"))
        if not samples:
            raise ConformanceError(f"{name}: no sample*.yaml config next to {inspect.getfile(cls)}")
        for sample in samples:
            loaded_cls, config = load_config(sample)
            if loaded_cls is not cls or config.connector != name:
                raise ConformanceError(f"{sample}: says connector {config.connector!r}")
        return cls

    # -- contract, ordering, reconnect -------------------------------------------------

    def _isolated(self, config: ConnectorConfig, tag: str) -> ConnectorConfig:
        run = f"{tag}-{uuid.uuid4().hex[:8]}"
        self.topics += [f"conformance-{run}", f"conformance-{run}-dl"]
        return config.model_copy(
            update={
                "kafka": config.kafka.model_copy(
                    update={
                        "topic": f"conformance-{run}",
                        "deadletter_topic": f"conformance-{run}-dl",
                        "bootstrap": None,
                    }
                ),
                "buffer": config.buffer.model_copy(update={"dir": self.work_dir / run}),
            }
        )

    async def run_connector(
        self,
        make: Callable[[ConnectorConfig], Connector[Any]],
        config: ConnectorConfig,
        *,
        min_readings: int,
        timeout: float = 120.0,
        disrupt: Callable[[], Awaitable[None]] | None = None,
        inject_failure_after: int | None = None,
        bootstrap: str | None = None,
        tag: str = "run",
    ) -> tuple[ConnectorConfig, ConnectorMetrics]:
        """Run the connector into a private topic until ``min_readings`` samples came in."""
        cfg = self._isolated(config, tag)
        connector = make(cfg)
        if inject_failure_after is not None:
            connector = _InjectedFailure(connector, inject_failure_after)
        metrics = ConnectorMetrics()
        publisher = make_publisher(cfg, metrics, bootstrap=bootstrap or self.bootstrap)
        runner = ConnectorRunner(connector, publisher, metrics=metrics)
        task = asyncio.create_task(
            runner.run(max_readings=min_readings, drain_timeout=5 if bootstrap else 60)
        )
        if disrupt is not None:
            await self._wait_for(task, metrics, min_readings // 3, timeout)
            before = metrics.samples_in
            await disrupt()
            metrics.last_error = None
            await asyncio.wait_for(asyncio.shield(task), timeout)
            if metrics.samples_in <= before:
                raise ConformanceError("no readings after the source was disrupted")
        else:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                runner.stop()
                await task
                raise ConformanceError(
                    f"only {metrics.samples_in} of {min_readings} samples in {timeout:.0f} s "
                    f"(last error: {metrics.last_error})"
                ) from None
        await task
        return cfg, metrics

    @staticmethod
    async def _wait_for(
        task: asyncio.Task[Any], metrics: ConnectorMetrics, n: int, timeout: float
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while metrics.samples_in < n:
            if task.done():
                await task
                raise ConformanceError(f"run ended after {metrics.samples_in} samples (< {n})")
            if loop.time() > deadline:
                raise ConformanceError(f"only {metrics.samples_in} samples in {timeout:.0f} s")
            await asyncio.sleep(0.05)

    def collect(
        self,
        cfg: ConnectorConfig,
        index: MeterIndex,
        metrics: ConnectorMetrics,
        *,
        allow_duplicates: bool = False,
    ) -> ConformanceReport:
        """Read back the private topics and check the contract and the ordering."""
        report = ConformanceReport(metrics=metrics.snapshot())
        records = consume_all(self.bootstrap, cfg.kafka.topic, expect=metrics.envelopes_sent)
        seen: set[tuple[str, int]] = set()
        last_ts: dict[str, int] = {}
        for rec in records:
            where = f"{cfg.kafka.topic}[{rec.partition}]@{rec.offset}"
            if rec.headers.get("content-type") != b"application/json":
                raise ConformanceError(f"{where}: content-type header missing")
            if rec.headers.get(SCHEMA_HEADER) not in {v.encode() for v in SCHEMA_VERSIONS}:
                raise ConformanceError(f"{where}: {SCHEMA_HEADER} header missing")
            # judged as the stream worker will judge the record: its key and headers too
            result = validate_envelope(
                rec.value, index, key=rec.key, headers=list(rec.headers.items())
            )
            if result.rejected:
                raise ConformanceError(f"{where}: envelope fails validation: {result.rejected[:3]}")
            if rec.key != (result.site or "").encode():
                raise ConformanceError(f"{where}: key {rec.key!r} is not the site {result.site!r}")
            if result.source != cfg.source_name():
                raise ConformanceError(f"{where}: source {result.source!r}")
            report.envelopes += 1
            for r in result.accepted:
                ident = (r["meter"], r["ts"])
                if ident in seen:
                    if allow_duplicates:
                        continue
                    raise ConformanceError(f"{where}: duplicate reading {ident}")
                seen.add(ident)
                prev = last_ts.get(r["meter"])
                if prev is not None and r["ts"] < prev:
                    raise ConformanceError(
                        f"{where}: meter {r['meter']} went back in time ({prev} -> {r['ts']})"
                    )
                last_ts[r["meter"]] = r["ts"]
                report.readings.append(
                    {
                        "meter": r["meter"],
                        "ts": r["ts"],
                        "value": r["value"],
                        "quality": r["quality"].value,
                    }
                )
        if len(report.readings) != metrics.readings_accepted and not allow_duplicates:
            raise ConformanceError(
                f"{metrics.readings_accepted} readings accepted but {len(report.readings)} "
                "reached Kafka"
            )
        if metrics.readings_rejected:
            report.deadletters = consume_all(
                self.bootstrap, cfg.kafka.deadletter_topic, expect=metrics.readings_rejected
            )
            for dl in report.deadletters:
                if not dl.headers.get(REASON_HEADER):
                    raise ConformanceError("dead-letter record without a reason header")
            if len(report.deadletters) != metrics.readings_rejected:
                raise ConformanceError(
                    f"{metrics.readings_rejected} rejected but "
                    f"{len(report.deadletters)} dead-letter records"
                )
        return report

    async def check_contract(
        self,
        make: Callable[[ConnectorConfig], Connector[Any]],
        config: ConnectorConfig,
        index: MeterIndex,
        *,
        min_readings: int,
        timeout: float = 120.0,
        disrupt: Callable[[], Awaitable[None]] | None = None,
        redelivers: bool = False,
    ) -> ConformanceReport:
        """Contract + ordering + reconnect (``disrupt``, or an injected source failure).

        ``redelivers``: the source's protocol re-delivers what it did not see acknowledged
        before a reconnect (MQTT QoS 1 with a persistent session), so a repeat after the
        injected failure is allowed too; the worker drops it as a duplicate.
        """
        cfg, metrics = await self.run_connector(
            make,
            config,
            min_readings=min_readings,
            timeout=timeout,
            disrupt=disrupt,
            inject_failure_after=None if disrupt else 2,
            tag="contract",
        )
        if metrics.source_reconnects < 1:
            raise ConformanceError("the source failure was not noticed (no reconnect counted)")
        # Live sources may re-deliver around a reconnect (at-least-once): duplicates allowed
        # there, never losses or reordering.
        return self.collect(cfg, index, metrics, allow_duplicates=disrupt is not None or redelivers)

    async def check_buffering(
        self,
        make: Callable[[ConnectorConfig], Connector[Any]],
        config: ConnectorConfig,
        index: MeterIndex,
        *,
        min_readings: int,
        timeout: float = 120.0,
    ) -> ConformanceReport:
        """Kafka unreachable: readings go to disk; the next process delivers them in order."""
        dead = f"127.0.0.1:{free_port()}"
        cfg, metrics = await self.run_connector(
            make,
            config,
            min_readings=min_readings,
            timeout=timeout,
            bootstrap=dead,
            tag="buffer",
        )
        if metrics.readings_sent:
            raise ConformanceError("readings reported sent to an unreachable Kafka")
        if not metrics.kafka_failures:
            raise ConformanceError("Kafka being unreachable went unnoticed")
        pending = _pending_in(cfg)
        if pending == 0:
            raise ConformanceError("nothing was buffered on disk while Kafka was unreachable")
        # A new process, same buffer dir, Kafka back: the backlog is replayed.
        replay = ConnectorMetrics()
        publisher = make_publisher(cfg, replay, bootstrap=self.bootstrap)
        publisher.start()
        drained = await asyncio.to_thread(publisher.close, timeout)
        if not drained:
            raise ConformanceError(f"backlog not delivered in {timeout:.0f} s: {replay.last_error}")
        replay.readings_accepted = metrics.readings_accepted
        replay.readings_rejected = metrics.readings_rejected
        return self.collect(cfg, index, replay)


def _pending_in(cfg: ConnectorConfig) -> int:
    assert cfg.buffer.dir is not None
    buf = DiskBuffer(cfg.buffer.dir, max_bytes=cfg.buffer.max_bytes)
    try:
        return buf.pending
    finally:
        with contextlib.suppress(Exception):
            buf.close()
