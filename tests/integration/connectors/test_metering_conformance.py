"""The kit's metering checks: they fail on the two broken counter connectors authors wrote,
pass on a right one, and judge the built-in Modbus connector in counter mode."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from connectors.modbus import ModbusConfig, ModbusConnector
from connectors.sdk.base import Connector, ConnectorConfig
from connectors.sdk.conformance import ConformanceError, ConformanceKit, free_port, true_increase
from twin.readings import MeterIndex

from .conftest import MINI
from .counter_fixtures import (
    BaselineConnector,
    CounterConfig,
    ForgetfulConnector,
    RawTotalConnector,
    counter_server,
)
from .test_modbus import MeterServer, meter_server

pytestmark = pytest.mark.integration


def counter_config(port: int) -> CounterConfig:
    return CounterConfig.model_validate(
        {
            "connector": "counter-fixture",
            "name": "it-counter",
            "cluster": str(MINI),
            "port": port,
            "meter": "mill-power",
            "poll_interval_s": 0.03,
            "batch": {"max_delay_ms": 50},
        }
    )


async def _run_checks(
    kit: ConformanceKit, cls: type[Connector[Any]], index: MeterIndex
) -> dict[str, bool]:
    port = free_port()

    def make(cfg: ConnectorConfig) -> Connector[Any]:
        return cls(cfg, index)

    async with counter_server(port) as source:
        with contextlib.suppress(ConformanceError):  # the verdicts are in kit.results
            await kit.check_metering(
                make, counter_config(port), index, source, meter="mill-power", step=0.5
            )
    print(kit.summary())
    return {r.name: r.passed for r in kit.results}


def run_checks(
    kit: ConformanceKit, cls: type[Connector[Any]], index: MeterIndex
) -> dict[str, bool]:
    return asyncio.run(_run_checks(kit, cls, index))


def test_true_increase_counts_a_reset_from_zero() -> None:
    assert true_increase(100, [103, 103, 0, 4, 9]) == 3 + 4 + 5


def test_metering_checks_pass_a_connector_keeping_its_baseline(
    conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    verdicts = run_checks(conformance, BaselineConnector, mini_index)
    assert verdicts and all(verdicts.values()), conformance.summary()
    assert len(verdicts) == 10  # 8 phases, the sum, no negative interval


def test_metering_checks_fail_the_raw_total_connector(
    conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    verdicts = run_checks(conformance, RawTotalConnector, mini_index)
    assert not verdicts["metering.first-poll"]
    assert not verdicts["metering.repeated-snapshot"]
    assert not verdicts["metering.sum"]


def test_metering_checks_fail_the_connector_forgetting_its_baseline(
    conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    verdicts = run_checks(conformance, ForgetfulConnector, mini_index)
    assert not verdicts["metering.source-restart"]
    assert not verdicts["metering.process-restart"]
    assert not verdicts["metering.sum"]
    # what it does right is still judged right: the fault is located, not smeared
    assert verdicts["metering.increase"] and verdicts["metering.after-reset"]


class _ModbusCounter:
    """The kit's CounterSource over the Modbus test meter: the plant is paused, the kit
    writes the energy register itself (kept while the device is down, written on start)."""

    def __init__(self, server: MeterServer) -> None:
        self.server = server
        self.total = 0

    async def set_total(self, total: float) -> None:
        self.total = int(total)
        if self.server.server is not None:
            convert = AsyncModbusTcpClient.convert_to_registers
            words = convert(self.total, AsyncModbusTcpClient.DATATYPE.UINT32)
            await self.server.server.async_setValues(1, 16, 0x100, words)

    async def stop(self) -> None:
        await self.server.stop()

    async def start(self) -> None:
        await self.server.start()
        self.pause()
        await self.set_total(self.total)

    def pause(self) -> None:
        if self.server.writer is not None:
            self.server.writer.cancel()


def test_modbus_counter_mode_passes_the_metering_checks(
    conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    asyncio.run(_modbus_checks(conformance, mini_index))


async def _modbus_checks(conformance: ConformanceKit, mini_index: MeterIndex) -> None:
    from .test_modbus import config as modbus_config

    async with meter_server() as server:
        source = _ModbusCounter(server)
        source.pause()
        cfg: ModbusConfig = modbus_config(server.port)
        try:
            await conformance.check_metering(
                lambda c: ModbusConnector(c, mini_index),  # type: ignore[arg-type]
                cfg,
                mini_index,
                source,
                meter="mill-power",
                step=100_000,  # Wh
                scale=1e-6,  # the register map's Wh -> MWh
            )
        finally:
            print(conformance.summary())
