"""MQTT connector against a real Mosquitto: the stack's, and a private one restarted mid-run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from clustertwin.stack.mosquitto import Mosquitto
from connectors.mqtt import MqttConfig, MqttConnector
from connectors.sdk.conformance import ConformanceKit, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms

from .conftest import MINI

pytestmark = pytest.mark.integration


class Feeder(threading.Thread):
    """A site gateway: publishes numbered counters for two meters, QoS 1, in order."""

    def __init__(self, host: str, port: int, prefix: str, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.prefix, self.n, self.rate = host, port, prefix, n, rate
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"feed-{prefix}")
        self.client.max_queued_messages_set(0)
        # One QoS 1 message in flight: with a wider window, messages re-sent after a broker
        # restart can land after newer ones, and this gateway promises order.
        self.client.max_inflight_messages_set(1)
        self.t0 = now_ms() - self.n * 1000
        self.stop = threading.Event()
        # Publish only while connected: messages paho queues during a broker outage were
        # seen to land out of order after it (a gateway that promises order waits instead).
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.on_disconnect = lambda *_a: self.connected.clear()

    def run(self) -> None:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        for i in range(self.n):
            while not self.connected.wait(0.1):
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                break
            meter = "bf-gas" if i % 2 == 0 else "mill-power"
            body = orjson.dumps({"value": 1.0 + i, "ts": self.t0 + i * 1000})
            if i == 7:
                body = b'{"value": "lots"}'
            self.client.publish(f"{self.prefix}/steelworks/{meter}/energy", body, qos=1)
            time.sleep(1 / self.rate)

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        self.client.loop_stop()
        self.client.disconnect()


def config(host: str, port: int, prefix: str) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "connector": "mqtt",
            "name": f"it-{prefix}",
            "cluster": str(MINI),
            "host": host,
            "port": port,
            "client_id": f"ct-{prefix}",
            "topics": [{"topic": f"{prefix}/steelworks/+/energy", "meter": "{2}"}],
            "batch": {"max_delay_ms": 100},
        }
    )


def test_mqtt_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("mqtt") is MqttConnector


def test_mqtt_contract_with_persistent_session_loses_nothing(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, unique_name: str
) -> None:
    prefix = unique_name.replace("/", "-")
    cfg = config(stack.mqtt_host, stack.mqtt_port, prefix)
    # more than the run reads: a QoS 1 repeat after the injected failure counts as a
    # sample, so the run may stop a few readings short of the 600th
    feeder = Feeder(stack.mqtt_host, stack.mqtt_port, prefix, n=640, rate=400)

    async def run():  # type: ignore[no-untyped-def]
        async def start_feeding() -> None:
            await asyncio.sleep(1.0)  # let the connector subscribe first
            feeder.start()

        asyncio.get_running_loop().create_task(start_feeding())
        # QoS 1: a message whose PUBACK had not reached the broker when the injected
        # failure dropped the connection comes again (seen once in CI under load)
        return await conformance.check_contract(
            lambda c: MqttConnector(c, mini_index),
            cfg,
            mini_index,
            min_readings=600,
            redelivers=True,
        )

    try:
        report = asyncio.run(run())
    finally:
        feeder.close()
    # The injected disconnect happened mid-feed; the broker kept the session's messages:
    # what came is every reading up to the last one read, without a hole.
    values = sorted(r["value"] for r in report.readings)
    assert len(values) >= 590
    assert values == [1.0 + i for i in range(int(values[-1])) if i != 7]
    assert len(report.deadletters) == 1
    assert b"lots" in report.deadletters[0].value


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), root=tmp_path)
    broker.start(lambda _m: None)
    try:
        yield broker
    finally:
        broker.stop()


def test_mqtt_survives_a_broker_restart(
    stack: StackHandle,
    conformance: ConformanceKit,
    mini_index: MeterIndex,
    private_broker: Mosquitto,
) -> None:
    cfg = config(private_broker.host, private_broker.port, "restart")
    feeder = Feeder(private_broker.host, private_broker.port, "restart", n=100_000, rate=300)

    async def disrupt() -> None:
        await asyncio.to_thread(private_broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_broker.start, lambda _m: None)

    async def run():  # type: ignore[no-untyped-def]
        async def start_feeding() -> None:
            await asyncio.sleep(1.0)
            feeder.start()

        asyncio.get_running_loop().create_task(start_feeding())
        return await conformance.check_contract(
            lambda c: MqttConnector(c, mini_index),
            cfg,
            mini_index,
            min_readings=900,
            disrupt=disrupt,
            timeout=120,
        )

    try:
        report = asyncio.run(run())
    finally:
        feeder.close()
    assert report.metrics["source_reconnects"] >= 1
    assert len(report.readings) >= 800


def test_mqtt_buffers_while_kafka_is_unreachable(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, unique_name: str
) -> None:
    prefix = unique_name.replace("/", "-") + "-buf"
    feeder = Feeder(stack.mqtt_host, stack.mqtt_port, prefix, n=300, rate=400)

    async def run():  # type: ignore[no-untyped-def]
        async def start_feeding() -> None:
            await asyncio.sleep(1.0)
            feeder.start()

        asyncio.get_running_loop().create_task(start_feeding())
        return await conformance.check_buffering(
            lambda c: MqttConnector(c, mini_index),
            config(stack.mqtt_host, stack.mqtt_port, prefix),
            mini_index,
            min_readings=300,
        )

    try:
        report = asyncio.run(run())
    finally:
        feeder.close()
    assert sorted(r["value"] for r in report.readings) == [1.0 + i for i in range(300) if i != 7]
