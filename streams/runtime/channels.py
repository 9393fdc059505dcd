"""Topics, tables and records as the stages see them: bytes in, bytes out, no Faust types.

The stages serialise their own state and messages (orjson, the envelope codec), so every
topic and table of both workers is raw bytes; declaring them here keeps the serialisers,
the partition counts and the changelog writes the same in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

from streams.envelope import Record

# What a stage calls to send a message: topic name, key, value, headers.
Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]


def raw_topic(
    app: faust.App, name: str, *, partitions: int | None = None, internal: bool = False
) -> Any:
    """A topic of raw bytes keys and values.

    ``partitions`` matters for the topics Faust creates (``internal``) and for those the
    tables are co-partitioned with; ``None`` leaves it to the app's default.
    """
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=internal,
    )


def raw_table(app: faust.App, name: str, partitions: int) -> Any:
    """A changelog-backed table of raw bytes; the stage stores its own serialised state."""
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
    )


def topic_sender(topics: Iterable[Any]) -> Send:
    """``Send`` over the given topics, each found by its name; returns once the broker has
    the message (``acks=-1``), so a stage acknowledges a record only after its output."""
    by_name = {topic.get_topic_name(): topic for topic in topics}

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        fut = await by_name[topic].send(key=key, value=value, headers=headers, force=True)
        await fut

    return send


class FaustTable:
    """``StateTable`` over a Faust table, writing changelog records to explicit partitions.

    A batch mixes records of several partitions, so the partition cannot come from Faust's
    "current event"; it is the partition the key's records arrive on.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    def put(self, key: bytes, value: bytes, partition: int) -> Any:
        store = self.table.data
        store[key] = value
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition
        return self.table.send_changelog(partition, key, value)

    def delete(self, key: bytes, partition: int) -> Any:
        store = self.table.data
        store.pop(key, None)
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition.pop(key, None)
        return self.table.send_changelog(partition, key, None)

    def all_keys(self) -> Iterable[bytes]:
        return list(self.table.data.keys())


def record_from_event(event: Any) -> Record:
    """A Faust event as the plain record the stages take, so they never see Faust types."""
    m = event.message
    headers = m.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp=round(m.timestamp * 1000),
        key=m.key,
        value=m.value,
        headers=[(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in headers],
    )
