"""Modbus TCP energy meters, polled by a register map kept as data (YAML), not code.

Registers next to each other are read in one request (up to 125 registers), because field
gateways are slow and often serial behind the TCP bridge. Cumulative energy counters
(``mode: counter``) become interval quantities through the SDK's metering helpers
(connectors.sdk.metering: baseline, rollover at the register's width, reset, plausibility),
whose baselines live in the connector's state store, so a restart neither loses nor doubles
the interval it spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from connectors.sdk.base import (
    BadSample,
    ConnectorConfig,
    Item,
    MeterMapping,
    PollingConfig,
    PollingConnector,
    Sample,
    SourceUnavailable,
)
from connectors.sdk.metering import CounterSpec, Metering, Refusal, StateStore
from twin.readings import MeterIndex, now_ms
from twin.yaml_loader import load_yaml

_WIDTH = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
MAX_REGS_PER_READ = 125


class Register(BaseModel):
    """Where one meter's value lives and how to decode it."""

    model_config = ConfigDict(extra="forbid")

    meter: str
    address: int = Field(ge=0, le=65535, description="0-based register address")
    table: Literal["holding", "input"] = "holding"
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"] = (
        "float32"
    )
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, description="after scaling; default: the meter's")
    mode: Literal["value", "counter"] = Field(
        default="value", description="counter: cumulative register, publish the difference"
    )
    rollover_at: float | None = Field(
        default=None,
        gt=0,
        description="counter: where it wraps, after scaling; default 2**bits * scale for "
        "unsigned integer registers, none for the others",
    )
    max_increase_per_h: float | None = Field(
        default=None, gt=0, description="counter: most it can count in an hour (plausibility)"
    )

    @property
    def width(self) -> int:
        return _WIDTH[self.type]

    def counter_spec(self) -> CounterSpec:
        """The register's metering rules: unsigned registers wrap at their width."""
        rollover = self.rollover_at
        if rollover is None and self.type.startswith("uint"):
            rollover = float(2 ** (16 * self.width)) * abs(self.scale)
        return CounterSpec(rollover_at=rollover, max_increase_per_h=self.max_increase_per_h)


REGISTER_LIST = TypeAdapter(list[Register])


class ModbusConfig(PollingConfig):
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    device_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=3.0, gt=0, le=60)
    registers: list[Register] = Field(default_factory=list)
    register_map: Path | None = Field(default=None, description="YAML list of registers")

    @model_validator(mode="after")
    def _some_registers(self) -> ModbusConfig:
        if not self.registers and self.register_map is None:
            raise ValueError("registers or register_map: at least one register is needed")
        return self

    def all_registers(self) -> list[Register]:
        regs = list(self.registers)
        if self.register_map is not None:
            regs += REGISTER_LIST.validate_python(load_yaml(self.register_map.read_text()))
        return regs


def plan_reads(registers: Sequence[Register]) -> list[tuple[str, int, int, list[Register]]]:
    """Group registers into (table, start, count, members) requests of contiguous ranges."""
    reads: list[tuple[str, int, int, list[Register]]] = []
    for table in ("holding", "input"):
        regs = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        for r in regs:
            if reads and reads[-1][0] == table:
                _t, start, count, members = reads[-1]
                end = max(start + count, r.address + r.width)
                if r.address <= start + count + 8 and end - start <= MAX_REGS_PER_READ:
                    reads[-1] = (table, start, end - start, [*members, r])
                    continue
            reads.append((table, r.address, r.width, [r]))
    return reads


class ModbusConnector(PollingConnector[ModbusConfig]):
    """Modbus TCP energy meters polled by a register map (values or energy counters)."""

    config_model: ClassVar[type[ConnectorConfig]] = ModbusConfig

    def __init__(self, config: ModbusConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self.registers = config.all_registers()
        self.reads = plan_reads(self.registers)
        self._client: AsyncModbusTcpClient | None = None
        self.metering = Metering(
            StateStore.for_connector(config),
            counters={r.meter: r.counter_spec() for r in self.registers if r.mode == "counter"},
        )
        self._units = {r.meter: r.unit for r in self.registers if r.unit is not None}

    @classmethod
    def check_config(cls, config: ModbusConfig, index: MeterIndex) -> list[str]:
        try:
            regs = config.all_registers()
        except (OSError, ValueError, yaml.YAMLError) as exc:
            return [f"register_map: {exc}"]
        return [
            f"registers[{i}].meter: unknown meter {r.meter!r} in cluster {index.cluster!r}"
            for i, r in enumerate(regs)
            if r.meter not in index
        ]

    @classmethod
    def mapped_meters(cls, config: ModbusConfig, index: MeterIndex) -> list[MeterMapping]:
        try:
            regs = config.all_registers()
        except (OSError, ValueError, yaml.YAMLError):
            return []  # check_config names the unreadable map
        return [MeterMapping(r.meter, r.unit, f"registers[{i}]") for i, r in enumerate(regs)]

    async def open(self) -> None:
        cfg = self.config
        client = AsyncModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=1, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise SourceUnavailable(f"Modbus device {cfg.host}:{cfg.port} does not answer")
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _decode(self, reg: Register, words: Sequence[int]) -> float:
        assert self._client is not None
        dtype = getattr(self._client.DATATYPE, reg.type.upper())
        raw = self._client.convert_from_registers(words, dtype, word_order=reg.word_order)
        assert isinstance(raw, int | float)
        return float(raw) * reg.scale + reg.offset

    async def poll(self) -> Sequence[Item]:
        client = self._client
        if client is None or not client.connected:
            raise SourceUnavailable(f"Modbus device {self.config.host}:{self.config.port} lost")
        out: list[Item] = []
        for table, start, count, members in self.reads:
            read = (
                client.read_holding_registers if table == "holding" else client.read_input_registers
            )
            try:
                resp = await read(start, count=count, device_id=self.config.device_id)
            except ModbusException as exc:
                raise SourceUnavailable(f"Modbus read {table}@{start}: {exc}") from exc
            ts = now_ms()
            if resp.isError():
                for r in members:
                    out.append(
                        BadSample(
                            f"modbus {table}@{start}+{count}: device answered {resp}",
                            orjson.dumps({"meter": r.meter, "address": r.address}),
                            r.meter,
                        )
                    )
                continue
            for r in members:
                words = resp.registers[r.address - start : r.address - start + r.width]
                raw = orjson.dumps({"meter": r.meter, "address": r.address, "registers": words})
                try:
                    value = self._decode(r, words)
                except (ModbusException, ValueError) as exc:
                    out.append(BadSample(f"modbus {r.meter}@{r.address}: {exc}", raw, r.meter))
                    continue
                if r.mode == "counter":
                    counted = self.metering.counter(r.meter, ts, value)
                    if isinstance(counted, Refusal):
                        out.append(counted.bad_sample(raw))
                    elif counted is not None:
                        out.append(counted.sample(raw, unit=r.unit))
                    continue
                out.append(Sample(r.meter, ts, value, r.unit, raw=raw))
        # Intervals a previous process saved but could not confirm go out again (the stream
        # counts a repeat once); then the baselines are saved, right before handing on.
        resent: list[Item] = [
            i.sample(unit=self._units.get(i.meter)) for i in self.metering.restored()
        ]
        self.metering.checkpoint()
        return resent + out

    def readings_durable(self) -> None:
        self.metering.durable()
