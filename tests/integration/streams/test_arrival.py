"""The figures do not depend on when or in what order readings arrive: the real stack.

Two days of a cluster's readings are delivered five ways, each to its own worker (own
topics, consumer group and ``twin`` tag): in order; shuffled within 15 minutes; one
connector of a site 20 minutes behind the other; the last 2 hours live and the first 46
hours afterwards as a backfill; every reading twice. Then the backfill again with the worker
SIGKILLed twice while it restates. Every window of every level and resolution, the year to
date, each meter's latest reading and the newest progress point in InfluxDB must equal the
offline figures exactly (nano-unit sums), in every one of them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.streams.harness import (
    HEADERS,
    Expected,
    WorkerProc,
    compare_ytd_latest,
    make_catalog,
    producer,
    summarize,
    wait_equal,
)

pytestmark = pytest.mark.integration

HOUR = 3_600_000
STEP = 5 * 60_000  # a reading per meter every 5 minutes
Reading = tuple[str, str, int, float, int]  # site, meter, ts, value, interval start or -1


def _readings(catalog: Any, cluster: str, end: int, intervals: bool = False) -> list[Reading]:
    rng = random.Random(2026)
    start = end - 48 * HOUR
    out: list[Reading] = []
    for t in range(start - start % STEP, end, STEP):
        for site in catalog.clusters[cluster]:
            for i in catalog.sites[(cluster, site)]:
                spec = catalog.specs[i]
                value = round(rng.uniform(0.0, 50.0), rng.choice([1, 3, 6]))
                ts = t + (i % 7) * 1_000
                # with intervals, each reading measures the 5 minutes up to it
                out.append((site, spec.meter, ts, value, ts - STEP if intervals else -1))
    return out


def _envelopes(
    catalog: Any, cluster: str, readings: list[Reading], per: int = 40
) -> Iterator[tuple[str, bytes]]:
    """Readings in their arrival order, cut into envelopes of one site as a connector
    polls: consecutive readings of the same site, at most ``per`` at a time."""
    chunk: list[Reading] = []
    for r in readings:
        if chunk and (chunk[0][0] != r[0] or len(chunk) >= per):
            yield _envelope(catalog, cluster, chunk)
            chunk = []
        chunk.append(r)
    if chunk:
        yield _envelope(catalog, cluster, chunk)


def _envelope(catalog: Any, cluster: str, chunk: list[Reading]) -> tuple[str, bytes]:
    items = []
    for _, meter, ts, value, start in chunk:
        spec = catalog.specs[catalog.index[meter]]
        item = {
            "meter": meter,
            "ts": ts,
            "value": value,
            "unit": next(iter(spec.units)),
            "carrier": spec.carrier,
            "quality": "measured",
        }
        if start >= 0:
            item["start"] = start
        items.append(item)
    body = {
        "schema": "readings/2" if any("start" in i for i in items) else "readings/1",
        "cluster": cluster,
        "site": chunk[0][0],
        "source": "arrival-test",
        "sent_at": int(time.time() * 1000),
        "readings": items,
    }
    return chunk[0][0], orjson.dumps(body)


def _in_order(readings: list[Reading], end: int) -> list[Reading]:
    return sorted(readings, key=lambda r: r[2])


def _shuffled(readings: list[Reading], end: int) -> list[Reading]:
    rng = random.Random(15)
    return sorted(readings, key=lambda r: r[2] + rng.uniform(0, 15 * 60_000))


def _lagging(readings: list[Reading], end: int) -> list[Reading]:
    # the site's odd meters come through a second connector, 20 minutes behind
    first_site = readings[0][0]
    lag = 20 * 60_000

    def arrival(r: Reading) -> int:
        behind = r[0] == first_site and int(r[1].rsplit("m", 1)[1]) % 2 == 1
        return r[2] + (lag if behind else 0)

    return sorted(readings, key=arrival)


def _backfill(readings: list[Reading], end: int) -> list[Reading]:
    cut = end - 2 * HOUR
    live = sorted((r for r in readings if r[2] >= cut), key=lambda r: r[2])
    return live + sorted((r for r in readings if r[2] < cut), key=lambda r: r[2])


def _twice(readings: list[Reading], end: int) -> list[Reading]:
    ordered = sorted(readings, key=lambda r: r[2])
    out: list[Reading] = []
    for i, r in enumerate(ordered):
        out.append(r)
        if i >= 300:  # the copy comes 300 readings later (a redelivery after a reconnect)
            out.append(ordered[i - 300])
    return out + ordered[max(len(ordered) - 300, 0) :]


ORDERS = {
    "in-order": _in_order,
    "shuffled-15min": _shuffled,
    "connector-20min-behind": _lagging,
    "backfill-46h": _backfill,
    "every-reading-twice": _twice,
}


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, list[Reading], Path]:
    cluster = "arr" + format(random.randrange(16**6), "06x")
    catalog = make_catalog(cluster, 3, 4)
    path = tmp_path_factory.mktemp("arrival") / "catalog.json"
    path.write_text(catalog.to_json())
    end = int(time.time() * 1000) - HOUR
    return catalog, cluster, _readings(catalog, cluster, end), path


@pytest.fixture(scope="module")
def two_days_of_intervals(
    two_days: tuple[Any, str, list[Reading], Path],
) -> tuple[Any, str, list[Reading], Path]:
    catalog, cluster, readings, path = two_days
    end = max(r[2] for r in readings) + 1
    return catalog, cluster, _readings(catalog, cluster, end, intervals=True), path


def _expected(catalog: Any, readings: list[Reading]) -> Expected:
    expected = Expected()
    for _, meter, ts, value, start in readings:
        unit = next(iter(catalog.specs[catalog.index[meter]].units))
        expected.add(catalog, meter, unit, ts, value, start)
    return expected


def _run(stack: Any, name: str, two_days: Any, order: str, kills: int = 0) -> None:
    catalog, cluster, readings, path = two_days
    end = max(r[2] for r in readings)
    sent = list(_envelopes(catalog, cluster, ORDERS[order](readings, end)))
    expected = _expected(catalog, readings)
    worker = WorkerProc(stack, name, path)
    prod = producer(stack.kafka_bootstrap)
    try:
        worker.start()
        worker.wait_ready()
        kill_at = {len(sent) * (k + 2) // (kills + 3) for k in range(kills)}
        for i, (site, value) in enumerate(sent):
            prod.send(worker.readings_topic, key=site.encode(), value=value, headers=HEADERS)
            if i in kill_at:
                prod.flush(timeout=60)
                time.sleep(1.0)  # let it get into the batch
                worker.kill()
                worker.start()
                worker.wait_ready()
        prod.flush(timeout=120)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, name, expected, 240)
            assert not problems, f"{order}: " + summarize(problems) + "\n" + worker.tail()
            problems = compare_ytd_latest(expected, client, stack.influx_bucket, name)
            assert not problems, f"{order}: " + "\n".join(problems[:20])
            problems = _progress(expected, client, stack.influx_bucket, name)
            assert not problems, f"{order}: " + "\n".join(problems[:20])
        site = catalog.clusters[cluster][0]
        view = worker.get(f"/twin/{cluster}/{site}/")
        if order == "every-reading-twice":
            assert view["duplicates"] > 0, view
        if order == "backfill-46h":
            assert view["late"] > 0, view
    finally:
        prod.close()
        worker.stop()


def _progress(expected: Expected, client: Any, bucket: str, twin: str) -> list[str]:
    """The newest progress point of every site and cluster holds the offline year to date
    (scope 1 and scope 2 location-based, each one nano-unit sum divided once)."""
    query = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "progress" and r.twin == "{twin}")
  |> filter(fn: (r) => r._field == "ytd_tco2e_s1" or r._field == "ytd_tco2e_s2_location")
  |> last()
'''
    want: dict[tuple[str, str], int] = {}
    for (level, ident, _carrier, _year), vec in expected.ytd.items():
        key = ident if level == "site" else "_cluster"
        for field, k in (("ytd_tco2e_s1", 1), ("ytd_tco2e_s2_location", 2)):
            want[(key, field)] = want.get((key, field), 0) + vec[k]
    problems: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got: dict[tuple[str, str], float] = {}
        for table in client.query_api().query(query):
            for rec in table.records:
                got[(rec.values["site"], rec.get_field())] = rec.get_value()
        problems = [
            f"progress {k}: InfluxDB {got.get(k)!r} != offline {v / 1e9!r}"
            for k, v in want.items()
            if got.get(k) != v / 1e9
        ]
        if not problems:
            return []
        time.sleep(2)
    return problems


@pytest.mark.parametrize("order", list(ORDERS))
def test_every_arrival_order_gives_the_offline_figures(stack, unique_name, two_days, order):
    _run(stack, unique_name, two_days, order)


@pytest.mark.parametrize("order", ["shuffled-15min", "backfill-46h"])
def test_interval_readings_in_any_order_give_the_offline_figures(
    stack, unique_name, two_days_of_intervals, order
):
    _run(stack, unique_name, two_days_of_intervals, order)


def test_a_backfill_with_the_worker_killed_twice_gives_the_offline_figures(
    stack, unique_name, two_days
):
    _run(stack, unique_name, two_days, "backfill-46h", kills=2)
