"""Whether the worker moves, and whether its silence means anything: the watchdog, the idle timer.

Both workers keep the highest offset they have stored per partition; the watchdog compares
it with the end offsets to tell a stuck consumer from an idle one, and the idle timer acts
on silence only once the broker has answered long enough for silence to mean the plants.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from streams.end_offsets import EndOffsets

log = logging.getLogger(__name__)

# Whether every record of a partition below its end offset (read now) has been processed.
CaughtUp = Callable[[int], bool]


@dataclass
class Liveness:
    """How far this process has got: what the watchdog and the idle timer judge by."""

    # highest offset stored (and acknowledged) per partition, by this process
    processed: dict[int, int] = field(default_factory=dict)
    # when the batch being stored was taken (None: nothing waits to be stored)
    busy_since: float | None = None
    # when a batch was last stored
    last_progress: float = field(default_factory=time.monotonic)

    def started(self) -> None:
        """A batch was taken; the first of a run of unstored batches starts the clock."""
        if self.busy_since is None:
            self.busy_since = time.monotonic()

    def stored(self, partition: int, offset: int) -> None:
        if offset > self.processed.get(partition, -1):
            self.processed[partition] = offset

    def progressed(self) -> None:
        """A batch is stored: nothing waits any more."""
        self.busy_since = None
        self.last_progress = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since a batch was last stored."""
        return time.monotonic() - self.last_progress


class StallWatchdog:
    """Exit if readings wait and nothing moves (seen once after a Kafka restart: the
    consumer never resumed).

    Exiting is safe, unstored effects are never acknowledged; the supervisor (compose
    restart policy, systemd, the demo) starts a fresh worker. Not while the sink reports an
    outage: then the worker waits for InfluxDB, as it should. Two stalled checks in a row
    are needed, so one slow read of the end offsets is no reason.
    """

    INTERVAL_S = 5.0
    EXIT_CODE = 70

    def __init__(
        self,
        consumer: Callable[[], Any],
        topic: str,
        partitions: int,
        liveness: Liveness,
        stall_s: float,
        outage: Callable[[], bool],
    ) -> None:
        self._consumer = consumer
        self._tps = [TP(topic, p) for p in range(partitions)]
        self._liveness = liveness
        self._stall_s = stall_s
        self._outage = outage
        self.stalls = 0

    def install(self, app: faust.App) -> None:
        app.timer(interval=self.INTERVAL_S, name="watchdog")(self.check)

    async def check(self) -> None:
        now = time.monotonic()
        if self._outage():
            self.stalls = 0
            return
        since, last = self._liveness.busy_since, self._liveness.last_progress or now
        stalled = since is not None and now - since > self._stall_s
        if not stalled and since is None and now - last > self._stall_s:
            stalled = await self._records_wait()
        self.stalls = self.stalls + 1 if stalled else 0
        if self.stalls >= 2:
            log.error(
                "no progress for %.0f s while readings wait in Kafka: exiting so the "
                "worker is restarted",
                now - (since or last),
            )
            logging.shutdown()
            os._exit(self.EXIT_CODE)

    async def _records_wait(self) -> bool:
        """Whether an assigned partition has records beyond what was processed or committed
        (True if the broker cannot say: an idle worker that cannot read end offsets either
        is no better than a stuck one)."""
        try:
            consumer = self._consumer()
            ends = await asyncio.wait_for(consumer.highwaters(*self._tps), 15)
            committed = getattr(consumer, "_committed_offset", {})
            processed = self._liveness.processed
            return any(
                end > max(processed.get(tp.partition, -1) + 1, committed.get(tp) or 0)
                for tp, end in ends.items()
                if tp in consumer.assignment()
            )
        except Exception as exc:
            log.warning("watchdog: cannot read end offsets (%r)", exc)
            return True


class IdleTimer:
    """Acts on silence (closing idle windows, silent meters), only when it can mean the plants.

    While Kafka is down, producers keep their readings (connectors buffer to disk) and
    deliver them, with their old timestamps, once it is back: acting then would make them
    all late. So ``act`` runs only once the broker has answered for ``quiet_s``, under the
    worker's lock, and "caught up" is judged on end offsets read now (the consumer's
    last-fetched high watermark is stale during an outage). ``ready`` says whether to look
    at all (not while stopping, not while records flow).
    """

    def __init__(
        self,
        end_offsets: EndOffsets,
        liveness: Liveness,
        quiet_s: float,
        lock: asyncio.Lock,
        act: Callable[[CaughtUp], Awaitable[None]],
        ready: Callable[[], bool],
    ) -> None:
        self._end_offsets = end_offsets
        self._liveness = liveness
        self._quiet_s = quiet_s
        self._lock = lock
        self._act = act
        self._ready = ready

    def install(self, app: faust.App, interval_s: float, name: str) -> None:
        app.timer(interval=interval_s, name=name)(self.tick)

    async def tick(self) -> None:
        if not self._ready():
            return
        ends = await self._end_offsets.read(timeout_s=5)
        if ends is None or self._end_offsets.answering_for() < self._quiet_s:
            return
        processed = self._liveness.processed
        async with self._lock:
            await self._act(lambda p: self._end_offsets.caught_up(p, ends, processed))
