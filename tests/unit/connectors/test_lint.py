"""``connector lint``: units against the mapped meter's carrier, and the count it maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from clustertwin.commands.connector import connector as cli
from connectors.sdk import ConfigError, MeterMapping, lint_report, unit_problems
from twin.model import load_cluster
from twin.readings import MeterIndex

MINI = Path(__file__).parent / "mini-cluster.yaml"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """The mini cluster plus a coking-coal meter declared in tonnes."""
    text = MINI.read_text().replace(
        "          - {id: bf-gas,",
        "          - {id: coke-oven-coal, carrier: coking_coal, unit: t, boundary: import, "
        "annual_quantity: 500000}\n          - {id: bf-gas,",
    )
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def modbus(tmp_path: Path, cluster: Path, registers: list[dict[str, object]]) -> Path:
    path = tmp_path / "modbus.yaml"
    config = {
        "connector": "modbus",
        "name": "lint-test",
        "cluster": str(cluster),
        "host": "127.0.0.1",
        "registers": registers,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_kwh_onto_a_coal_meter_in_tonnes_names_meter_unit_and_carrier(
    tmp_path: Path, cluster: Path
) -> None:
    cfg = modbus(tmp_path, cluster, [{"meter": "coke-oven-coal", "address": 0, "unit": "kWh"}])
    result = CliRunner().invoke(cli, ["lint", str(cfg)])
    assert result.exit_code == 1
    assert "registers[0]" in result.output
    assert "'kWh'" in result.output and "'coke-oven-coal'" in result.output
    assert "coking_coal" in result.output and "rule: unit fits the meter" in result.output


def test_a_unit_that_cannot_measure_the_carrier_is_refused(cluster: Path) -> None:
    index = MeterIndex.from_cluster(load_cluster(cluster))
    found = unit_problems(
        [
            MeterMapping("mill-power", "m3", "nodes[0]"),  # a volume of electricity
            MeterMapping("mill-power", "kWh", "nodes[1]"),  # fine: energy, as declared
            MeterMapping("coke-oven-coal", "kg", "nodes[2]"),  # fine: a mass
            MeterMapping("coke-oven-coal", None, "nodes[3]"),  # the meter's own unit
            MeterMapping("no-such-meter", "kWh", "nodes[4]"),  # check_config's finding
        ],
        index,
    )
    assert len(found) == 1
    assert found[0].startswith("nodes[0]: unit 'm3'")
    assert "electricity" in found[0]


def test_lint_counts_the_meters_the_config_maps_not_the_cluster(
    tmp_path: Path, cluster: Path
) -> None:
    regs = [
        {"meter": "mill-power", "address": 0, "unit": "kWh", "mode": "counter"},
        {"meter": "mill-power", "address": 8},  # the same meter twice counts once
        {"meter": "bf-coke", "address": 2, "unit": "kg"},
    ]
    report = lint_report(modbus(tmp_path, cluster, regs))
    assert report.mapped == 2
    assert len(report.index) == 6
    result = CliRunner().invoke(cli, ["lint", str(modbus(tmp_path, cluster, regs))])
    assert result.exit_code == 0
    assert "2 meters mapped" in result.output and "6 meters" not in result.output


def test_unknown_meter_is_still_reported_once(tmp_path: Path, cluster: Path) -> None:
    cfg = modbus(tmp_path, cluster, [{"meter": "moon-power", "address": 0, "unit": "kWh"}])
    with pytest.raises(ConfigError) as err:
        lint_report(cfg)
    assert str(err.value).count("moon-power") == 1
