"""Backfill beside live: readings/s of a worker restating the past, next to its live rate.

One run, one worker identity, the real stack:

1. **live**: ``--envelopes`` envelopes of recent readings (in order, every window open
   or closing on time) drained from the start of the topic;
2. **backfill**: the worker is stopped, the same number of envelopes of the two hours
   *before* those readings is appended (every reading late: its hours are read back from
   InfluxDB and restated), and the worker, restarted from its tables, drains them.

Each rate is timed by the worker itself (first batch begun to last batch stored), the
worker's RSS is read after each phase. Then, in-process, the site stage's state for
``--meters`` meters (default 165,000, in sites of 50) after live readings and after a
backfill of an hour of every meter: what the restatement horizon costs in memory (the
state holds open windows only, so the horizon itself should cost nothing).

    .venv/bin/python bench/bench_backfill.py [--envelopes 400] [--meters 165000]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import (  # noqa: E402
    catalog,
    envelopes,
    get,
    prepare_run,
    produce,
    rss_mb,
    start_worker,
)

from streams.delivery import Topics  # noqa: E402
from streams.envelope import Record  # noqa: E402
from streams.site_stage import SiteStage  # noqa: E402
from tests.unit.streams.dict_table import DictTable  # noqa: E402

HOUR = 3_600_000


def drain(run: Any, topic: str, records: int) -> tuple[float, float, dict[str, Any]]:
    """(readings/s, RSS MB, counters) of a worker (re)started on ``topic`` until it has
    processed ``records`` more records."""
    proc, port = start_worker(run.env, run.name, topic, run.cat_file)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            c = get(port, "/twin/")["counters"]
            if c["records"] >= records and c["last_batch_wall"] > 0:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the worker did not drain {records} records in time")
        elapsed = c["last_batch_wall"] - c["first_batch_wall"]
        return c["accepted"] / elapsed, rss_mb(proc.pid), c
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def state_memory(meters: int, per_site: int = 50) -> tuple[float, float, float]:
    """In-process: bytes per meter of the stored states after an hour of live readings at
    1/min, after a backfill of the hour before (restated), and MB held by the decoded
    states, for ``meters`` meters."""
    sites = max(1, meters // per_site)
    cat = catalog("memc", sites, per_site)
    table = DictTable()

    async def write(lines: Any) -> None:
        return None

    async def send(*args: Any) -> None:
        return None

    class NoStore:
        async def readings(self, *args: Any) -> list[Any]:
            return []

        async def site_windows(self, *args: Any) -> dict[Any, Any]:
            return {}

    stage = SiteStage(
        cat, table, write, send, Topics("dl", "late", "cu"), "mem", 60_000, store=NoStore()
    )
    now = int(time.time() * 1000)
    now -= now % 60_000
    import orjson

    def batch(t0: int, minutes: int, offset: int) -> list[Record]:
        out = []
        for s in range(sites):
            site = f"s{s}"
            readings = [
                {
                    "meter": cat.specs[j].meter,
                    "ts": t0 + k * 60_000,
                    "value": 1.0,
                    "unit": next(iter(cat.specs[j].units)),
                    "carrier": cat.specs[j].carrier,
                    "quality": "measured",
                }
                for k in range(minutes)
                for j in cat.sites[("memc", site)]
            ]
            body = {"schema": "readings/1", "cluster": "memc", "site": site, "source": "b",
                    "sent_at": now, "readings": readings}  # fmt: skip
            out.append(Record("r", 0, offset + s, now, site.encode(), orjson.dumps(body)))
        return out

    def stored_bytes() -> int:
        return sum(len(table.data[k]) for k in table.data)

    for i in range(6):  # an hour at 1/min, in 10-minute batches
        asyncio.run(stage.process(batch(now - HOUR + i * 600_000, 10, (i + 1) * sites)))
    live = stored_bytes() / meters
    for i in range(6):  # the hour before it, all late
        asyncio.run(stage.process(batch(now - 2 * HOUR + i * 600_000, 10, (i + 7) * sites)))
    late = stored_bytes() / meters
    stage._live.clear()  # what a worker holds decoded is one state per site, as below
    tracemalloc.start()
    decoded = [stage.load("memc", f"s{s}", 0) for s in range(sites)]
    held = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    del decoded
    return live, late, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envelopes", type=int, default=400, help="envelopes per phase")
    ap.add_argument("--readings", type=int, default=500, help="readings per envelope")
    ap.add_argument("--meters", type=int, default=165_000, help="for the in-process state")
    args = ap.parse_args()

    run = prepare_run("bf", "benchc", 20, 50, ["readings"])
    topic = f"{run.name}-readings"
    bootstrap = run.settings.kafka_bootstrap
    now = int(time.time() * 1000)
    live_t0 = now - HOUR
    n = produce(
        bootstrap,
        topic,
        envelopes(run.cat, "benchc", args.envelopes, args.readings, live_t0, False),
    )
    live_rate, live_rss, _ = drain(run, topic, args.envelopes)
    m = produce(
        bootstrap,
        topic,
        envelopes(run.cat, "benchc", args.envelopes, args.readings, live_t0 - 2 * HOUR, False),
    )
    back_rate, back_rss, c2 = drain(run, topic, args.envelopes)
    print(f"live:     {n:,} readings, {live_rate:,.0f} readings/s, worker RSS {live_rss:.0f} MB")
    print(
        f"backfill: {m:,} readings (late: {c2['late']:,}), {back_rate:,.0f} readings/s, "
        f"worker RSS {back_rss:.0f} MB"
    )
    print(f"backfill / live: {back_rate / live_rate:.2f}")
    live_b, late_b, held = state_memory(args.meters)
    print(
        f"site-stage state, {args.meters:,} meters (in-process): {live_b:,.0f} bytes/meter "
        f"stored after an hour live, {late_b:,.0f} after restating the hour before; "
        f"decoded states {held:,.0f} MB"
    )


if __name__ == "__main__":
    main()
