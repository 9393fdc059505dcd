"""What a connector author implements: a config model and a stream of samples.

A connector only talks to its source (a broker, a PLC, a file). Everything that must be the
same for every site — validation, batching into envelopes, the Kafka producer, the on-disk
buffer, reconnecting with backoff, metrics — lives in the runner, so a new connector is a
page of code and cannot get the contract wrong.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from twin.readings import MeterIndex


class SourceUnavailable(ConnectionError):
    """The source (server, device, file) cannot be reached now; the runner will retry."""


@dataclass(slots=True)
class Sample:
    """One value read from a source, before validation.

    ``unit`` and ``carrier`` default to the meter's, from the cluster model: most protocols
    only carry a number. ``raw`` is the original payload, kept for the dead-letter topic.
    """

    meter: str
    ts: int
    value: float
    unit: str | None = None
    carrier: str | None = None
    quality: str = "measured"
    raw: bytes | None = None
    #: where the source says so, the start of the interval the value was measured over
    #: (``ts`` is its end): the reading goes out as readings/2 and the twin shares it
    #: among the minutes it covers
    start: int | None = None


@dataclass(slots=True)
class BadSample:
    """Source material that could not even be turned into a sample (unparseable payload)."""

    reason: str
    raw: bytes
    meter: str | None = None


Item = Sample | BadSample


@dataclass(frozen=True, slots=True)
class MeterMapping:
    """One meter a config maps, for ``connector lint``: ``unit`` is the unit the source
    sends (None: the meter's own), ``where`` the config item, named in lint messages."""

    meter: str
    unit: str | None
    where: str


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap: str | None = Field(
        default=None, description="host:port list; default: CLUSTERTWIN_KAFKA_BOOTSTRAP"
    )
    topic: str = "readings"
    deadletter_topic: str = "readings-deadletter"
    compression: str = Field(default="lz4", pattern="^(lz4|gzip|zstd|snappy|none)$")
    linger_ms: int = Field(default=20, ge=0, le=10_000)
    delivery_timeout_ms: int = Field(default=30_000, ge=1_000)


class BatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_readings: int = Field(
        default=2000, ge=1, le=20_000, description="readings per envelope (one Kafka message)"
    )
    max_delay_ms: int = Field(
        default=1000, ge=0, le=600_000, description="longest a reading waits for its envelope"
    )


class BufferSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(
        default=None, description="default: <cache>/connectors/<name>; one dir per instance"
    )
    max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    segment_bytes: int = Field(default=16 << 20, ge=1 << 12)
    fsync: bool = Field(default=False, description="fsync every append (power-loss safe)")


class ConnectorConfig(BaseModel):
    """Fields every connector config has; a connector subclasses it with its own."""

    model_config = ConfigDict(extra="forbid")

    connector: str = Field(description="entry point name in the clustertwin.connectors group")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$", description="instance name")
    cluster: str = Field(description="cluster id (packaged) or path to a cluster YAML")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    buffer: BufferSettings = Field(default_factory=BufferSettings)

    def source_name(self) -> str:
        return f"{self.connector}/{self.name}"


ConfigT = TypeVar("ConfigT", bound=ConnectorConfig)


class Connector(ABC, Generic[ConfigT]):
    """Base class of every connector.

    Implement ``stream`` (an async generator of batches: each list is what one poll or one
    message gave). Raise ``SourceUnavailable`` (or let an ``OSError`` escape) when the source
    goes away: the runner closes the connector, waits with backoff, calls ``open`` again and
    iterates ``stream`` anew. Never raise for one bad value: yield a ``BadSample``.
    """

    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    description: ClassVar[str] = ""

    def __init__(self, config: ConfigT, index: MeterIndex) -> None:
        self.config = config
        self.index = index

    @classmethod
    def check_config(cls, config: ConfigT, index: MeterIndex) -> list[str]:
        """Problems only the cluster model reveals (e.g. mapped meter ids that do not exist).

        Override to check your own mappings; ``clustertwin connector lint`` reports them.
        """
        return []

    @classmethod
    def mapped_meters(cls, config: ConfigT, index: MeterIndex) -> list[MeterMapping] | None:
        """The meters (and source units) ``config`` maps; None where the meter ids come
        with the data (an HTTP push), so there is nothing to count. ``connector lint``
        checks each unit against the meter's carrier and reports how many are mapped."""
        return None

    async def open(self) -> None:
        """Connect to the source; raise SourceUnavailable if it cannot be reached."""

    async def close(self) -> None:
        """Release the source; must be safe to call after a failed ``open``."""

    @abstractmethod
    def stream(self) -> AsyncIterator[Sequence[Item]]:
        """Yield batches of samples until the source ends (finite) or forever (live)."""

    def readings_durable(self) -> None:
        """Called by the runner when every batch yielded so far is in the disk buffer (or
        refused to the dead-letter topic): the moment to confirm state that those readings
        imply, e.g. ``Metering.durable()`` (connectors.sdk.metering). Must be quick."""

    #: Whether ``history`` can read the source's past (``clustertwin backfill``).
    reads_history: ClassVar[bool] = False

    @classmethod
    def history_refusal(cls, config: ConfigT) -> str | None:
        """Why ``clustertwin backfill`` cannot read ``config``'s past (None: it can). The
        default follows ``reads_history``; override where it depends on the config (an
        optional history block), and say what is missing."""
        return None if cls.reads_history else "its reads_history is false"

    def history(self, start_ms: int, end_ms: int) -> AsyncIterator[Sequence[Item]]:
        """Yield the samples of ``[start_ms, end_ms)`` as fast as the source gives them,
        then end. Override (and set ``reads_history``) where the source keeps its past: a
        historian, an export file, a simulation. The worker counts a reading once however
        often it is sent, so a backfill may overlap what the live connector sends."""
        raise NotImplementedError(f"{type(self).__name__} cannot read its source's past")


class PollingConfig(ConnectorConfig):
    poll_interval_s: float = Field(default=10.0, gt=0, le=86_400)


PollT = TypeVar("PollT", bound=PollingConfig)


class PollingConnector(Connector[PollT]):
    """For sources that are asked (Modbus, REST historians): implement ``poll`` only."""

    config_model: ClassVar[type[ConnectorConfig]] = PollingConfig

    @abstractmethod
    async def poll(self) -> Sequence[Item]:
        """Read every mapped point once."""

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        loop = asyncio.get_running_loop()
        interval = self.config.poll_interval_s
        next_at = loop.time()
        while True:
            yield await self.poll()
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (slow device): do not burst to catch up
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)


def drain_queue(
    queue: asyncio.Queue[Item | Exception], first: Item, max_batch: int
) -> tuple[list[Item], Exception | None]:
    """What a push source (MQTT, OPC UA subscriptions) has queued behind ``first``, up to
    ``max_batch``, and the source's error if one was queued: the items before an error are
    still handed on before it is raised, so a disconnect never drops received readings."""
    batch: list[Item] = [first]
    while not queue.empty() and len(batch) < max_batch:
        nxt = queue.get_nowait()
        if isinstance(nxt, Exception):
            return batch, nxt
        batch.append(nxt)
    return batch, None


def unknown_meters(meters: Sequence[str], index: MeterIndex, where: str) -> list[str]:
    """Lint helper: one message per mapped meter id the cluster does not have."""
    return [
        f"{where}: unknown meter {m!r} in cluster {index.cluster!r}"
        for m in meters
        if m not in index
    ]


def describe(cls: type[Connector[Any]]) -> str:
    doc = (cls.description or cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
