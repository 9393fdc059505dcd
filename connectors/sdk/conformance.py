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
  order, by the next process once Kafka is back;
- metering (counter sources): the kit drives the author's source through a
  :class:`CounterSource` hook (set the counter's total, stop and start the source) across a
  first poll, increases, repeated snapshots, a counter reset, a source restart and a restart
  of the connector process on the same buffer dir, and checks the published intervals add
  up to the increase it fed the source, phase by phase: none lost, none doubled.

Every check leaves a :class:`CheckResult`; ``ConformanceKit.summary()`` (and the pytest
plugin's terminal summary) prints one line per check: name, PASS/FAIL, the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition

from clustertwin_base.kafka_topics import delete_topics
from connectors.sdk.backoff import Backoff
from connectors.sdk.base import Connector, ConnectorConfig, Item, SourceUnavailable
from connectors.sdk.buffer import DiskBuffer
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.registry import load_config, load_connector
from connectors.sdk.runner import REASON_HEADER, ConnectorRunner, make_publisher
from twin.readings import (
    SCHEMA_HEADER,
    SCHEMA_VERSIONS,
    MeterIndex,
    now_ms,
    validate_envelope,
)


class ConformanceError(AssertionError):
    """The connector broke the contract; the message says how."""


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, kept so a run ends with a one-line-per-check summary."""

    name: str
    passed: bool
    figure: str  # what was measured; on a failure, the figure that failed

    def line(self) -> str:
        return f"{self.name:<28} {'PASS' if self.passed else 'FAIL'}  {self.figure}"


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
        self.connected_on_open = inner.connected_on_open

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


class CounterSource(Protocol):
    """The hook a connector author writes over their source so the kit can drive its counter.

    One cumulative counter, which the connector under test maps onto one meter. The kit sets
    only whole multiples of the ``step`` it is given, so integer registers work as they are.
    """

    async def set_total(self, total: float) -> None:
        """From now on the source reads ``total`` (the counter's cumulative value)."""

    async def stop(self) -> None:
        """Take the source away: drop open connections, refuse new ones (a device reboot)."""

    async def start(self) -> None:
        """Bring the source back after ``stop``, at the same address, reading the last total."""


@dataclass(frozen=True)
class _Phase:
    name: str
    totals: tuple[int, ...]  # in steps, set one after the other, each held for some polls
    action: str = ""  # "source-restart" | "process-restart": done before the totals are set


#: What the kit feeds, in steps. The connector starts on 100 (its first poll: a baseline).
_START = 100
_SCENARIO = (
    _Phase("metering.first-poll", ()),
    _Phase("metering.increase", (103, 108, 116)),
    _Phase("metering.repeated-snapshot", (116, 116)),
    _Phase("metering.counter-reset", (0,)),
    _Phase("metering.after-reset", (4, 9)),
    _Phase("metering.source-restart", (15,), "source-restart"),
    _Phase("metering.process-restart", (22,), "process-restart"),
    _Phase("metering.after-restart", (24,)),
)


def true_increase(previous: float, totals: Sequence[float]) -> float:
    """What a counter really counted across ``totals``: a drop is a reset, after which the
    counter counted up from zero (the kit resets to exactly zero, so any reset rule agrees)."""
    out = 0.0
    for total in totals:
        out += total - previous if total >= previous else total
        previous = total
    return out


class _Watched(Connector[Any]):
    """Counts the connector's successful opens and the batches it yields: the kit waits on
    polls, not on wall-clock guesses, so slow and fast sources are judged alike."""

    def __init__(self, inner: Connector[Any]) -> None:
        super().__init__(inner.config, inner.index)
        self.inner, self.opens, self.batches = inner, 0, 0
        self.connected_on_open = inner.connected_on_open

    async def open(self) -> None:
        await self.inner.open()
        self.opens += 1

    async def close(self) -> None:
        await self.inner.close()

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        async for batch in self.inner.stream():
            self.batches += 1
            yield batch


@dataclass
class _Process:
    """One connector process of a metering run (the kit starts two on the same dirs)."""

    watched: _Watched
    runner: ConnectorRunner
    task: asyncio.Task[ConnectorMetrics]
    metrics: ConnectorMetrics


class _MeteringMixin:
    """The metering checks of :class:`ConformanceKit` (kept apart: they drive a scenario)."""

    bootstrap: str
    results: list[CheckResult]
    _isolated: Callable[[ConnectorConfig, str], ConnectorConfig]
    collect: Callable[..., ConformanceReport]

    def _start(
        self, make: Callable[[ConnectorConfig], Connector[Any]], cfg: ConnectorConfig
    ) -> _Process:
        watched = _Watched(make(cfg))
        metrics = ConnectorMetrics()
        publisher = make_publisher(cfg, metrics, bootstrap=self.bootstrap)
        runner = ConnectorRunner(
            watched, publisher, metrics=metrics, backoff=Backoff(initial=0.05, maximum=0.5)
        )
        return _Process(watched, runner, asyncio.create_task(runner.run(drain_timeout=60)), metrics)

    @staticmethod
    async def _until(proc: _Process, done: Callable[[], bool], what: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            if proc.task.done():
                await proc.task
                raise ConformanceError(f"metering: the connector ended while waiting for {what}")
            if loop.time() > deadline:
                raise ConformanceError(f"metering: no {what} in {timeout:.0f} s")
            await asyncio.sleep(0.02)

    async def _polls(self, proc: _Process, n: int, timeout: float) -> None:
        """Wait for ``n`` more batches: at least one poll began after the last change."""
        goal = proc.watched.batches + n
        await self._until(proc, lambda: proc.watched.batches >= goal, f"{n} polls", timeout)

    async def _restart_source(
        self, proc: _Process, source: CounterSource, total: float, polls: int, timeout: float
    ) -> None:
        """Stop the source, let the connector notice, move the counter on, start it again."""
        before, opens = proc.metrics.source_reconnects, proc.watched.opens
        await source.stop()
        await self._until(
            proc,
            lambda: proc.metrics.source_reconnects > before,
            "reconnect after the source stopped",
            timeout,
        )
        await source.set_total(total)  # counted while the connector could not see it
        await source.start()
        await self._until(proc, lambda: proc.watched.opens > opens, "reopen of the source", timeout)
        await self._polls(proc, polls, timeout)

    async def check_metering(
        self,
        make: Callable[[ConnectorConfig], Connector[Any]],
        config: ConnectorConfig,
        index: MeterIndex,
        source: CounterSource,
        *,
        meter: str,
        step: float = 1.0,
        scale: float = 1.0,
        polls: int = 2,
        timeout: float = 30.0,
    ) -> list[CheckResult]:
        """Drive ``source`` through the scenario; check each phase's published intervals.

        ``meter``: where the connector publishes the counter; ``step``: the counter's
        increment unit as the source holds it (e.g. 1000 for a Wh register); ``scale``:
        published unit per source unit (the connector's scaling). Readings must be stamped
        with the poll's (or the source's) time on this host: the kit attributes them to
        phases by timestamp. Raises ConformanceError naming every failed phase.
        """
        cfg = self._isolated(config, "metering")
        fed: list[tuple[str, int, list[int]]] = []  # (phase, started at ms, totals set)
        await source.set_total(_START * step)
        fed.append((_SCENARIO[0].name, now_ms(), []))
        procs = [self._start(make, cfg)]
        try:
            await self._polls(procs[-1], polls + 1, timeout)
            for phase in _SCENARIO[1:]:
                fed.append((phase.name, now_ms(), list(phase.totals)))
                proc = procs[-1]
                if phase.action == "source-restart":
                    await self._restart_source(proc, source, phase.totals[0] * step, polls, timeout)
                    continue
                if phase.action == "process-restart":
                    proc.runner.stop()
                    await proc.task
                    await source.set_total(phase.totals[0] * step)  # counted while down
                    procs.append(self._start(make, cfg))
                    await self._polls(procs[-1], polls + 1, timeout)
                    continue
                for total in phase.totals:
                    await source.set_total(total * step)
                    await self._polls(proc, polls, timeout)
        finally:
            for proc in procs:
                proc.runner.stop()
                with contextlib.suppress(Exception):
                    await proc.task
        merged = ConnectorMetrics()
        for proc in procs:
            merged.add(
                readings_accepted=proc.metrics.readings_accepted,
                readings_rejected=proc.metrics.readings_rejected,
                envelopes_sent=proc.metrics.envelopes_sent,
            )
        # restarts resend what was not confirmed durable: the same readings, counted once
        report = self.collect(cfg, index, merged, allow_duplicates=True)
        return self._judge(report, fed, meter=meter, step=step, scale=scale)

    def _judge(
        self,
        report: ConformanceReport,
        fed: list[tuple[str, int, list[int]]],
        *,
        meter: str,
        step: float,
        scale: float,
    ) -> list[CheckResult]:
        """Published vs true increase per phase, in total, and no negative interval."""
        values = [(r["ts"], float(r["value"])) for r in report.readings if r["meter"] == meter]
        results: list[CheckResult] = []
        previous, all_true = _START, 0.0
        ends = [start for _n, start, _t in fed[1:]] + [1 << 62]
        for (name, start, totals), end in zip(fed, ends, strict=True):
            truth = true_increase(previous, totals) * step * scale
            previous = totals[-1] if totals else previous
            all_true += truth
            got = sum(v for ts, v in values if start <= ts < end)
            results.append(_compare(name, got, truth))
        results.append(_compare("metering.sum", sum(v for _ts, v in values), all_true))
        negative = [v for _ts, v in values if v < 0]
        results.append(
            CheckResult(
                "metering.no-negative-interval",
                not negative,
                f"{len(negative)} negative intervals (lowest {min(negative):g})"
                if negative
                else f"{len(values)} intervals, none negative",
            )
        )
        self.results += results
        failed = [r for r in results if not r.passed]
        if failed:
            raise ConformanceError(
                "metering: " + "; ".join(f"{r.name}: {r.figure}" for r in failed)
            )
        return results


def _compare(name: str, got: float, truth: float) -> CheckResult:
    ok = abs(got - truth) <= 1e-6 * max(1.0, abs(truth))
    return CheckResult(name, ok, f"published {got:g}, true increase {truth:g}")


class ConformanceKit(_MeteringMixin):
    def __init__(self, kafka_bootstrap: str, work_dir: Path) -> None:
        self.bootstrap = kafka_bootstrap
        self.work_dir = Path(work_dir)
        self.topics: list[str] = []  # made for this kit's runs, dropped by drop_topics
        self.results: list[CheckResult] = []  # every check's verdict, in the order run

    def summary(self) -> str:
        """One line per check run so far: name, PASS/FAIL, the figure."""
        return "\n".join(r.line() for r in self.results)

    @contextlib.contextmanager
    def _checking(self, name: str) -> Iterator[list[str]]:
        """Record ``name``'s verdict; the body appends its figure to the yielded list."""
        figure: list[str] = []
        try:
            yield figure
        except ConformanceError as exc:
            self.results.append(CheckResult(name, False, str(exc).splitlines()[0]))
            raise
        self.results.append(CheckResult(name, True, figure[0] if figure else "ok"))

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
        with self._checking(f"package {name}") as figure:
            cls = self._check_package(name)
            figure.append(f"entry point, config model, README, {cls.__name__}")
        return cls

    def _check_package(self, name: str) -> type[Connector[Any]]:
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
        seen: dict[tuple[str, int], tuple[Any, Any]] = {}
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
                figures = (r["value"], r.get("start"))
                if ident in seen:
                    # a resend after a crash is legal (the worker counts a (meter, ts) once)
                    # only when it is the same reading: another value would be counted
                    # by whichever copy the worker saw first
                    if allow_duplicates and seen[ident] == figures:
                        continue
                    if allow_duplicates:
                        raise ConformanceError(
                            f"{where}: reading {ident} sent again with other figures "
                            f"({seen[ident]} then {figures})"
                        )
                    raise ConformanceError(f"{where}: duplicate reading {ident}")
                seen[ident] = figures
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
        with self._checking("contract+reconnect") as figure:
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
            # Live sources may re-deliver around a reconnect (at-least-once): duplicates
            # allowed there, never losses or reordering.
            report = self.collect(
                cfg, index, metrics, allow_duplicates=disrupt is not None or redelivers
            )
            figure.append(
                f"{len(report.readings)} readings, {metrics.source_reconnects} reconnects"
            )
        return report

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
        with self._checking("buffering") as figure:
            report = await self._check_buffering(
                make, config, index, min_readings=min_readings, timeout=timeout
            )
            figure.append(f"{len(report.readings)} readings replayed from disk")
        return report

    async def _check_buffering(
        self,
        make: Callable[[ConnectorConfig], Connector[Any]],
        config: ConnectorConfig,
        index: MeterIndex,
        *,
        min_readings: int,
        timeout: float,
    ) -> ConformanceReport:
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
