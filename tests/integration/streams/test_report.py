"""``clustertwin report dunkirk --year Y`` on the real stack: totals equal the twin's and offline.

The simulated Dunkirk's last six hours are loaded through the real connector (its backfill);
once the worker's
figures in InfluxDB equal the offline ones, the report is run as an operator runs it. Its
cluster total must equal the offline year to date of the readings sent, figure by figure
(scopes, gases, biogenic memo, captured CO2, energy, readings), the sites minus the
eliminated transfers must give the cluster, and the CSV must carry the documented columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.inventory_source import FIELD_OF
from streams.twinlink import catalog_from_twin
from tests.integration.streams.harness import WorkerProc, _want, summarize, wait_equal
from tests.integration.streams.test_backfill import _expected, _iso
from twin.inventory import COLUMNS

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clustertwin")
HOUR = 3_600_000


def test_the_report_equals_the_twin_and_the_offline_year_to_date(
    stack: Any, unique_name: str, tmp_path: Path
) -> None:
    catalog = catalog_from_twin(["dunkirk"])
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, catalog_file)
    now = int(time.time() * 1000)
    end = now - now % (15 * 60_000)
    start = max(
        end - 6 * HOUR, int(datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC).timestamp() * 1000)
    )
    year = datetime.fromtimestamp(end / 1000, tz=UTC).year
    cfg = {
        "connector": "simulator",
        "name": unique_name[-30:],
        "cluster": "dunkirk",
        "seed": 11,
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

    try:
        worker.start()
        worker.wait_ready()
        # the range as the backfill reads it: the offline figures are of exactly these readings
        cli("backfill", str(path), "--from", _iso(start), "--to", _iso(end))
        expected = _expected(cfg, start, end)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, expected, 240)
            assert not problems, summarize(problems) + "\n" + worker.tail()
        report = json.loads(
            cli("report", "dunkirk", "--year", str(year), "--twin", worker.name, "--format", "json")
        )
        text = cli("report", "dunkirk", "--year", str(year), "--twin", worker.name)
    finally:
        worker.stop()

    offline: dict[str, float] = defaultdict(float)
    for (level, _id, _carrier, y), vec in expected.ytd.items():
        if level == "cluster" and y == year:
            for name, value in _want(vec).items():
                offline[name] += value
    rows = {(r["site"], r["line"], r["transfer"]): r for r in report["rows"]}
    total = rows[("_cluster", "total", "")]
    column_of = {
        "energy_mwh": "energy_mwh",
        "scope1_tco2e": "scope1_net_tco2e",
        "scope1_gross_tco2e": "scope1_gross_tco2e",
        "scope2_location_tco2e": "scope2_location_tco2e",
        "scope2_market_tco2e": "scope2_market_tco2e",
        "scope3_upstream_tco2e": "scope3_upstream_tco2e",
        "co2_t": "scope1_co2_t",
        "ch4_t": "scope1_ch4_t",
        "n2o_t": "scope1_n2o_t",
        "co2e_other_t": "scope1_other_tco2e",
        "co2_biogenic_t": "biogenic_co2_t",
        "co2_captured_t": "co2_captured_t",
        "readings": "readings",
    }
    assert set(column_of) == set(FIELD_OF)
    for attr, field in FIELD_OF.items():
        got, want = total[column_of[attr]], offline[field]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6), (attr, got, want)
    assert total["scope1_net_tco2e"] > 0 and total["readings"] == expected.readings

    # the sites, less the transfers eliminated, are the cluster
    sites = [r for (site, line, _), r in rows.items() if line == "total" and site != "_cluster"]
    eliminated = rows[("_cluster", "transfers eliminated", "")]
    for col in ("scope1_net_tco2e", "scope2_location_tco2e", "scope3_upstream_tco2e", "energy_mwh"):
        assert sum(s[col] for s in sites) - eliminated[col] == pytest.approx(total[col], abs=1e-6)
    assert eliminated["scope3_upstream_tco2e"] > 0  # Dunkirk sends hydrogen to the steelworks

    # every line names its factors; the CSV has the documented columns
    lines = [
        r for (site, line, _), r in rows.items() if line not in ("total", "transfers eliminated")
    ]
    assert lines and all(
        r["factors"] for r in lines if r["scope1_net_tco2e"] or r["scope2_location_tco2e"]
    )
    assert all(r["measured_share"] is not None for r in lines if not r["transfer"])
    header = next(csv.reader(io.StringIO(text)))
    assert header == [c for c, _ in COLUMNS]
