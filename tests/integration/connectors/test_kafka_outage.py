"""A Kafka outage mid-run: the connector buffers on disk and delivers everything, in order.

The shared stack's broker is not ours to stop, so this test runs a private Apache Kafka
3.9.1 broker (the stack's own jars and launcher, on free ports, data in a temp dir), kills it
while a connector is publishing, and brings it back on the same data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustertwin.stack.kafka import KAFKA_VERSION, Kafka
from clustertwin.stack.process import ManagedProcess
from clustertwin_base.settings import cache_dir
from connectors.sdk.conformance import consume_all, free_port
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import ConnectorRunner, make_publisher
from connectors.simulator import SimulatorConfig, SimulatorConnector
from tests.conftest import StackHandle
from twin.readings import MeterIndex, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration


@pytest.fixture
def private_kafka(stack: StackHandle, tmp_path: Path) -> Iterator[Kafka]:
    # ``stack`` first: it installs the Kafka jars this broker runs from.
    broker = Kafka(port=free_port(), controller_port=free_port(), root=tmp_path)
    broker.home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    broker.libs = broker.home / "libs"
    broker.run_dir = tmp_path / "kafka"
    broker.data_dir = broker.run_dir / "data"
    broker.process = ManagedProcess("kafka", broker.run_dir)
    broker.start(lambda _m: None)
    try:
        yield broker
    finally:
        broker.stop()


def test_kafka_outage_loses_nothing_and_keeps_order(
    private_kafka: Kafka, mini_index: MeterIndex, tmp_path: Path
) -> None:
    bootstrap = f"{private_kafka.host}:{private_kafka.port}"
    cfg = SimulatorConfig.model_validate(
        {
            "connector": "simulator",
            "name": "outage",
            "cluster": str(MINI),
            "step_s": 60,
            "start": "now-2d",
            "speedup": 1200,  # 20 intervals/s x 5 meters: a steady stream
            "kafka": {"topic": "outage-readings", "delivery_timeout_ms": 4000, "linger_ms": 5},
            "batch": {"max_readings": 50, "max_delay_ms": 200},
            "buffer": {"dir": str(tmp_path / "buffer")},
        }
    )
    metrics = ConnectorMetrics()
    runner = ConnectorRunner(
        SimulatorConnector(cfg, mini_index),
        make_publisher(cfg, metrics, bootstrap=bootstrap),
        metrics=metrics,
    )
    total = 2500

    async def scenario() -> dict[str, int]:
        task = asyncio.create_task(runner.run(max_readings=total, drain_timeout=120))
        while metrics.readings_sent < 300:
            assert not task.done()
            await asyncio.sleep(0.1)
        await asyncio.to_thread(private_kafka.stop)  # the broker dies mid-stream
        sent_at_outage = metrics.readings_sent
        await asyncio.sleep(6)
        during = {
            "sent_at_outage": sent_at_outage,
            "sent_during": metrics.readings_sent,
            "accepted_during": metrics.readings_accepted,
        }
        await asyncio.to_thread(private_kafka.start, lambda _m: None)
        await task
        return during

    during = asyncio.run(scenario())
    # While Kafka was down the source kept going and nothing was acknowledged.
    assert during["accepted_during"] > during["sent_at_outage"] + 200
    assert during["sent_during"] <= during["sent_at_outage"] + 100  # only in-flight ones
    assert metrics.kafka_failures >= 1

    records = consume_all(bootstrap, "outage-readings", expect=metrics.envelopes_sent)
    seen: dict[tuple[str, int], float] = {}
    last: dict[str, int] = {}
    for rec in records:
        for r in validate_envelope(rec.value, mini_index).accepted:
            key = (r["meter"], r["ts"])
            if key in seen:
                assert seen[key] == r["value"]  # a redelivery, not a different value
                continue
            seen[key] = r["value"]
            assert r["ts"] > last.get(r["meter"], 0), "a site's readings must stay in order"
            last[r["meter"]] = r["ts"]
    assert len(seen) == metrics.readings_accepted == total
