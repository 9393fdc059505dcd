"""Sparkplug B through the MQTT connector: a spec-written edge node, the real Mosquitto, the
real Kafka. What reaches ``readings`` must equal what an offline reading of the edge node's
log says a correct host application publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.mqtt import MqttConfig, MqttConnector
from connectors.sdk.conformance import consume_all
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import REASON_HEADER, ConnectorRunner, make_publisher
from tests.conftest import StackHandle
from tests.sparkplug_spec import DOUBLE, FLOAT, INT32, UINT64, EdgeNode, M, Sent
from twin.readings import MeterIndex, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration

NODE, DEVICE = "gw1", "plc1"
#: (device, metric name) -> meter: what the config below maps; "Temperature" is not mapped
MAPPED = {
    (None, "Power/Mill"): "mill-power",
    (DEVICE, "Gas/BF"): "bf-gas",
    (DEVICE, "Coke/Total"): "bf-coke",
}


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
                    {"node": NODE, "device": d, "metric": m, "meter": meter}
                    for (d, m), meter in MAPPED.items()
                ],
            },
            "kafka": {"topic": f"{name}-readings", "deadletter_topic": f"{name}-dl"},
            "buffer": {"dir": str(buffer)},
            "batch": {"max_delay_ms": 100},
        }
    )


class Script:
    """The edge node's life: data before any birth, births, data by alias, a duplicate,
    bad/null/uncertain quality, a lost message, a reordered pair, a device death, a node
    death, and a reconnect with the next bdSeq."""

    def __init__(self, node: EdgeNode) -> None:
        self.node, self.i = node, 0
        self.t0 = int(time.time() * 1000) - 3_600_000

    def _step(self) -> int:
        self.i += 1
        return self.t0 + self.i * 1000

    def node_metrics(self) -> list[M]:
        ts = self._step()
        return [
            M("Power/Mill", 1, DOUBLE, 100.0 + self.i, ts=ts),
            M("Temperature", 4, INT32, -5 - self.i, ts=ts),
        ]

    def device_metrics(self, **gas: Any) -> list[M]:
        ts = self._step()
        return [
            M("Gas/BF", 2, FLOAT, 0.25 * self.i, ts=ts, **gas),
            M("Coke/Total", 3, UINT64, 1000 + self.i, ts=ts),
        ]

    def birth(self) -> None:
        self.node.wait_rebirth()
        self.node.birth(self.node_metrics(), self.device_metrics())

    def rounds(self, n: int, *, counted: bool = True) -> None:
        for _ in range(n):
            self.node.publish("NDATA", self.node_metrics(), counted=counted)
            self.node.publish("DDATA", self.device_metrics(), counted=counted, device=DEVICE)

    def data_until_asked(self) -> None:
        """Data while the connector knows no birth: repeated until it asks for one."""
        for _ in range(100):
            self.node.publish("NDATA", self.node_metrics(), counted=False, seq=self.node.seq)
            if self.node.rebirth_event.wait(0.3):
                return

    def run(self) -> None:
        node = self.node
        node.connect()
        self.data_until_asked()
        self.birth()
        self.rounds(3)
        body = node.publish("DDATA", self.device_metrics(), counted=True, device=DEVICE)
        node.seq -= 1  # QoS 1 redelivery: the same bytes, the same seq
        node.publish("DDATA", [], counted=False, device=DEVICE, raw=body)
        for gas in ({"quality": 0}, {"is_null": True}, {"quality": 64}, {"quality": 500}):
            node.publish("DDATA", self.device_metrics(**gas), counted=True, device=DEVICE)
        node.seq += 1  # a lost message
        node.publish("DDATA", self.device_metrics(), counted=False, device=DEVICE)
        self.birth()
        self.rounds(2)
        k = node.seq  # a reordered pair: k+1 arrives before k
        later = self.node_metrics()
        node.publish("NDATA", later, counted=False, seq=(k + 1) % 256)
        node.publish("NDATA", self.node_metrics(), counted=False, seq=k)
        node.seq = (k + 2) % 256
        self.birth()
        self.rounds(2)
        node.publish("DDEATH", [], counted=False, device=DEVICE)
        node.die()
        time.sleep(1.0)  # a reconnecting edge node; the rebirth spacing (0.5 s) is over
        node.connect()
        self.data_until_asked()
        self.birth()
        self.rounds(3)


def expected_readings(log: list[Sent]) -> list[tuple[str, int, float, str]]:
    """The offline computation: every mapped metric of every message a correct host reads,
    bar null values and BAD/STALE quality; uncertain quality becomes ``estimated``."""
    out = []
    for sent in log:
        if not sent.counted:
            continue
        for m in sent.metrics:
            meter = MAPPED.get((sent.device, m.name))
            if meter is None or m.is_null or m.quality in (0, 500):
                continue
            quality = "estimated" if m.quality == 64 else "measured"
            out.append((meter, m.ts, float(m.value), quality))
    return sorted(out)


async def run_connector(
    stack: StackHandle,
    cfg: MqttConfig,
    index: MeterIndex,
    metrics: ConnectorMetrics,
    work: Callable[[], None],
    node: EdgeNode,
    already: int = 0,
) -> None:
    """Run the connector while ``work`` drives the edge node, until the readings the
    node's log calls for (less ``already`` published by an earlier run) are in."""
    runner = ConnectorRunner(
        MqttConnector(cfg, index),
        make_publisher(cfg, metrics, bootstrap=stack.kafka_bootstrap),
        metrics=metrics,
    )
    task = asyncio.create_task(runner.run(drain_timeout=60))
    await asyncio.sleep(1.0)  # subscribed before the edge node speaks
    try:
        await asyncio.wait_for(asyncio.to_thread(work), 120)
        want = len(expected_readings(node.log)) - already
        for _ in range(200):
            if metrics.readings_accepted >= want:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything extra would show up too
    finally:
        runner.stop()
        await task


def published(stack: StackHandle, cfg: MqttConfig, index: MeterIndex, envelopes: int) -> list[Any]:
    got = []
    for rec in consume_all(stack.kafka_bootstrap, cfg.kafka.topic, expect=envelopes):
        headers = list(rec.headers.items())
        result = validate_envelope(rec.value, index, key=rec.key, headers=headers)
        assert not result.rejected
        got += [(r["meter"], r["ts"], r["value"], r["quality"].value) for r in result.accepted]
    return sorted(got)


def test_sparkplug_edge_node_to_readings(
    stack: StackHandle, mini_index: MeterIndex, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name.lower().replace("_", "-")
    group = f"g-{name[-12:]}"
    cfg = _config(stack, group, name, tmp_path / "buffer")
    node = EdgeNode(stack.mqtt_host, stack.mqtt_port, group, NODE, DEVICE)
    script = Script(node)
    metrics = ConnectorMetrics()
    try:
        asyncio.run(run_connector(stack, cfg, mini_index, metrics, script.run, node))
    finally:
        node.close()

    got = published(stack, cfg, mini_index, metrics.envelopes_sent)
    assert got == expected_readings(node.log)
    # every rebirth the connector needed was asked for on the NCMD topic: before any
    # birth (twice), after the lost message and after the reordered pair
    assert node.rebirths >= 4
    # both deaths made the source unavailable; the persistent session lost nothing meanwhile
    assert metrics.source_reconnects >= 1 and "died" in (metrics.last_error or "")
    reasons = [
        r.headers[REASON_HEADER].decode()
        for r in consume_all(
            stack.kafka_bootstrap, cfg.kafka.deadletter_topic, expect=metrics.readings_rejected
        )
    ]
    count = lambda text: sum(text in r for r in reasons)  # noqa: E731
    assert count("where") == 2  # seq gap: the lost message, the reordered pair
    assert count("is_null") == 1 and count("quality BAD or STALE") == 2
    assert count("before the node's birth") >= 3  # two pre-birth phases + the pair's second
    assert len(reasons) == count("where") + 3 + count("before the node's birth")


def test_sparkplug_connector_restart_needs_a_rebirth(
    stack: StackHandle, mini_index: MeterIndex, unique_name: str, tmp_path: Path
) -> None:
    """A new connector process knows no birth: what the broker kept for its persistent
    session while it was down is data by alias it cannot read. It asks for a rebirth and
    reads on from there; the aliases of the old process are not assumed."""
    name = unique_name.lower().replace("_", "-")
    group = f"r-{name[-12:]}"
    cfg = _config(stack, group, name, tmp_path / "buffer")
    node = EdgeNode(stack.mqtt_host, stack.mqtt_port, group, NODE, DEVICE)
    script = Script(node)

    def first() -> None:
        node.connect()
        script.data_until_asked()
        script.birth()
        script.rounds(3)

    def second() -> None:
        script.birth()  # asked for by the new process, on the queued data
        script.rounds(2)

    m1, m2 = ConnectorMetrics(), ConnectorMetrics()
    try:
        asyncio.run(run_connector(stack, cfg, mini_index, m1, first, node))
        script.rounds(2, counted=False)  # the connector is down: the broker keeps these
        asyncio.run(run_connector(stack, cfg, mini_index, m2, second, node, m1.readings_accepted))
    finally:
        node.close()
    got = published(stack, cfg, mini_index, m1.envelopes_sent + m2.envelopes_sent)
    assert got == expected_readings(node.log)
    assert node.rebirths >= 2
    assert m2.readings_rejected >= 1  # the kept data, dead-lettered as before a birth
