"""Modbus connector against a real pymodbus TCP server acting as an energy meter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.modbus import ModbusConfig, ModbusConnector, Register, plan_reads
from connectors.sdk.conformance import ConformanceKit, consume_all, free_port
from connectors.sdk.metering import StateStore
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration


class MeterServer:
    """A Modbus TCP energy meter: a pymodbus server and a 'plant' writing its registers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: ModbusTcpServer | None = None
        self.energy_wh = 0
        self.wh_per_tick = 250_000
        self.writer: asyncio.Task[None] | None = None
        self._zombies: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        device = SimDevice(
            id=1, simdata=[SimData(address=0, count=400, values=0, datatype=DataType.REGISTERS)]
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        self.writer = asyncio.create_task(self._plant())

    async def _plant(self) -> None:
        """The meter's own firmware updating its registers (in-process, as a device does)."""
        assert self.server is not None
        convert = AsyncModbusTcpClient.convert_to_registers
        dtype = AsyncModbusTcpClient.DATATYPE
        step = 0
        while True:
            step += 1
            self.energy_wh += self.wh_per_tick + 1000 * (step % 7)  # Wh since last update
            await self.server.async_setValues(1, 16, 0x100, convert(self.energy_wh, dtype.UINT32))
            await self.server.async_setValues(
                1, 16, 200, convert(3.25, dtype.FLOAT32, word_order="little")
            )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        if self.server is not None:
            # pymodbus 3.16's shutdown can wait on connections clients already closed;
            # the listening socket is closed first, which is all a restart needs.
            # (asyncio.wait, not wait_for: that shutdown also swallows cancellation.)
            self._zombies.append(asyncio.ensure_future(self.server.shutdown()))
            await asyncio.wait(self._zombies[-1:], timeout=2)
            self.server = None


def config(port: int) -> ModbusConfig:
    return ModbusConfig.model_validate(
        {
            "connector": "modbus",
            "name": "it-modbus",
            "cluster": str(MINI),
            "host": "127.0.0.1",
            "port": port,
            "poll_interval_s": 0.05,
            "timeout_s": 1,
            "registers": [
                {
                    "meter": "mill-power",
                    "address": 0x100,
                    "table": "input",
                    "type": "uint32",
                    "scale": 1e-6,
                    "unit": "MWh",
                    "mode": "counter",
                },
                {
                    "meter": "bf-coke",
                    "address": 200,
                    "type": "float32",
                    "word_order": "little",
                    "unit": "t",
                },
            ],
            "batch": {"max_delay_ms": 100},
        }
    )


@contextlib.asynccontextmanager
async def meter_server() -> AsyncIterator[MeterServer]:
    server = MeterServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def test_modbus_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("modbus") is ModbusConnector


def test_read_planning_merges_neighbours_and_respects_the_request_limit() -> None:
    regs = [
        Register(meter="a", address=0),
        Register(meter="b", address=4),
        Register(meter="c", address=100),
        Register(meter="d", address=2, table="input"),
        Register(meter="e", address=106, type="float64"),
    ]
    assert [(t, s, c, [m.meter for m in ms]) for t, s, c, ms in plan_reads(regs)] == [
        ("holding", 0, 6, ["a", "b"]),
        ("holding", 100, 10, ["c", "e"]),
        ("input", 2, 2, ["d"]),
    ]


def test_modbus_contract_and_server_restart(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    async def run():  # type: ignore[no-untyped-def]
        async with meter_server() as server:

            async def disrupt() -> None:
                await server.stop()
                await asyncio.sleep(0.5)
                server.energy_wh = 0  # the meter was swapped while the gateway was down
                # ... for a smaller one: its count stays below the old meter's for minutes,
                # however long the connector takes to reconnect on a loaded machine
                server.wh_per_tick = 1_000
                await server.start()

            return await conformance.check_contract(
                lambda c: ModbusConnector(c, mini_index),
                config(server.port),
                mini_index,
                min_readings=120,
                disrupt=disrupt,
                timeout=90,
            )

    report = asyncio.run(run())
    coke = [r["value"] for r in report.readings if r["meter"] == "bf-coke"]
    power = [r["value"] for r in report.readings if r["meter"] == "mill-power"]
    assert coke.count(3.25) > len(coke) // 2  # 0.0 only before the plant first writes
    assert set(coke) <= {0.0, 3.25}
    assert power and all(0.0 <= v < 50 for v in power)  # MWh per poll, never negative
    reasons = [dl.headers["clustertwin-reason"].decode() for dl in report.deadletters]
    assert any("counter went back" in r for r in reasons)


def test_modbus_illegal_address_is_a_dead_letter_not_a_crash(
    stack: StackHandle, mini_index: MeterIndex
) -> None:
    async def run() -> list[object]:
        async with meter_server() as server:
            cfg = config(server.port).model_copy(
                update={
                    "registers": [
                        Register(meter="bf-coke", address=5000, unit="t"),
                        Register(meter="bf-gas", address=10, type="float32", unit="MWh"),
                    ]
                }
            )
            conn = ModbusConnector(cfg, mini_index)
            await conn.open()
            try:
                return list(await conn.poll())
            finally:
                await conn.close()

    items = asyncio.run(run())
    bad = [i for i in items if type(i).__name__ == "BadSample"]
    good = [i for i in items if type(i).__name__ == "Sample"]
    assert len(bad) == 1 and "device answered" in bad[0].reason  # type: ignore[attr-defined]
    assert [g.meter for g in good] == ["bf-gas"]  # type: ignore[attr-defined]


def test_modbus_buffers_while_kafka_is_unreachable(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    async def run():  # type: ignore[no-untyped-def]
        async with meter_server() as server:
            return await conformance.check_buffering(
                lambda c: ModbusConnector(c, mini_index),
                config(server.port),
                mini_index,
                min_readings=60,
            )

    report = asyncio.run(run())
    assert len(report.readings) >= 59


WRAP = 2**32  # the uint32 register wraps here (Wh)


async def _connector_process(cfg: Path, bootstrap: str, env: dict[str, str]) -> Process:
    cli = str(Path(sys.executable).parent / "clustertwin")
    return await asyncio.create_subprocess_exec(
        cli, "connector", "run", str(cfg), "--bootstrap", bootstrap, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def test_a_killed_connector_counts_the_interval_across_its_restart_once(
    stack: StackHandle, mini_index: MeterIndex, tmp_path: Path, unique_name: str
) -> None:
    """The real path: a pymodbus meter whose uint32 Wh register wraps while the connector
    process is killed (SIGKILL: nothing flushed, nothing confirmed) and started again on
    the same buffer.dir. What reaches Kafka, with the worker's (meter, ts) dedupe, covers the
    whole time the plant counted, contiguously, and sums to what the register counted."""
    buf = tmp_path / "buf"
    cfg = config(502).model_dump(mode="json", exclude_none=True)
    cfg.update(
        name=unique_name,
        poll_interval_s=0.1,
        registers=[cfg["registers"][0]],  # mill-power, the counter
        kafka={"topic": unique_name, "deadletter_topic": f"{unique_name}-dl"},
        buffer={"dir": str(buf)},
    )
    env = {**os.environ, "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}
    start_wh = WRAP - 3_000_000  # wraps a few seconds in
    counted = {"wh": 0}

    async def set_register(server: MeterServer) -> None:
        assert server.server is not None
        words = AsyncModbusTcpClient.convert_to_registers(
            (start_wh + counted["wh"]) % WRAP, AsyncModbusTcpClient.DATATYPE.UINT32
        )
        await server.server.async_setValues(1, 16, 0x100, words)

    async def plant(server: MeterServer) -> None:
        while True:
            await asyncio.sleep(0.02)
            counted["wh"] += 25_000 + 1000 * (counted["wh"] % 7)
            await set_register(server)

    async def wait_for_baseline(proc: Process) -> None:
        state = buf / StateStore.FILE
        for _ in range(300):
            if state.exists() and orjson.loads(state.read_bytes())["state"].get("counters"):
                return
            assert proc.returncode is None, "the connector process died"
            await asyncio.sleep(0.05)
        raise AssertionError("no baseline saved within 15 s")

    async def run() -> int:
        async with meter_server() as server:
            assert server.writer is not None
            server.writer.cancel()  # this test is the plant
            await set_register(server)
            cfg["port"] = server.port
            path = tmp_path / "modbus.yaml"
            path.write_text(yaml.safe_dump(cfg))
            first = await _connector_process(path, stack.kafka_bootstrap, env)
            await wait_for_baseline(first)
            counting = asyncio.create_task(plant(server))
            await asyncio.sleep(3)
            killed_at = now_ms()
            first.kill()  # no shutdown: what was in memory is gone
            await first.wait()
            await asyncio.sleep(1)
            second = await _connector_process(path, stack.kafka_bootstrap, env)
            await asyncio.sleep(4)
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting
            await asyncio.sleep(1.5)  # a few polls of the final count
            second.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(second.communicate(), 60)
            assert second.returncode == 0, err.decode()[-3000:]
            return killed_at

    killed_at = asyncio.run(run())
    assert start_wh + counted["wh"] > WRAP, "the register did not wrap during the test"
    unique: dict[int, dict[str, object]] = {}
    for rec in consume_all(stack.kafka_bootstrap, unique_name):
        result = validate_envelope(rec.value, mini_index, key=rec.key)
        assert not result.rejected, result.rejected[:3]
        for r in result.accepted:
            seen = unique.setdefault(r["ts"], dict(r))
            assert seen["value"] == r["value"] and seen.get("start") == r.get("start"), (seen, r)
    intervals = [unique[t] for t in sorted(unique)]
    assert len(intervals) > 20
    for prev, nxt in itertools.pairwise(intervals):
        assert nxt["start"] == prev["ts"], f"gap or overlap: {prev} then {nxt}"
    assert any(i["start"] < killed_at < i["ts"] for i in intervals)  # type: ignore[operator]
    total_mwh = sum(float(i["value"]) for i in intervals)  # type: ignore[arg-type]
    assert total_mwh == pytest.approx(counted["wh"] * 1e-6, rel=1e-9, abs=1e-6)
    assert consume_all(stack.kafka_bootstrap, f"{unique_name}-dl", timeout=5) == []
