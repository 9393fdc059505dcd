"""Sparkplug counters and rates through the SDK's metering, across connector restarts.

A spec-written edge node (tests/sparkplug_spec.py) on the real Mosquitto, the real Kafka.
The connector keeps only its metering baselines in the state store; births, aliases, seq
and bdSeq are learnt again from the rebirth it asks for on start. What reaches ``readings``
must equal the offline computation over the node's log: the counter's intervals sum to its
true increase — across a restart of the connector between two data messages, a rebirth
with the next bdSeq and a counter reset — none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.mqtt import MqttConfig, MqttConnector
from connectors.sdk.base import ConnectorConfig
from connectors.sdk.conformance import ConformanceKit, consume_all, true_increase
from connectors.sdk.metering import StateStore
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import REASON_HEADER, ConnectorRunner, make_publisher
from tests.conftest import StackHandle
from tests.sparkplug_spec import DOUBLE, EdgeNode, M
from twin.readings import MeterIndex, now_ms, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration

NODE, DEVICE = "gw1", "plc1"
COUNTER, RATE = "Energy/Mill", "Shore/Power"  # a kWh... total in MWh, a power in kW


def _config(stack: StackHandle, group: str, name: str, buffer: Path) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "connector": "mqtt",
            "name": f"it-{name}"[:80],
            "cluster": str(MINI),
            "host": stack.mqtt_host,
            "port": stack.mqtt_port,
            "client_id": f"ct-{name}"[:60],
            "sparkplug": {
                "group": group,
                "rebirth_retry_s": 0.5,
                "metrics": [
                    {"node": NODE, "metric": COUNTER, "meter": "mill-power", "mode": "counter"},
                    {
                        "node": NODE,
                        "metric": RATE,
                        "meter": "berth1-shore",
                        "mode": "rate",
                        "unit": "kW",
                    },
                ],
            },
            "kafka": {"topic": f"{name}-readings", "deadletter_topic": f"{name}-dl"},
            "buffer": {"dir": str(buffer)},
            "batch": {"max_delay_ms": 100},
        }
    )


class Meters:
    """The node's two metrics, one message at a time, a minute apart in source time."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.t0 = now_ms() - 3 * 3_600_000
        self.i = 0
        #: (ts, total, rate) of every value the node published, in order
        self.sent: list[tuple[int, float, float]] = []
        #: those a correct host could read (not queued before a birth it had yet to see)
        self.readable: list[bool] = []

    def metrics(self, total: float, rate: float, readable: bool = True) -> list[M]:
        self.i += 1
        ts = self.t0 + self.i * 60_000
        self.sent.append((ts, total, rate))
        self.readable.append(readable)
        return [M(COUNTER, 1, DOUBLE, total, ts=ts), M(RATE, 2, DOUBLE, rate, ts=ts)]

    def birth(self, total: float, rate: float) -> None:
        self.node.birth(self.metrics(total, rate), [])

    def data(self, total: float, rate: float, readable: bool = True) -> None:
        self.node.publish("NDATA", self.metrics(total, rate, readable), counted=readable)

    def until_asked(self) -> None:
        """Data while the connector knows no birth (it has none to read them by)."""
        for _ in range(100):
            self.node.publish("NDATA", [M(COUNTER, 1, DOUBLE, 0.0)], counted=False)
            if self.node.rebirth_event.wait(0.3):
                return


def offline(meters: Meters) -> tuple[list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """What a correct host publishes from the values it could read: the counter's increase
    between consecutive ones (a decrease is a reset: refused, new baseline), and the
    trapezoid of the power between consecutive ones (kW over ms -> MWh)."""
    seen = [s for s, ok in zip(meters.sent, meters.readable, strict=True) if ok]
    counter, rate = [], []
    for (t0, c0, r0), (t1, c1, r1) in itertools.pairwise(seen):
        if c1 >= c0:
            counter.append((t0, t1, c1 - c0))
        rate.append((t0, t1, (r0 + r1) / 2 * 0.001 * (t1 - t0) / 3_600_000))
    return counter, rate


async def run_connector(
    stack: StackHandle,
    cfg: MqttConfig,
    index: MeterIndex,
    metrics: ConnectorMetrics,
    work: Callable[[], None],
    want: int,
) -> None:
    """Run one connector process while ``work`` drives the edge node, until ``want``
    readings are in; then stop it (flushed, closed: as ``connector run`` on SIGTERM)."""
    runner = ConnectorRunner(
        MqttConnector(cfg, index),
        make_publisher(cfg, metrics, bootstrap=stack.kafka_bootstrap),
        metrics=metrics,
    )
    task = asyncio.create_task(runner.run(drain_timeout=60))
    await asyncio.sleep(1.0)  # subscribed (and the start's rebirth request sent)
    try:
        await asyncio.wait_for(asyncio.to_thread(work), 120)
        for _ in range(300):
            if metrics.readings_accepted >= want:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything extra would show up too
    finally:
        runner.stop()
        await task


def published(stack: StackHandle, cfg: MqttConfig, index: MeterIndex, envelopes: int) -> list[Any]:
    got = set()  # a reading resent after a restart is the same reading: the worker counts once
    for rec in consume_all(stack.kafka_bootstrap, cfg.kafka.topic, expect=envelopes):
        result = validate_envelope(rec.value, index, key=rec.key, headers=list(rec.headers.items()))
        assert not result.rejected
        got |= {(r["meter"], r["start"], r["ts"], r["value"]) for r in result.accepted}
    return sorted(got)


def test_counter_across_a_connector_restart_a_rebirth_and_a_reset(
    stack: StackHandle, mini_index: MeterIndex, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name.lower().replace("_", "-")
    cfg = _config(stack, f"m-{name[-12:]}", name, tmp_path / "buffer")
    node = EdgeNode(stack.mqtt_host, stack.mqtt_port, cfg.sparkplug.group or "", NODE, DEVICE)
    meters = Meters(node)

    def first() -> None:
        node.connect()
        meters.until_asked()
        node.wait_rebirth()
        meters.birth(1000.0, 100.0)
        meters.data(1010.0, 120.0)
        meters.data(1025.0, 90.0)

    def second() -> None:
        node.wait_rebirth()  # asked for by the new process on start, as the spec says
        meters.birth(1050.0, 110.0)  # closes the interval across the restart: 1025 -> 1050
        meters.data(1070.0, 100.0)
        meters.data(0.0, 80.0)  # the meter is reset: refused, the new baseline
        meters.data(8.0, 80.0)
        node.die()  # NDEATH; the counter goes on counting meanwhile
        node.connect()  # the next bdSeq: a new session of the edge node, born at once
        meters.birth(20.0, 60.0)
        meters.data(30.0, 70.0)

    m1, m2 = ConnectorMetrics(), ConnectorMetrics()
    try:
        asyncio.run(run_connector(stack, cfg, mini_index, m1, first, want=4))
        # the connector is down, between two data messages: the broker keeps this one for
        # the persistent session; the new process cannot read it (no birth yet)
        meters.data(1040.0, 100.0, readable=False)
        asyncio.run(run_connector(stack, cfg, mini_index, m2, second, want=11))
    finally:
        node.close()

    got = published(stack, cfg, mini_index, m1.envelopes_sent + m2.envelopes_sent)
    counter, rate = offline(meters)
    assert [(s, t, v) for m, s, t, v in got if m == "mill-power"] == counter
    got_rate = [(s, t, v) for m, s, t, v in got if m == "berth1-shore"]
    assert [(s, t) for s, t, _v in got_rate] == [(s, t) for s, t, _v in rate]
    assert [v for *_st, v in got_rate] == pytest.approx([v for *_st, v in rate], rel=1e-9)
    # the counter's true increase, from every total it held (the unreadable one too)
    totals = [total for _ts, total, _r in meters.sent]
    assert sum(v for _s, _t, v in counter) == true_increase(totals[0], totals[1:]) == 100.0
    reasons = [
        r.headers[REASON_HEADER].decode()
        for r in consume_all(
            stack.kafka_bootstrap,
            cfg.kafka.deadletter_topic,
            expect=m1.readings_rejected + m2.readings_rejected,
        )
    ]
    assert sum("counter.reset" in r for r in reasons) == 1
    assert any("before the node's birth" in r for r in reasons)
    assert m2.source_reconnects >= 1  # the NDEATH
    # what survives a restart: the metering's baselines, nothing of the Sparkplug session
    state = StateStore.for_connector(cfg).load()
    assert set(state) == {"counters", "rates", "outbox"} and state["outbox"] == []
    assert state["counters"] == {"mill-power": [meters.sent[-1][0], 30.0]}


class SparkplugCounter:
    """The conformance kit's CounterSource over the spec edge node: NDATA with the total
    every 50 ms, a birth whenever a rebirth is asked for; ``stop`` is an NDEATH and the
    node gone, ``start`` a new session (the next bdSeq) born with the total it held."""

    def __init__(self, node: EdgeNode) -> None:
        self.node, self.total = node, 0.0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    async def set_total(self, total: float) -> None:
        self.total = total

    async def start(self) -> None:
        await asyncio.to_thread(self.node.connect)
        self._halt.clear()
        self._thread = threading.Thread(target=self._speak, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self.node.die)

    def _speak(self) -> None:
        born = False
        while not self._halt.is_set():
            metric = [M(COUNTER, 1, DOUBLE, self.total, ts=now_ms())]
            if not born or self.node.rebirth_event.is_set():
                self.node.rebirth_event.clear()
                self.node.birth(metric, [])
                born = True
            else:
                self.node.publish("NDATA", metric, counted=True)
            time.sleep(0.05)


def test_sparkplug_counter_passes_the_metering_checks(
    stack: StackHandle,
    conformance: ConformanceKit,
    mini_index: MeterIndex,
    unique_name: str,
    tmp_path: Path,
) -> None:
    name = unique_name.lower().replace("_", "-")
    cfg = _config(stack, f"k-{name[-12:]}", name, tmp_path / "buffer")
    assert cfg.sparkplug is not None
    counter_only = cfg.sparkplug.model_copy(update={"metrics": cfg.sparkplug.metrics[:1]})
    cfg = cfg.model_copy(update={"sparkplug": counter_only})
    node = EdgeNode(stack.mqtt_host, stack.mqtt_port, counter_only.group or "", NODE, DEVICE)
    source = SparkplugCounter(node)

    def make(c: ConnectorConfig) -> MqttConnector:
        assert isinstance(c, MqttConfig)
        return MqttConnector(c, mini_index)

    async def run() -> None:
        await source.start()  # a live edge node before the connector comes
        try:
            await conformance.check_metering(
                make, cfg, mini_index, source, meter="mill-power", step=0.5
            )
        finally:
            await source.stop()

    try:
        asyncio.run(run())
    finally:
        node.close()
    assert len(conformance.results) == 10 and all(r.passed for r in conformance.results), (
        conformance.summary()
    )
    print(orjson.dumps([r.line() for r in conformance.results]).decode())
