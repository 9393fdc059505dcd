"""Test connectors of a cumulative counter, two broken as authors break them, one right.

Not shipped: they exist to show that the conformance kit's metering checks fail on the two
bugs a new connector author really made (publishing the raw total; forgetting the baseline
on every reconnect) and pass on a connector that keeps its baseline across reconnects and
process restarts. The right one carries its own minimal baseline logic as a fixture; the
SDK's metering helpers replace it in real connectors.

The source is a real TCP server speaking a one-line protocol (``read`` -> the total), so
stop/start are real socket closes the connector sees as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

import orjson

from connectors.sdk.base import (
    ConnectorConfig,
    Item,
    PollingConfig,
    PollingConnector,
    Sample,
    SourceUnavailable,
)
from connectors.sdk.runner import buffer_dir
from twin.readings import MeterIndex, now_ms


class CounterServer:
    """A counter device on a real socket; implements the kit's ``CounterSource``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.total = 0.0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await reader.readline():
                writer.write(f"{self.total!r}\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def set_total(self, total: float) -> None:
        self.total = total

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.close()
        if server is not None:
            await server.wait_closed()


class CounterConfig(PollingConfig):
    port: int
    meter: str
    unit: str = "MWh"


class _CounterClient(PollingConnector[CounterConfig]):
    """Reads the total over the socket; subclasses turn it into what they publish."""

    config_model: ClassVar[type[ConnectorConfig]] = CounterConfig

    def __init__(self, config: CounterConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        try:
            self._conn = await asyncio.open_connection("127.0.0.1", self.config.port)
        except OSError as exc:
            raise SourceUnavailable(f"counter on port {self.config.port}: {exc}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()

    async def read_total(self) -> float:
        if self._conn is None:
            raise SourceUnavailable("counter: not connected")
        reader, writer = self._conn
        try:
            writer.write(b"read\n")
            await writer.drain()
            line = await reader.readline()
        except OSError as exc:
            raise SourceUnavailable(f"counter: {exc}") from exc
        if not line:
            raise SourceUnavailable("counter: the device closed the connection")
        return float(line)

    def sample(self, value: float) -> Sample:
        return Sample(self.config.meter, now_ms(), value, self.config.unit)


class RawTotalConnector(_CounterClient):
    """BROKEN: publishes the cumulative total as if it were the interval's quantity."""

    async def poll(self) -> Sequence[Item]:
        return [self.sample(await self.read_total())]


class ForgetfulConnector(_CounterClient):
    """BROKEN: right differences, but the baseline is dropped on every (re)connect."""

    async def open(self) -> None:
        await super().open()
        self._baseline: float | None = None

    async def poll(self) -> Sequence[Item]:
        total = await self.read_total()
        previous, self._baseline = self._baseline, total
        if previous is None:
            return []
        return [self.sample(total - previous if total >= previous else total)]


class BaselineConnector(_CounterClient):
    """RIGHT (a test fixture): differences against a baseline kept in a state file beside
    the disk buffer, written atomically, so reconnects and process restarts count the
    interval across them once. A drop is a reset: the counter counted up from zero."""

    def __init__(self, config: CounterConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._state = buffer_dir(config) / "counter-baseline.json"
        self._baseline: float | None = None
        if self._state.is_file():
            self._baseline = float(orjson.loads(self._state.read_bytes())["total"])

    def _save(self, total: float) -> None:
        self._state.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{self._state}.tmp")
        tmp.write_bytes(orjson.dumps({"total": total}))
        os.replace(tmp, self._state)

    async def poll(self) -> Sequence[Item]:
        total = await self.read_total()
        previous, self._baseline = self._baseline, total
        self._save(total)
        if previous is None:
            return []
        return [self.sample(total - previous if total >= previous else total)]


@contextlib.asynccontextmanager
async def counter_server(port: int) -> AsyncIterator[CounterServer]:
    server = CounterServer(port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
