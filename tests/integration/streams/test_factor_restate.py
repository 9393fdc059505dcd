"""``clustertwin restate`` on the real stack: a mid-year grid factor revision, exactly.

The simulated Dunkirk's four hours around 1 July (30 June 22:00 to 1 July 02:00 UTC) go
through the real connector (its backfill) and the worker. The French grid factor is then
revised from 36 to 40 gCO2/kWh from 1 July, in a library file, and restated twice. The
report's year to date (current edition) must equal the offline figures with the readings
before July at the old factor and those from July at the new one, recomputed from their
energy; the previous edition must equal the offline figures at the old factor; and the
restatement records' tonnes changed must be that difference. The second run changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
from streams import influx_schema as schema
from streams.meter_vectors import NANO, offline_price
from streams.twinlink import catalog_from_twin
from tests.integration.streams.harness import WorkerProc, summarize, wait_equal
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
    with stack.influx_client() as client:
        tables = client.query_api().query(
            f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
            f' |> filter(fn: (r) => r._measurement == "{schema.FACTOR_RESTATEMENT}"'
            f' and r.{schema.TWIN} == "{twin}")'
        )
    return sorted(
        (r.values[schema.SITE], r.get_field(), r.get_time().isoformat(), r.get_value())
        for t in tables
        for r in t.records
    )


def test_a_mid_year_grid_revision_restates_the_year_to_date_exactly(
    stack: Any, unique_name: str, tmp_path: Path
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

    restate = ("restate", "dunkirk", "--factor", FR, "--factors", str(revision))
    try:
        worker.start()
        worker.wait_ready()
        cli("backfill", str(path), "--from", _iso(start), "--to", _iso(end))
        expected = _expected(cfg, start, end)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, expected, 240)
            assert not problems, summarize(problems) + "\n" + worker.tail()
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
    finally:
        worker.stop()

    # offline: each reading of a grid-priced meter from 1 July, recomputed from its energy
    delta: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    sim = SimulatorConnector(
        SimulatorConfig.model_validate(cfg), MeterIndex.from_cluster(load_cluster("dunkirk"))
    )
    restated = 0

    async def collect() -> None:
        nonlocal restated
        async for batch in sim.history(start, end):
            for s in batch:
                spec = catalog.specs[catalog.index[s.meter]]
                if s.ts < july or spec.window_key:  # before July, or a transfer
                    continue
                figures = offline_price(catalog, s.meter, str(s.unit), s.value)
                for k, scope in ((2, "scope2_location"), (3, "scope2_market")):
                    if f"{scope}={FR}@" in spec.provenance:
                        delta[spec.site][k] += round(figures[0] * new_factor) - figures[k]
                restated += 1

    asyncio.run(collect())
    assert restated and sum(d[2] for d in delta.values()) > 0

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
    d_loc = sum(d[2] for d in delta.values())
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
