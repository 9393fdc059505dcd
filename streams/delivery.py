"""How a batch's effects are delivered so that at-least-once delivery is exact.

The order of effects is what makes it exact:

1. compute the new states in memory (``streams.site_stage``);
2. write the points to InfluxDB (retrying until stored) and deliver dead letters, late
   readings and cluster summaries to Kafka (awaiting the broker's acknowledgement);
3. only then put the new states into the table (its changelog), and acknowledge the records.

A crash before 3 replays the records against the old state and rewrites the same points;
a crash after 3 finds each record's offset already in its site's state and skips it.
Faust flushes the changelog before it commits offsets, so a committed offset always has its
state behind it.

Steps 1 and 2-3 are separate calls (``prepare`` and ``commit``) so the worker can compute
the next batch while the previous one is being stored (InfluxDB parses on another core):
``prepare`` serialises everything a commit needs into a ``PreparedBatch``, and later batches
start from the states of prepared, not yet stored, batches. Commits still happen one at a
time and in order (``OverlappedCommits``), and a record is acknowledged only after its own
commit; ``forget`` drops the unstored states when a commit is abandoned, so the next batch
starts again from what the table holds.

The stages themselves (``streams.site_stage``, ``streams.cluster_stage``) know nothing of
Faust: they see a ``StateTable`` and two coroutines, ``Write`` and ``Send``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streams.envelope import Record
from streams.windows import SiteState

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
Write = Callable[[Iterable[str]], Awaitable[None]]


class StaleBatch(Exception):
    """A prepared batch counted on states that were forgotten: its records must come again."""


class StateTable(Protocol):
    """The few table operations the stages need (a Faust table, or a dict in unit tests)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, partition: int) -> Awaitable[Any] | None: ...
    def delete(self, key: bytes, partition: int) -> Awaitable[Any] | None: ...
    def all_keys(self) -> Iterable[bytes]: ...


async def settle(futures: list[Awaitable[Any] | None]) -> None:
    """Wait until every changelog record is acknowledged by the broker.

    Acknowledging a record before its state is durable would let a crash commit an offset
    whose effect is lost; so the stages do not return before this.
    """
    pending = [f for f in futures if f is not None]
    if pending:
        await asyncio.gather(*pending)


@dataclass
class Counters:
    records: int = 0
    readings: int = 0
    accepted: int = 0
    deadletters: int = 0
    late: int = 0
    duplicates: int = 0
    batches: int = 0
    points: int = 0
    cluster_late_updates: int = 0
    replayed: int = 0
    last_batch_wall: float = 0.0
    # When the first batch began and the last one was stored, in wall-clock seconds and in
    # the process's CPU seconds (all threads): a rate measured between them covers every
    # record without the worker's start, however few and big the batches.
    first_batch_wall: float = 0.0
    first_batch_cpu: float = 0.0
    last_batch_cpu: float = 0.0
    # Seconds a prepared batch waited for the previous one to be stored: how far storing
    # (InfluxDB, Kafka) rather than computing holds the worker back.
    commit_wait_s: float = 0.0

    def add(self, other: Counters) -> None:
        """Count a stored batch (its counts are kept aside until it is stored)."""
        for name in (
            "records",
            "readings",
            "accepted",
            "deadletters",
            "late",
            "duplicates",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Topics:
    deadletter: str
    late: str
    cluster_updates: str
    priced: str | None = None  # streams.priced: what the alerting worker reads (None: off)


@dataclass
class PreparedBatch:
    """A batch computed in memory, everything its commit needs already serialised.

    Nothing here refers to a live ``SiteState``: a later batch may go on changing those
    objects while this one is being stored.
    """

    epoch: int
    seq: int
    records: Sequence[Record]
    held: list[Record]
    seeks: dict[int, int]
    lines: list[str]
    messages: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    # site -> (state as stored, its partition, the state object it was serialised from)
    stored: dict[str, tuple[bytes, int, SiteState]]
    cursors: dict[int, int]
    counters: Counters
    # every record given to ``prepare``, in order: replays and held records included
    records_in: Sequence[Record] = ()


def cursor_key(partition: int) -> bytes:
    """The table key of a partition's cursor (``\\x00`` first: never a site's name)."""
    return b"\x00cursor/" + str(partition).encode()


class OffsetCursors:
    """Per partition, the next offset to apply, stored in the table beside the sites.

    Faust can skip a record around a restart or rebalance and then commit past it (its commit
    treats a one-record gap at the head as contiguous); the cursor notices the gap and has
    the consumer seek back, so a skipped record is never silently lost.
    """

    def __init__(self, table: StateTable) -> None:
        self.table = table
        self.gap_tries: dict[tuple[int, int], int] = {}
        self.max_gap_tries = 5
        # Records fetched before a seek took effect keep arriving for a moment after it
        # (Faust's stream buffer): the same gap seen again within this time is the same
        # attempt, not a failed one. Counting each such batch used up the tries in under a
        # second after a SIGKILL (3 of 5 seen in tests/reliability), and the last one skips
        # the gap for good.
        self.gap_retry_s = 2.0
        self.gap_seen: dict[tuple[int, int], float] = {}
        # partition -> (batch seq, next offset) of prepared batches not yet stored: the
        # next batch starts from these
        self._pending: dict[int, tuple[int, int]] = {}

    @property
    def idle(self) -> bool:
        """No prepared batch's cursor waits to be stored."""
        return not self._pending

    def forget(self) -> None:
        """Drop the cursors of prepared batches (their commit was abandoned)."""
        self._pending.clear()

    def get(self, partition: int) -> int | None:
        pending = self._pending.get(partition)
        if pending is not None:
            return pending[1]
        raw = self.table.get(cursor_key(partition))
        return None if raw is None else int(raw)

    def prepared(self, seq: int, cursors: dict[int, int]) -> None:
        """Later batches start from the cursors of batch ``seq``, not yet stored."""
        for p, offset in cursors.items():
            self._pending[p] = (seq, offset)

    async def store(self, seq: int, cursors: dict[int, int]) -> None:
        """Put the cursors of batch ``seq`` in the table (after its sites: a crash in between
        replays records the sites skip)."""
        if cursors:
            await settle(
                [
                    self.table.put(cursor_key(p), str(offset).encode(), p)
                    for p, offset in cursors.items()
                ]
            )
        for p in cursors:
            pending = self._pending.get(p)
            if pending is not None and pending[0] == seq:
                del self._pending[p]

    def admit(
        self, records: Sequence[Record], counters: Counters
    ) -> tuple[list[Record], list[Record], dict[int, int]]:
        """Split a batch into (to apply, to hold back) and the seeks that recover a gap.

        Records below the cursor were applied before (a replay) and are dropped here but
        acknowledged; records after a gap are held back unacknowledged.
        """
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for r in records:
            by_partition[r.partition].append(r)
        admitted: list[Record] = []
        held: list[Record] = []
        seeks: dict[int, int] = {}
        for partition, recs in by_partition.items():
            recs.sort(key=lambda r: r.offset)
            expected = self.get(partition)
            for i, r in enumerate(recs):
                if expected is None or r.offset == expected:
                    admitted.append(r)
                    expected = r.offset + 1
                elif r.offset < expected:
                    counters.replayed += 1
                else:
                    tries = self.gap_tries.get((partition, expected), 0)
                    if tries >= self.max_gap_tries:
                        log.error(
                            "partition %d: records %d..%d never came back after %d seeks "
                            "(deleted by retention?); going on from %d",
                            partition,
                            expected,
                            r.offset - 1,
                            tries,
                            r.offset,
                        )
                        admitted.append(r)
                        expected = r.offset + 1
                        continue
                    now = time.monotonic()
                    if now - self.gap_seen.get((partition, expected), -1e9) >= self.gap_retry_s:
                        self.gap_tries[(partition, expected)] = tries + 1
                        self.gap_seen[(partition, expected)] = now
                        log.warning(
                            "partition %d: consumer skipped offsets %d..%d; seeking back",
                            partition,
                            expected,
                            r.offset - 1,
                        )
                    held.extend(recs[i:])
                    seeks[partition] = expected
                    break
        return admitted, held, seeks


class CommittingStage(Protocol):
    """What ``OverlappedCommits`` needs of a stage (``streams.site_stage.SiteStage``)."""

    before_read: Callable[[], Awaitable[None]] | None
    counters: Counters

    async def prepare(self, records: Sequence[Record]) -> PreparedBatch: ...
    async def commit(self, prepared: PreparedBatch) -> None: ...
    def forget(self) -> None: ...


class OverlappedCommits:
    """Stores one batch while the worker prepares the next: double buffering.

    Without it the worker sat idle for a third of the time waiting for InfluxDB to parse
    and index each batch's points; now that wait overlaps the next batch's computing. One
    commit at a time, in the order of preparation, and ``after`` (acknowledging the
    records) runs only once its batch is stored, so the delivery guarantee is unchanged.
    """

    def __init__(self, stage: CommittingStage) -> None:
        self.stage = stage
        self._inflight: asyncio.Future[None] | None = None
        # a batch that reads stored readings back must see every earlier batch stored
        stage.before_read = self.wait

    async def submit(
        self, records: Sequence[Record], after: Callable[[PreparedBatch], Awaitable[None]]
    ) -> None:
        """Prepare ``records`` now; store them, then call ``after``, once the previous
        batch is stored. Returns as soon as the commit has started, unless the batch holds
        records back (a gap to seek): then only when it is done, so the seek comes before
        the next batch is prepared."""
        try:
            prepared = await self.stage.prepare(records)
        except BaseException:
            await self.wait(raise_errors=False)
            self.stage.forget()  # again: the commit that was running may have stored more
            raise
        began = time.monotonic()
        await self.wait()
        self.stage.counters.commit_wait_s += time.monotonic() - began
        task = asyncio.ensure_future(self._store(prepared, after))
        self._inflight = task
        if prepared.held or prepared.seeks:
            await self.wait()

    async def _store(
        self, prepared: PreparedBatch, after: Callable[[PreparedBatch], Awaitable[None]]
    ) -> None:
        await self.stage.commit(prepared)
        await after(prepared)

    async def wait(self, raise_errors: bool = True) -> None:
        """Until no commit is running. A failed commit's unstored states are forgotten and
        its error raised (when ``raise_errors``): its records were never acknowledged."""
        task = self._inflight
        if task is None:
            return
        # asyncio.wait: a caller cancelled here does not cancel the commit it waits for
        await asyncio.wait([task])
        if self._inflight is task:
            self._inflight = None
        if task.cancelled():
            self.stage.forget()
            return
        error = task.exception()
        if error is not None:
            self.stage.forget()
            if raise_errors:
                raise error
            log.error("storing a batch failed (%r); its records come again", error)

    async def abandon(self) -> None:
        """Cancel the running commit (a rebalance or shutdown) and forget what is unstored."""
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
        await self.wait(raise_errors=False)
        self.stage.forget()
