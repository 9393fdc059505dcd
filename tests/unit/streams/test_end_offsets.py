"""``EndOffsets``: silence counts only on end offsets read now, from a broker that answers.

The broker side is proven on the real stack (``tests/integration/alerting/
test_alerting_outage.py``); these pin the bookkeeping with a consumer whose answers the
test chooses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from streams.end_offsets import EndOffsets


class _Consumer:
    def __init__(self) -> None:
        self.ends: dict[TP, int | None] | None = {}
        self._committed_offset: dict[TP, int] = {}

    async def highwaters(self, *tps: TP) -> dict[TP, int | None]:
        if self.ends is None:
            await asyncio.sleep(10)  # a broker that does not answer
        assert self.ends is not None
        return {tp: self.ends.get(tp) for tp in tps}


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _offsets() -> tuple[EndOffsets, _Consumer, _Clock]:
    consumer, clock = _Consumer(), _Clock()
    return EndOffsets(lambda: consumer, "readings", 2, clock=clock), consumer, clock


def test_answering_counts_from_the_first_good_read_after_trouble() -> None:
    offsets, consumer, clock = _offsets()
    consumer.ends = {TP("readings", 0): 7, TP("readings", 1): None}
    clock.now += 30
    assert offsets.answering_for() == 0  # nothing read yet since the start
    assert asyncio.run(offsets.read(timeout_s=1)) == {0: 7}
    clock.now += 4
    assert asyncio.run(offsets.read(timeout_s=1)) == {0: 7}
    assert offsets.answering_for() == 4
    consumer.ends = None
    assert asyncio.run(offsets.read(timeout_s=0.05)) is None
    assert offsets.answering_for() == 0
    # back: the broker may have returned just before this read, not at the failure
    consumer.ends = {TP("readings", 0): 9}
    clock.now += 10
    assert asyncio.run(offsets.read(timeout_s=1)) == {0: 9}
    assert offsets.answering_for() == 0
    clock.now += 2
    assert offsets.answering_for() == 2


def test_caught_up_by_processed_offsets_else_by_the_committed_one() -> None:
    offsets, consumer, _ = _offsets()
    ends: dict[int, Any] = {0: 10, 1: 5}
    assert offsets.caught_up(0, ends, {0: 9})
    assert not offsets.caught_up(0, ends, {0: 8})
    # nothing processed since the start: the group's committed offset decides
    assert not offsets.caught_up(1, ends, {})
    consumer._committed_offset[TP("readings", 1)] = 5
    assert offsets.caught_up(1, ends, {})
    # an end offset the broker did not give is never caught up
    assert not offsets.caught_up(1, {0: 10}, {1: 100})
