"""The cluster stage reads site windows back only once the site stage's write has landed.

Found on the demo: a fresh twin draining a week of readings logged 1,409 "incomplete stored
point" errors, because the cluster stage restated windows from InfluxDB while the site
stage's overlapped commit was still writing them (a query may see some fields of a point).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from streams.restate import StoredReading
from streams.stored import SettledReads, SiteWindows


class _Recorder:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def readings(
        self, twin: str, cluster: str, site: str, spans: Sequence[tuple[int, int]]
    ) -> list[StoredReading]:
        self.events.append("read readings")
        return []

    async def site_windows(
        self, twin: str, cluster: str, res: str, starts: Sequence[int]
    ) -> SiteWindows:
        self.events.append("read windows")
        return {}


def test_reads_wait_for_the_write_in_flight() -> None:
    events: list[str] = []

    async def run() -> None:
        write_done = asyncio.Event()

        async def write_in_flight() -> None:
            await asyncio.sleep(0.05)
            events.append("write landed")
            write_done.set()

        task = asyncio.create_task(write_in_flight())
        store = SettledReads(_Recorder(events), write_done.wait)
        await store.site_windows("t", "c", "1m", [0])
        await store.readings("t", "c", "s", [(0, 1)])
        await task

    asyncio.run(run())
    assert events == ["write landed", "read windows", "read readings"]
