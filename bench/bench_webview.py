"""What the live view costs the worker per update, for a cluster of 100 sites and 5,000 meters.

The event stream recomputes a cluster's figures once a second per open page (a site page also
its meters). This times, in-process and side by side on the same state, the three things an
update does, and prints the bytes each sends:

- ``cluster``: the cluster overview (year to date, last hour, completeness, 100 site rows);
- ``site``: one site's figures and one page of its meters;
- ``shared``, ``site_shared``: the overview, and another site, for more pages open in the same
  tick (the decoded states and figures are shared for half a second, so more viewers cost
  next to nothing);
- ``twin_json``: the worker's existing ``/twin/CLUSTER/`` JSON, the reference it is set against.

The state is the worker's real one: the site and cluster stages (``streams.site_stage``,
``streams.cluster_stage``) fed ``--hours`` of readings of every meter (one a minute) through
their real compute path.

    .venv/bin/python bench/bench_webview.py [--sites 100] [--meters 50] [--hours 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.cluster_stage import ClusterStage
from streams.delivery import Topics
from streams.envelope import Record
from streams.meter_vectors import MeterSpec, MeterVectors
from streams.progress_series import Plan
from streams.site_stage import SiteStage
from streams.webview.routes import ViewSource
from streams.windows import SiteState
from tests.unit.streams.dict_table import DictTable

MINUTE = 60_000


class Flat:
    def at(self, year: float) -> float:
        return 1e6


def catalog(sites: int, meters: int) -> MeterVectors:
    return MeterVectors(
        [
            MeterSpec(
                f"m{s}-{m}",
                f"s{s}",
                "big",
                ("natural_gas", "electricity", "coal")[m % 3],
                {"MWh": (1.0, (0.2 if m % 3 != 1 else 0.0, 0.05, 0.03, 0.01))},
                factors=(("scope1", f"f{m % 3}", "1", "bench", "", 0.2),),
            )
            for s in range(sites)
            for m in range(meters)
        ]
    )


async def build(sites: int, meters: int, hours: int) -> tuple[ViewSource, ClusterStage]:
    cat = catalog(sites, meters)
    updates: list[tuple[int, bytes]] = []

    async def write(lines: Any) -> None:
        return None

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        if topic == "cu":
            updates.append((0, value))

    site_table, cluster_table = DictTable(), DictTable()
    stage = SiteStage(cat, site_table, write, send, Topics("dl", "late", "cu"), "b", 60_000)
    clusters = ClusterStage(cat, cluster_table, write, "b", 6 * 3_600_000)
    now = int(time.time() * 1000)
    start = now - now % MINUTE - hours * 60 * MINUTE
    offset = 0
    for t in range(start, now - MINUTE, MINUTE):
        records = []
        for s in range(sites):
            readings = [
                {
                    "meter": f"m{s}-{m}",
                    "ts": t,
                    "value": 1.5,
                    "unit": "MWh",
                    "carrier": ("natural_gas", "electricity", "coal")[m % 3],
                    "quality": "measured",
                }
                for m in range(meters)
            ]
            body = {
                "schema": "readings/1",
                "cluster": "big",
                "site": f"s{s}",
                "source": "b",
                "sent_at": t,
                "readings": readings,
            }
            records.append(Record("r", 0, offset, t, f"s{s}".encode(), orjson.dumps(body)))
            offset += 1
        await stage.process(records)
        if updates:
            batch, updates[:] = list(updates), []
            await clusters.process(batch)

    async def no_rows(flux: str) -> list[dict[str, str]]:
        return []

    def site_state(site: str) -> SiteState | None:
        raw = site_table.get(site.encode())
        return None if raw is None else SiteState.loads(raw)

    plans = {("big", ""): Plan(Flat())}
    return ViewSource(cat, "b", "b", plans, site_state, clusters.held, no_rows), clusters


def timed(fn: Any, rounds: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        size = len(orjson.dumps(fn()))
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--meters", type=int, default=50, help="per site")
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    began = time.perf_counter()
    view, clusters = asyncio.run(build(args.sites, args.meters, args.hours))
    print(
        f"state: {args.sites} sites x {args.meters} meters, {args.hours} h of readings "
        f"(built in {time.perf_counter() - began:.1f} s)"
    )

    def cold(fn: Any) -> Any:
        def run() -> Any:
            view._cache.clear()  # as the first page to ask in a tick
            return fn()

        return run

    rows = {
        "cluster": cold(lambda: asyncio.run(view.cluster("big"))),
        "site": cold(lambda: view.site("big", "s0", 0)),
        "shared": lambda: asyncio.run(view.cluster("big")),  # a second page, same tick
        "site_shared": lambda: view.site("big", "s1", 0),  # a site page, same tick
        "twin_json": lambda: clusters.twin_json("big"),
    }
    results = {name: timed(fn, args.rounds) for name, fn in rows.items()}
    print(f"{'update':<12} {'median ms':>10} {'bytes':>9}")
    for name, (ms, size) in results.items():
        print(f"{name:<12} {ms:>10.2f} {size:>9,}")
    ratio = results["cluster"][0] / results["twin_json"][0]
    # a site page's tick: the overview (states decoded once) and the site (states shared)
    tick = results["cluster"][0] + results["site_shared"][0]
    print(
        f"cluster overview / twin JSON time: {ratio:.2f}x. The first page of a tick costs"
        f" {results['cluster'][0]:.1f} ms, every other page in it {results['shared'][0]:.2f} ms:"
        f" at one tick a second, {tick / 10:.1f}% of a core for the overview and a site page"
    )


if __name__ == "__main__":
    main()
