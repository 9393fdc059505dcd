"""``clustertwin restate`` on the real stack: a mid-year grid factor revision, exactly.

The simulated Dunkirk's four hours around 1 July (30 June 22:00 to 1 July 02:00 UTC) go to
the worker, through the real connector (its backfill, in order) or straight to Kafka
shuffled, one in five twice and the first hour three hours late. The French grid factor is
then revised from 36 to 40 gCO2/kWh from 1 July, in a library file, and restated twice,
while the worker keeps running. Offline, the readings before July stay at the old factor
and those from July are recomputed from their energy at the new one. The current edition
must equal that to the nano-unit: the report's year to date, every hourly window of the
cluster and of each affected site (``streams.editions.hourly_windows``), and the progress
the worker writes after the restatement (it must not undo it). The previous edition must
equal the offline figures at the old factor: the report's, and the windows as the worker
wrote them. The restatement records' tonnes changed are the difference; the second run
changes no stored point.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
from streams import influx_schema as schema
from streams.editions import hourly_windows
from streams.meter_vectors import NANO, MeterVectors, offline_price
from streams.sink import InfluxSink
from streams.twinlink import catalog_from_twin
from streams.windows import NFIG
from tests.integration.streams.harness import HEADERS, WorkerProc, producer, summarize, wait_equal
from tests.integration.streams.test_backfill import _expected, _iso
from twin.factors import FactorLibrary
from twin.model import load_cluster
from twin.readings import MeterIndex
from twin.yaml_loader import load_yaml

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clustertwin")
HOUR = 3_600_000
FR = "grid:FR:2021"


def _revision_file(path: Path, year: int) -> FactorLibrary:
    doc = {
        "kind": "grid",
        "carrier": "electricity",
        "factors": [
            {
                "id": FR,
                "region": "FR",
                "year": 2021,
                "version": f"{year}-07",
                "valid_from": f"{year}-07-01",
                "unit": "g/kWh",
                "values": {"CO2": 40},
                "source": "test: a mid-year revision of the French grid factor",
            }
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return FactorLibrary.from_documents([(str(path), load_yaml(path.read_text()))])


def _stored_restatements(stack: Any, twin: str) -> list[tuple[Any, ...]]:
    """Every point a restatement wrote (the year to date's and the windows' changes)."""
    with stack.influx_client() as client:
        tables = client.query_api().query(
            f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
            f' |> filter(fn: (r) => (r._measurement == "{schema.FACTOR_RESTATEMENT}"'
            f' or r._measurement == "{schema.WINDOW_RESTATEMENT}") and r.{schema.TWIN} == "{twin}")'
        )
    return sorted(
        (
            r.get_measurement(),
            r.values.get(schema.SITE) or "",
            r.values[schema.CARRIER],
            r.get_field(),
            r.get_time().isoformat(),
            r.get_value(),
        )
        for t in tables
        for r in t.records
    )


def _progress(stack: Any, twin: str) -> dict[str, dict[str, Any]]:
    """The newest progress point of each site and of the cluster (site ``_cluster``)."""
    with stack.influx_client() as client:
        tables = client.query_api().query(
            f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
            f' |> filter(fn: (r) => r._measurement == "{schema.PROGRESS}"'
            f' and r.{schema.TWIN} == "{twin}") |> last()'
        )
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for t in tables:
        for r in t.records:
            out[r.values[schema.SITE]][r.get_field()] = r.get_value()
            out[r.values[schema.SITE]]["_time"] = r.get_time()
    return out


def _windows(stack: Any, twin: str, site: str | None, start: int, end: int, edition: str) -> Any:
    async def read() -> Any:
        sink = InfluxSink(
            stack.influx_url, stack.influx_token, stack.influx_org, stack.influx_bucket
        )
        try:
            return await hourly_windows(sink, twin, "dunkirk", site, start, end, edition)
        finally:
            await sink.close()

    return asyncio.run(read())


# -- how the readings arrive -------------------------------------------------------------------
Arrive = Callable[[Any, WorkerProc, MeterVectors, dict[str, Any], Path, Callable[..., str]], None]


def _by_backfill(
    stack: Any,
    worker: WorkerProc,
    catalog: MeterVectors,
    cfg: dict[str, Any],
    path: Path,
    cli: Callable[..., str],
) -> None:
    """In order, through the real connector (its backfill)."""
    cli("backfill", str(path), "--from", cfg["start"], "--to", cfg["end"])


def _shuffled_repeated_late(
    stack: Any,
    worker: WorkerProc,
    catalog: MeterVectors,
    cfg: dict[str, Any],
    path: Path,
    cli: Callable[..., str],
) -> None:
    """The same readings shuffled, one in five sent twice, and the first hour of each
    edition (30 June 22:00, 1 July 00:00) one to three hours late: after the others, once
    their windows have closed (the worker restates them)."""
    start = _ms(cfg["start"])
    samples = _samples(cfg, start, _ms(cfg["end"]) + 1)
    rng = random.Random(16)

    def is_late(ts: int) -> bool:
        return (ts - start) // HOUR in (0, 2)

    first = [x for x in samples if is_late(x.ts)]
    rest = [x for x in samples if not is_late(x.ts)]
    rest += rng.sample(rest, len(rest) // 5)
    rng.shuffle(rest)
    late = first + rng.sample(first, len(first) // 5)
    rng.shuffle(late)
    prod = producer(stack.kafka_bootstrap)
    try:
        for chunk in (rest, late):
            for i in range(0, len(chunk), 40):
                for site, body in _envelopes(catalog, chunk[i : i + 40]):
                    prod.send(worker.readings_topic, key=site.encode(), value=body, headers=HEADERS)
            prod.flush(timeout=60)
            time.sleep(3)  # the late hour comes once the rest is in
    finally:
        prod.close()


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _samples(cfg: dict[str, Any], start: int, end: int) -> list[Any]:
    sim = SimulatorConnector(
        SimulatorConfig.model_validate(cfg), MeterIndex.from_cluster(load_cluster("dunkirk"))
    )
    out: list[Any] = []

    async def collect() -> None:
        async for batch in sim.history(start, end):
            out.extend(batch)

    asyncio.run(collect())
    return out


def _envelopes(catalog: MeterVectors, chunk: list[Any]) -> list[tuple[str, bytes]]:
    """A chunk of samples as one readings envelope per site, as a connector sends them."""
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in chunk:
        spec = catalog.specs[catalog.index[x.meter]]
        by_site[spec.site].append(
            {
                "meter": x.meter,
                "ts": x.ts,
                "value": x.value,
                "unit": str(x.unit),
                "carrier": x.carrier or spec.carrier,
                "quality": x.quality,
            }
        )
    return [
        (
            site,
            orjson.dumps(
                {
                    "schema": "readings/1",
                    "cluster": "dunkirk",
                    "site": site,
                    "source": "restate-test",
                    "sent_at": int(time.time() * 1000),
                    "readings": items,
                }
            ),
        )
        for site, items in by_site.items()
    ]


@pytest.mark.parametrize(
    "arrive", [_by_backfill, _shuffled_repeated_late], ids=lambda f: f.__name__
)
def test_a_mid_year_grid_revision_restates_the_year_to_date_windows_and_progress_exactly(
    stack: Any, unique_name: str, tmp_path: Path, arrive: Arrive
) -> None:
    now = datetime.now(UTC)
    year = now.year if (now.month, now.day) > (7, 1) else now.year - 1
    july = int(datetime(year, 7, 1, tzinfo=UTC).timestamp() * 1000)
    start, end = july - 2 * HOUR, july + 2 * HOUR
    catalog = catalog_from_twin(["dunkirk"])
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(catalog.to_json())
    revision = tmp_path / "revision.yaml"
    new_factor = _revision_file(revision, year).get(FR).gases["CO2"]
    worker = WorkerProc(stack, unique_name, catalog_file)
    cfg = {
        "connector": "simulator",
        "name": unique_name[-30:],
        "cluster": "dunkirk",
        "seed": 5,
        "speedup": 0,
        "step_s": 900,
        "start": _iso(start),
        "end": _iso(end - 1),
        "kafka": {"topic": worker.readings_topic, "deadletter_topic": f"{unique_name}-cdl"},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, **stack.local.settings(), "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [CLI, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    # offline: each reading of a grid-priced meter from 1 July, recomputed from its energy,
    # per site (year to date) and per site and hour (windows; the simulator's are instants)
    delta: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    hourly: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * NFIG)
    restated = 0
    for x in _samples(cfg, start, end):
        spec = catalog.specs[catalog.index[x.meter]]
        if x.ts < july or spec.window_key:  # before July, or a transfer
            continue
        figures = offline_price(catalog, x.meter, str(x.unit), x.value)
        for k, scope in ((2, "scope2_location"), (3, "scope2_market")):
            if f"{scope}={FR}@" in spec.provenance:
                change = round(figures[0] * new_factor) - figures[k]
                delta[spec.site][k] += change
                hourly[(spec.site, spec.carrier, x.ts - x.ts % HOUR)][k] += change
        restated += 1
    assert restated and sum(d[2] for d in delta.values()) > 0

    restate = ("restate", "dunkirk", "--factor", FR, "--factors", str(revision))
    expected = _expected(cfg, start, end)
    expected_s2l = sum(
        vec[2] for (lv, _i, _c, y), vec in expected.ytd.items() if lv == "cluster" and y == year
    )
    try:
        worker.start()
        worker.wait_ready()
        arrive(stack, worker, catalog, cfg, path, cli)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, expected, 240)
            assert not problems, summarize(problems) + "\n" + worker.tail()
        before = _progress(stack, worker.name)
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and before["_cluster"].get(schema.YTD_SCOPE_FIELDS[1]) != expected_s2l / NANO
        ):
            time.sleep(1)
            before = _progress(stack, worker.name)
        first = cli(*restate, "--twin", worker.name)
        stored_once = _stored_restatements(stack, worker.name)
        cli(*restate, "--twin", worker.name)
        assert _stored_restatements(stack, worker.name) == stored_once  # idempotent
        report = json.loads(
            cli("report", "dunkirk", "--year", str(year), "--twin", worker.name, "--format", "json")
        )
        previous = json.loads(
            cli(
                "report",
                *("dunkirk", "--year", str(year), "--twin", worker.name),
                *("--format", "json", "--edition", "previous"),
            )
        )
        # the worker rereads the restatements every 30 s: its progress then carries them,
        # rewritten at the same times, and keeps them
        d_loc = sum(d[2] for d in delta.values())
        deadline = time.monotonic() + 120
        after = _progress(stack, worker.name)
        while time.monotonic() < deadline:
            after = _progress(stack, worker.name)
            got = round(after["_cluster"][schema.YTD_SCOPE_FIELDS[1]] * NANO)
            if got == round(before["_cluster"][schema.YTD_SCOPE_FIELDS[1]] * NANO) + d_loc:
                break
            time.sleep(2)
        time.sleep(6)  # a few more progress writes: they must not undo it
        after = _progress(stack, worker.name)
        windows = {
            (site, edition): _windows(stack, worker.name, site, start, end, edition)
            for site in (None, *{s for s, _c, _h in hourly})
            for edition in ("current", "previous")
        }
    finally:
        worker.stop()

    def nano(x: float) -> int:
        return round(x * NANO)

    def totals(rep: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["site"], r["line"]): r for r in rep["rows"] if r["line"] == "total"}

    cur, old = totals(report), totals(previous)
    offline_old = [0] * 4
    for (level, _id, _carrier, y), vec in expected.ytd.items():
        if level == "cluster" and y == year:
            for k in range(4):
                offline_old[k] += vec[1 + k]
    c_cur, c_old = cur[("_cluster", "total")], old[("_cluster", "total")]
    assert nano(c_old["scope2_location_tco2e"]) == offline_old[1]  # the previous edition
    d_mkt = sum(d[3] for d in delta.values())
    assert nano(c_cur["scope2_location_tco2e"]) == offline_old[1] + d_loc
    assert nano(c_cur["scope2_market_tco2e"]) == offline_old[2] + d_mkt
    assert nano(c_cur["scope1_net_tco2e"]) == nano(c_old["scope1_net_tco2e"]) == offline_old[0]
    for site, d in delta.items():
        got = nano(cur[(site, "total")]["scope2_location_tco2e"])
        assert got == nano(old[(site, "total")]["scope2_location_tco2e"]) + d[2], site

    # the records: one per affected site, the tonnes changed are the difference
    records = [r for r in report["restatements"] if r["reason"].startswith(f"factor {FR}")]
    assert {r["site"] for r in records} == set(delta)
    assert sum(nano(r["new_tco2e"]) - nano(r["old_tco2e"]) for r in records) == d_loc
    assert all(r["hour_ms"] == july for r in records)
    assert not [r for r in previous["restatements"] if r["reason"].startswith("factor")]
    assert f"v2022-02 -> v{year}-07" in first

    # progress: the cluster's and each site's scope 2 year to date restated, exactly; the
    # plan counts scope 1 (dunkirk's), so its year to date and budget share are unchanged
    f_s2l, f_s2m = schema.YTD_SCOPE_FIELDS[1:]
    assert nano(after["_cluster"][f_s2l]) == offline_old[1] + d_loc
    assert nano(after["_cluster"][f_s2m]) == offline_old[2] + d_mkt
    assert nano(before["_cluster"][f_s2l]) == offline_old[1]
    assert after["_cluster"][schema.YTD_TCO2E] == before["_cluster"][schema.YTD_TCO2E]
    assert after["_cluster"][schema.RESTATED_TCO2E] == 0.0
    assert after["_cluster"]["_time"] == before["_cluster"]["_time"]
    for site, d in delta.items():
        assert nano(after[site][f_s2l]) == nano(before[site][f_s2l]) + d[2], site

    # the hourly windows: the previous edition as the worker wrote them (the offline
    # figures at the old factor), the current one with the new factor's readings from July
    for (site, edition), got in windows.items():
        level, ident = ("cluster", "dunkirk") if site is None else ("site", site)
        want: dict[tuple[int, str], list[int]] = {}
        for (lv, i, carrier, res, w), vec in expected.windows.items():
            if lv == level and i == ident and res == "1h" and "|" not in carrier:
                want[(w, carrier)] = list(vec[:NFIG])
        if edition == "current":
            for (s, carrier, h), change in hourly.items():
                if site in (None, s):
                    was = want[(h, carrier)]
                    want[(h, carrier)] = [a + b for a, b in zip(was, change, strict=True)]
        mine = {(h, c): v[:NFIG] for (h, c, t), v in got.items() if not t}
        if site is not None:
            # a site's hourly windows are written once closed: its newest hour may still be
            # open (only its change is there then); every other hour must be there
            prev = windows[(site, "previous")]
            written = {(h, c) for (h, c, t) in prev if not t}
            assert len({h for h, _ in want} - {h for h, _ in written}) <= 1, site
            want = {k: v for k, v in want.items() if k in written}
            mine = {k: v for k, v in mine.items() if k in written}
        assert mine == want, (site, edition)
