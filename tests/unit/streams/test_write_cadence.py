"""How often the worker rewrites what it has not finished: open site windows never,
a site's year to date at most every ``ytd_every_ms`` of wall clock; and nothing is lost by
waiting (a change that waited is written by a later batch, the idle flush, or, after a
stop, the next worker's idle flush), so the figures still equal the offline ones.
"""

from __future__ import annotations

import asyncio
import random
import time

from streams.site_stage import SiteStage
from tests.unit.streams.test_arrival_orders import (
    Worker,
    close_all,
    offline,
    open_site_windows,
    stored,
)
from tests.unit.streams.test_pipeline_units import NOW, T0, reading

EVERY_MS = 600_000


def _ytd_lines(lines: list[str], site: str, carrier: str) -> list[str]:
    return [
        line
        for line in lines
        if line.startswith("twin_ytd,") and f",site={site}," in line and f"={carrier}" in line
    ]


def _hour_of_live_readings(w: Worker, shuffle: bool) -> list[dict[str, object]]:
    """A reading of gas-a every 10 s for an hour, one batch each, the wall clock moving
    with them (in shuffled order: late readings restate, which changes the year to date)."""
    readings = [
        reading("gas-a", T0 + k * 10_000, 5.0 + k % 7, "MWh", "natural_gas") for k in range(360)
    ]
    order = list(readings)
    if shuffle:
        random.Random(3).shuffle(order)

    async def run() -> None:
        for r in order:
            w.clock += 10_000
            await w.deliver([("a", [r])])

    asyncio.run(run())
    return readings


def test_year_to_date_is_rewritten_at_most_every_interval_and_ends_exact() -> None:
    for shuffle in (False, True):
        w = Worker(60_000, 600_000, ytd_every_ms=EVERY_MS)
        readings = _hour_of_live_readings(w, shuffle)
        live = _ytd_lines(w.lines, "a", "natural_gas")
        # 360 batches over an hour of wall clock: a write once 600 s have passed, not 360
        assert 1 <= len(live) <= 3600_000 // EVERY_MS + 1, (shuffle, len(live))
        assert not open_site_windows(w.lines)
        asyncio.run(close_all(w))
        want = offline(readings)
        got = stored(w.store)
        assert {k: v for k, v in got.items() if k in want} == want


def test_every_batch_writes_the_year_to_date_when_the_interval_is_zero() -> None:
    w = Worker(60_000, 600_000, ytd_every_ms=0)
    _hour_of_live_readings(w, shuffle=False)
    assert len(_ytd_lines(w.lines, "a", "natural_gas")) == 360


def test_a_change_left_waiting_by_a_stop_is_written_by_the_next_worker() -> None:
    w = Worker(60_000, 600_000, ytd_every_ms=EVERY_MS)
    r = reading("gas-a", T0, 12.5, "MWh", "natural_gas")
    asyncio.run(w.deliver([("a", [r])]))
    assert not _ytd_lines(w.lines, "a", "natural_gas")  # waiting
    # the worker stops here; the next one starts from the stored table, later
    lines: list[str] = []

    async def write(batch: object) -> None:
        lines.extend(batch)  # type: ignore[call-overload]

    async def send(*_: object) -> None:
        return None

    nxt = SiteStage(
        w.catalog, w.site_table, write, send, w.sites.topics, "t", 60_000, ytd_every_ms=EVERY_MS
    )
    nxt.wall_ms = lambda: w.clock + EVERY_MS - 1
    nxt.first_batch = time.monotonic() - 1000
    asyncio.run(nxt.flush_idle(1, caught_up=lambda p: True, now_ms=NOW))
    assert not _ytd_lines(lines, "a", "natural_gas")  # not due yet: nothing closes either
    nxt.wall_ms = lambda: w.clock + EVERY_MS
    asyncio.run(nxt.flush_idle(1, caught_up=lambda p: True, now_ms=NOW))
    (line,) = _ytd_lines(lines, "a", "natural_gas")
    assert "readings=1i" in line
    # written once: the stored state says nothing waits any more
    asyncio.run(nxt.flush_idle(1, caught_up=lambda p: True, now_ms=NOW))
    assert len(_ytd_lines(lines, "a", "natural_gas")) == 1
