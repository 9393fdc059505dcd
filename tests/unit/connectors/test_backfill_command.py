"""``clustertwin backfill`` refuses what it cannot do, before it touches Kafka."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from clustertwin.cli import main

REPO = Path(__file__).resolve().parents[3]


def test_a_connector_that_cannot_read_its_past_is_refused_with_exit_2():
    result = CliRunner().invoke(
        main, ["backfill", str(REPO / "connectors/mqtt/sample.yaml"), "--from", "now-1d"]
    )
    assert result.exit_code == 2
    assert "cannot read its source's past" in result.output


def test_a_range_that_ends_before_it_starts_is_a_usage_error():
    result = CliRunner().invoke(
        main,
        [
            "backfill",
            str(REPO / "connectors/simulator/sample.yaml"),
            "--from",
            "now-1h",
            "--to",
            "now-2h",
        ],
    )
    assert result.exit_code == 2
    assert "is not before" in result.output


def _history(connector, start: int, end: int) -> list:
    import asyncio

    async def collect() -> list:
        return [item async for batch in connector.history(start, end) for item in batch]

    return asyncio.run(collect())


def test_the_csv_export_serves_exactly_the_asked_range_in_its_own_time():
    import yaml

    from connectors.csv_replay.connector import CsvReplayConfig, CsvReplayConnector
    from twin.model import load_cluster
    from twin.readings import MeterIndex

    raw = yaml.safe_load((REPO / "connectors/csv_replay/sample.yaml").read_text())
    raw.update(path=str(REPO / raw["path"]), time_shift="none")
    cfg = CsvReplayConfig.model_validate(raw)
    index = MeterIndex.from_cluster(load_cluster("dunkirk"))
    # 01/03/2025 00:00 Europe/Paris = 2025-02-28T23:00Z; six hours = 24 rows x 3 tags
    start = 1_740_783_600_000
    items = _history(CsvReplayConnector(cfg, index), start, start + 6 * 3_600_000)
    assert len(items) == 72
    assert min(i.ts for i in items) == start and max(i.ts for i in items) < start + 6 * 3_600_000


def test_the_simulator_serves_the_intervals_ending_in_the_range():
    from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
    from twin.model import load_cluster
    from twin.readings import MeterIndex

    cfg = SimulatorConfig(connector="simulator", name="s", cluster="dunkirk", step_s=900)
    index = MeterIndex.from_cluster(load_cluster("dunkirk"))
    sim = SimulatorConnector(cfg, index)
    start = 1_767_225_600_000  # 2026-01-01T00:00Z
    items = _history(sim, start, start + 3_600_000)
    stamps = sorted({i.ts for i in items})
    assert stamps == [start + k * 900_000 for k in range(4)]
    assert len(items) == 4 * len(sim.sim.profiles)


def test_the_simulator_can_say_which_interval_a_reading_measures():
    from connectors.simulator.connector import SimulatorConfig, SimulatorConnector
    from twin.model import load_cluster
    from twin.readings import MeterIndex

    cfg = SimulatorConfig(
        connector="simulator", name="s", cluster="dunkirk", step_s=900, intervals=True
    )
    sim = SimulatorConnector(cfg, MeterIndex.from_cluster(load_cluster("dunkirk")))
    start = 1_767_225_600_000
    items = _history(sim, start, start + 3_600_000)
    assert items and all(i.start == i.ts - 900_000 for i in items)
