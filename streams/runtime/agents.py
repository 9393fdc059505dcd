"""The batch agent: records taken in batches, acknowledged only once their effects are stored.

Faust acknowledges an event when the agent takes the next one; a stage that stores a whole
batch at once must instead acknowledge each record itself, after its effects are stored,
or a crash between the two would lose them. Every agent of both workers has this shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import faust

from streams.envelope import Record
from streams.runtime.channels import record_from_event


@dataclass(frozen=True)
class Batching:
    """Up to ``max`` records a batch, waiting at most ``within_s`` to fill one: big batches
    when a backlog drains, little delay when records trickle in."""

    max: int
    within_s: float


class Batch:
    """One batch taken from an agent's stream, not acknowledged yet."""

    def __init__(self, stream: Any, events: Sequence[Any]) -> None:
        self._stream = stream
        self.events = events

    @cached_property
    def records(self) -> list[Record]:
        """The events as the plain records the stages take (made once, when first asked)."""
        return [record_from_event(e) for e in self.events]

    def partition_values(self) -> list[tuple[int, bytes]]:
        """(partition, value) of each event: what the cluster stages take."""
        return [(e.message.partition, e.message.value) for e in self.events]

    async def ack(self, event: Any) -> None:
        """Acknowledge one event: its offset may now be committed."""
        await self._stream.ack(event)

    def split(self, max_bytes: int) -> list[Batch]:
        """The batch cut into runs of records of at most ``max_bytes`` of values (a bigger
        record alone), in order: each is stored, and counts as progress, on its own.

        Bounds one stored unit's work by bytes as well as records: a burst of 6 MB envelopes
        of bad readings is then many short batches, not one that outlasts the stall watchdog.
        """
        parts: list[Batch] = []
        start, size = 0, 0
        for i, e in enumerate(self.events):
            n = len(e.message.value or b"")
            if i > start and size + n > max_bytes:
                parts.append(Batch(self._stream, self.events[start:i]))
                start, size = i, 0
            size += n
        if not parts:
            return [self]
        parts.append(Batch(self._stream, self.events[start:]))
        return parts

    async def ack_all(self) -> None:
        for event in self.events:
            await self._stream.ack(event)


BatchHandler = Callable[[Batch], Awaitable[None]]


def batch_agent(
    app: faust.App,
    topic: Any,
    name: str,
    batching: Batching,
    handle: BatchHandler,
    on_exit: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """An agent on ``topic`` that hands each batch, unacknowledged, to ``handle``.

    ``handle`` acknowledges what it has stored. ``on_exit`` runs when the agent ends
    (cancelled by a rebalance, Faust then restarts it, or by stopping): what is not stored
    is not acknowledged and comes again.
    """

    async def agent(stream: Any) -> None:
        try:
            async for events in stream.noack_take(batching.max, within=batching.within_s):
                await handle(Batch(stream, events))
        finally:
            if on_exit is not None:
                await on_exit()

    return app.agent(topic, name=name)(agent)


def stored_then_acked(
    lock: asyncio.Lock, process: Callable[[list[tuple[int, bytes]]], Awaitable[None]]
) -> BatchHandler:
    """A handler that stores a batch of (partition, value) under ``lock`` (one batch or
    timer at a time in the worker), then acknowledges all of it."""

    async def handle(batch: Batch) -> None:
        async with lock:
            await process(batch.partition_values())
        await batch.ack_all()

    return handle
