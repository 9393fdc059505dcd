"""``clustertwin restate`` of a cluster file's own factor, on the real stack, exactly.

A copy of Dunkirk's cluster file gives the cement works' grid meter a supplier contract of
its own (``factors:`` in the file, 10 kgCO2e/MWh). Four hours around 1 July go through the
real connector (its backfill) and the worker built from that file. The operator then adds
a second version of the contract to the file (20 kgCO2e/MWh from 1 July) and restates it
twice with the edited file. The current edition's market-based scope 2 must equal the
previous one plus, for each reading of the meter from 1 July, its energy at the new
version less its stored figure; the location-based scope 2 and scope 1 must not move; the
records' tonnes changed must be that difference, and the second run changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
from streams.meter_vectors import NANO, offline_price
from streams.twinlink import catalog_from_twin
from tests.integration.streams.harness import WorkerProc, summarize, wait_equal
from tests.integration.streams.test_backfill import _expected, _iso
from tests.integration.streams.test_factor_restate import _stored_restatements
from twin.model import load_cluster
from twin.readings import MeterIndex
from twin.yaml_loader import load_yaml

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clustertwin")
HOUR = 3_600_000
PPA = "supplier:cement-ppa"
METER = "cm-grid-power"
OLD, NEW = 0.010, 0.020


def _cluster_file(path: Path, year: int, revised: bool) -> Path:
    """Dunkirk with the cement works' own contract; ``revised``: with its second version."""
    doc = load_yaml((Path(__file__).parents[3] / "twin/clusters/dunkirk.yaml").read_text())
    contract = {"id": PPA, "carrier": "electricity", "kind": "supplier", "year": year,
                "source": "test: the cement works' supply contract"}  # fmt: skip
    doc["factors"] = [*doc.get("factors", []), {**contract, "version": "1", "tco2e_per_unit": OLD}]
    if revised:
        doc["factors"].append(
            {**contract, "version": "2", "tco2e_per_unit": NEW, "valid_from": f"{year}-07-01"}
        )
    [meter] = [
        m for s in doc["sites"] for a in s["assets"] for m in a["meters"] if m["id"] == METER
    ]
    meter["supplier_factor_id"] = PPA
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_cluster_factor_revision_restates_the_year_to_date_exactly(
    stack: Any, unique_name: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    year = now.year if (now.month, now.day) > (7, 1) else now.year - 1
    july = int(datetime(year, 7, 1, tzinfo=UTC).timestamp() * 1000)
    start, end = july - 2 * HOUR, july + 2 * HOUR
    before = _cluster_file(tmp_path / "dunkirk-v1.yaml", year, revised=False)
    after = _cluster_file(tmp_path / "dunkirk-v2.yaml", year, revised=True)
    catalog = catalog_from_twin([str(before)])
    assert f"scope2_market={PPA}@1" in catalog.specs[catalog.index[METER]].provenance
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, catalog_file)
    cfg = {
        "connector": "simulator",
        "name": unique_name[-30:],
        "cluster": str(before),
        "seed": 9,
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

    restate = ("restate", str(after), "--factor", PPA, "--twin")
    report = ("report", str(after), "--year", str(year), "--format", "json", "--twin")
    try:
        worker.start()
        worker.wait_ready()
        cli("backfill", str(path), "--from", _iso(start), "--to", _iso(end))
        expected = _expected(cfg, start, end)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, expected, 240)
            assert not problems, summarize(problems) + "\n" + worker.tail()
        first = cli(*restate, worker.name)
        stored_once = _stored_restatements(stack, worker.name)
        cli(*restate, worker.name)
        assert _stored_restatements(stack, worker.name) == stored_once  # idempotent
        current = json.loads(cli(*report, worker.name))
        previous = json.loads(cli(*report, worker.name, "--edition", "previous"))
    finally:
        worker.stop()

    # offline: each reading of the meter from 1 July, recomputed from its energy
    sim = SimulatorConnector(
        SimulatorConfig.model_validate(cfg), MeterIndex.from_cluster(load_cluster(before))
    )
    delta, readings = 0, 0

    async def collect() -> None:
        nonlocal delta, readings
        async for batch in sim.history(start, end):
            for s in batch:
                if s.meter == METER and s.ts >= july:
                    figures = offline_price(catalog, s.meter, str(s.unit), s.value)
                    delta += round(figures[0] * NEW) - figures[3]
                    readings += 1

    asyncio.run(collect())
    assert readings and delta > 0

    def nano(x: float) -> int:
        return round(x * NANO)

    def totals(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {r["site"]: r for r in rep["rows"] if r["line"] == "total"}

    cur, old = totals(current), totals(previous)
    for site in ("cement", "_cluster"):
        assert nano(cur[site]["scope2_market_tco2e"]) == (
            nano(old[site]["scope2_market_tco2e"]) + delta
        ), site
        for figure in ("scope2_location_tco2e", "scope1_net_tco2e"):
            assert nano(cur[site][figure]) == nano(old[site][figure]), (site, figure)
    offline_market = sum(
        vec[3]
        for (level, _id, _carrier, y), vec in expected.ytd.items()
        if level == "cluster" and y == year
    )
    assert nano(old["_cluster"]["scope2_market_tco2e"]) == offline_market  # previous edition
    for site in set(cur) - {"cement", "_cluster"}:
        assert cur[site]["scope2_market_tco2e"] == old[site]["scope2_market_tco2e"], site

    # the records: one for the cement works; its tonnes changed are the market difference
    # (the headline's change is scope 1 + location, which the contract does not move)
    records = [r for r in current["restatements"] if r["reason"].startswith(f"factor {PPA}")]
    assert [r["site"] for r in records] == ["cement"]
    assert all(r["hour_ms"] == july for r in records)
    assert f"{PPA}: v1 -> v2" in first and f"{readings} reading(s)" in first
