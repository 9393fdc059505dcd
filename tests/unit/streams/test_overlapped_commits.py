"""Storing one batch while the next is prepared changes nothing the twin ends up holding.

``OverlappedCommits`` lets the worker compute batch N+1 while batch N's points are still
being written. These tests hold each write open so the overlap really happens, then check
the table, the points and the acknowledgements against plain one-at-a-time processing, and
that a failed or cancelled commit leaves nothing behind that a replay would count twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.delivery import OverlappedCommits, PreparedBatch, StaleBatch
from streams.envelope import Record
from tests.unit.streams.test_pipeline_units import T0, Harness, reading, record


def batches() -> list[list[Record]]:
    """Six batches of two sites, several readings per meter and window, closing windows."""
    out = []
    offset = {0: 0, 1: 0}
    for b in range(6):
        recs = []
        for site, meter, partition in (("a", "gas-a", 0), ("b", "gas-b", 1)):
            for k in range(3):
                ts = T0 + (b * 3 + k) * 20_000
                recs.append(
                    record(
                        site, [reading(meter, ts, 1.0 + b + k * 0.5)], offset[partition], partition
                    )
                )
                offset[partition] += 1
        out.append(recs)
    return out


def final_points(lines: list[str]) -> dict[str, str]:
    """Series + timestamp -> fields of the last write: what InfluxDB ends up holding."""
    out = {}
    for line in lines:
        head, fields, ts = line.rsplit(" ", 2)
        out[head + " " + ts] = fields
    return out


def serial() -> Harness:
    h = Harness()
    for recs in batches():
        h.run(recs)
    return h


class Gated(Harness):
    """A harness whose writes wait for the test to open them, one at a time."""

    def __init__(self, fail_first_write: bool = False) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []
        self.fail_first_write = fail_first_write
        self.writes = 0
        inner = self.stage.write

        async def write(lines: Any) -> None:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
            self.writes += 1
            if self.fail_first_write and self.writes == 1:
                raise ConnectionError("InfluxDB went away")
            await inner(lines)

        self.stage.write = write
        self.commits = OverlappedCommits(self.stage)
        self.acked: list[int] = []

    async def after(self, prepared: PreparedBatch) -> None:
        self.acked += [r.offset for r in prepared.records_in]

    async def open_gates(self) -> None:
        """Let every write through as it comes, until nothing is in flight."""
        for _ in range(200):
            for gate in self.gates:
                gate.set()
            await asyncio.sleep(0)
        await self.commits.wait(raise_errors=False)


async def feed(h: Gated, todo: list[list[Record]]) -> None:
    """Submit batches, each write let through once the next batch is prepared."""
    for recs in todo:
        if h.gates:
            asyncio.get_running_loop().call_soon(h.gates[-1].set)
        await h.commits.submit(recs, h.after)
        await asyncio.sleep(0)
    await h.open_gates()


def test_overlapped_batches_store_exactly_what_serial_processing_stores():
    expected = serial()
    h = Gated()

    async def run() -> None:
        overlapped = 0
        for recs in batches():
            if h.gates:
                # the next batch is prepared while this write is still open; the write
                # goes through once ``submit`` waits for it (after preparing)
                overlapped += not h.gates[-1].is_set()
                asyncio.get_running_loop().call_soon(h.gates[-1].set)
            await h.commits.submit(recs, h.after)
            await asyncio.sleep(0)  # the commit starts and waits on its write
        await h.open_gates()
        assert overlapped == len(batches()) - 1

    asyncio.run(run())
    assert h.table.data == expected.table.data
    assert final_points(h.lines) == final_points(expected.lines)
    assert h.stage.counters.accepted == expected.stage.counters.accepted == 36
    assert sorted(h.acked) == sorted(r.offset for b in batches() for r in b)
    assert h.stage.idle


def test_a_failed_commit_is_forgotten_and_its_records_count_once_when_they_come_again():
    expected = serial()
    h = Gated(fail_first_write=True)
    todo = batches()

    async def run() -> None:
        await h.commits.submit(todo[0], h.after)
        await asyncio.sleep(0)
        # batch 1 is prepared on top of batch 0's unstored states, then batch 0 fails
        asyncio.get_running_loop().call_soon(h.gates[0].set)
        with pytest.raises(ConnectionError):
            await h.commits.submit(todo[1], h.after)
        assert h.acked == [] and h.stage.idle
        # nothing was acknowledged: Kafka delivers both batches again, then the rest
        await feed(h, todo)

    asyncio.run(run())
    assert h.table.data == expected.table.data
    assert final_points(h.lines) == final_points(expected.lines)


def test_a_batch_prepared_before_a_failure_cannot_be_stored():
    h = Harness()
    first = asyncio.run(h.stage.prepare(batches()[0]))
    h.stage.forget()  # as after a failed commit
    with pytest.raises(StaleBatch):
        asyncio.run(h.stage.commit(first))
    assert h.table.data == {}


def test_abandoning_a_commit_at_a_rebalance_loses_and_doubles_nothing():
    expected = serial()
    h = Gated()
    todo = batches()

    async def run() -> None:
        await h.commits.submit(todo[0], h.after)
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_soon(h.gates[0].set)
        await h.commits.submit(todo[1], h.after)
        await asyncio.sleep(0)
        await h.commits.abandon()  # batch 1's write never finished
        assert h.stage.idle and len(h.acked) == len(todo[0])
        # what was not acknowledged comes again
        await feed(h, todo[1:])

    asyncio.run(run())
    assert h.table.data == expected.table.data
    assert final_points(h.lines) == final_points(expected.lines)


def test_the_previous_commit_advances_while_the_next_batch_is_computed():
    """The event loop runs between sites: batch 0's write, answered on a later pass of the
    loop, is stored before batch 1 is computed, not only once it is."""
    h = Harness()
    events: list[str] = []
    inner_write = h.stage.write

    async def write(lines: Any) -> None:
        await asyncio.sleep(0)  # a request whose answer comes on a later pass
        events.append("stored")
        await inner_write(lines)

    h.stage.write = write
    compute = h.stage._compute

    def traced(records: Any) -> Any:
        steps = compute(records)
        try:
            while True:
                next(steps)
                events.append("site")
                yield
        except StopIteration as done:
            events.append("computed")
            return done.value

    h.stage._compute = traced  # type: ignore[method-assign]
    commits = OverlappedCommits(h.stage)

    async def after(prepared: PreparedBatch) -> None:
        pass

    async def run() -> None:
        todo = batches()
        await commits.submit(todo[0], after)
        events.clear()
        await commits.submit(todo[1], after)
        await commits.wait()

    asyncio.run(run())
    assert events.count("site") == 2  # two sites in batch 1
    assert events.index("stored") < events.index("computed"), events
