"""``clustertwin backfill`` on the real stack: a day of history loaded while the site is live.

The simulator publishes the last two hours as the live connector would; then a backfill
loads the day before, overlapping the live hours, and runs a second time. The twin in
InfluxDB must equal the offline figures of the distinct readings: the backfill's readings
restate the windows they fall in, the overlap and the second run change nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.sdk.base import Sample
from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
from streams.twinlink import catalog_from_twin
from tests.integration.streams.harness import (
    Expected,
    WorkerProc,
    compare_ytd_latest,
    summarize,
    wait_equal,
)
from twin.readings import MeterIndex

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clustertwin")
HOUR = 3_600_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _expected(cfg: dict[str, Any], start: int, end: int) -> Expected:
    from twin.model import load_cluster

    config = SimulatorConfig.model_validate(cfg)
    index = MeterIndex.from_cluster(load_cluster(config.cluster))
    sim = SimulatorConnector(config, index)
    catalog = catalog_from_twin([config.cluster])
    expected = Expected()

    async def collect() -> None:
        async for batch in sim.history(start, end):
            for s in batch:
                assert isinstance(s, Sample) and s.unit is not None
                expected.add(catalog, s.meter, s.unit, s.ts, s.value)

    asyncio.run(collect())
    return expected


def test_a_backfill_restates_the_live_twin_and_a_second_run_changes_nothing(
    stack, unique_name, tmp_path
):
    catalog = catalog_from_twin(["dunkirk"])
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, catalog_file)
    now = int(time.time() * 1000)
    live_from, backfill_from = now - 2 * HOUR, now - 26 * HOUR
    end = now - now % (15 * 60_000)  # a fixed end: no interval ends while the test runs
    cfg = {
        "connector": "simulator",
        "name": unique_name[-30:],
        "cluster": "dunkirk",
        "seed": 7,
        "speedup": 0,
        "step_s": 900,
        "start": _iso(live_from),
        "end": _iso(end - 1),
        "kafka": {"topic": worker.readings_topic, "deadletter_topic": f"{unique_name}-cdl"},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        **stack.local.settings(),
        "CLUSTERTWIN_CACHE": str(tmp_path / "cache"),
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [CLI, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    try:
        worker.start()
        worker.wait_ready()
        cli("connector", "run", str(path))  # the live site: the last two hours
        expected = _expected(cfg, backfill_from, end)
        for _ in range(2):  # the backfill overlaps the live hours; its second run is a no-op
            out = cli("backfill", str(path), "--from", _iso(backfill_from), "--to", _iso(end))
            assert '"samples_in"' in out
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, expected, 240)
            assert not problems, summarize(problems) + "\n" + worker.tail()
            problems = compare_ytd_latest(expected, client, stack.influx_bucket, worker.name)
            assert not problems, "\n".join(problems[:20])
        site = next(iter(catalog.clusters["dunkirk"]))
        view = worker.get(f"/twin/dunkirk/{site}/")
        assert view["late"] > 0 and view["duplicates"] > 0, view
    finally:
        worker.stop()
