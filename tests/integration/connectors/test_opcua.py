"""OPC UA connector against a real asyncua server, stopped and started again mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from asyncua import Server, ua

from connectors.opcua import OpcUaConfig, OpcUaConnector
from connectors.sdk.conformance import ConformanceKit, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex

from .conftest import MINI

pytestmark = pytest.mark.integration
logging.getLogger("asyncua").setLevel(logging.ERROR)


class PlantServer:
    """An OPC UA server of a plant: two interval quantities, updated by the 'process'."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/plant"
        self.server: Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.n = 0

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:clustertwin:test-plant")
        obj = await server.nodes.objects.add_object(ua.NodeId("Plant", ns), "Plant")
        gas = await obj.add_variable(ua.NodeId("Furnace.Gas_MWh", ns), "Gas", 0.0)
        power = await obj.add_variable(ua.NodeId("Mill.Power_kWh", ns), "Power", 0.0)
        text = await obj.add_variable(ua.NodeId("Mill.Text", ns), "Text", "idle")
        await server.start()
        self.server, self.ns = server, ns
        self.task = asyncio.create_task(self._process(gas, power, text))

    async def _process(self, gas, power, text) -> None:  # type: ignore[no-untyped-def]
        while True:
            self.n += 1
            now = datetime.now(UTC)
            for node, value in ((gas, 10.0 + self.n % 5), (power, 900.0 + self.n % 11)):
                await node.write_value(
                    ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now)
                )
            if self.n == 5:
                await text.write_value("running")
            await asyncio.sleep(0.03)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.server is not None:
            await self.server.stop()
            self.server = None


@contextlib.asynccontextmanager
async def plant() -> AsyncIterator[PlantServer]:
    server = PlantServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(server: PlantServer) -> OpcUaConfig:
    ns = server.ns
    return OpcUaConfig.model_validate(
        {
            "connector": "opcua",
            "name": "it-opcua",
            "cluster": str(MINI),
            "endpoint": server.endpoint,
            "publishing_interval_ms": 50,
            "watchdog_s": 0.5,
            "timeout_s": 2,
            "nodes": [
                {"node_id": f"ns={ns};s=Furnace.Gas_MWh", "meter": "bf-gas"},
                {"node_id": f"ns={ns};s=Mill.Power_kWh", "meter": "mill-power", "unit": "kWh"},
                {"node_id": f"ns={ns};s=Mill.Text", "meter": "mill-power"},
            ],
            "batch": {"max_delay_ms": 100},
        }
    )


def test_opcua_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("opcua") is OpcUaConnector


def test_opcua_contract_and_server_restart(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    async def run():  # type: ignore[no-untyped-def]
        async with plant() as server:

            async def disrupt() -> None:
                await server.stop()
                await asyncio.sleep(1.0)
                await server.start()

            return await conformance.check_contract(
                lambda c: OpcUaConnector(c, mini_index),
                config(server),
                mini_index,
                min_readings=150,
                disrupt=disrupt,
                timeout=120,
            )

    report = asyncio.run(run())
    assert report.metrics["source_reconnects"] >= 1
    gas = [r["value"] for r in report.readings if r["meter"] == "bf-gas"]
    power = [r["value"] for r in report.readings if r["meter"] == "mill-power"]
    assert set(gas) <= {10.0, 11.0, 12.0, 13.0, 14.0} and len(gas) > 20
    assert power and all(900.0 <= v <= 910.0 for v in power)
    reasons = [dl.headers["clustertwin-reason"].decode() for dl in report.deadletters]
    assert any("is not a number" in r for r in reasons)  # the text node, not a crash


def test_opcua_buffers_while_kafka_is_unreachable(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    async def run():  # type: ignore[no-untyped-def]
        async with plant() as server:
            return await conformance.check_buffering(
                lambda c: OpcUaConnector(c, mini_index),
                config(server),
                mini_index,
                min_readings=60,
            )

    report = asyncio.run(run())
    assert len(report.readings) >= 50
