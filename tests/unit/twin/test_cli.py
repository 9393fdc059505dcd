"""``clustertwin twin`` and ``clustertwin scenario`` on the shipped clusters."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clustertwin.cli import main

LEVERS = Path(__file__).parents[3] / "twin" / "levers" / "dunkirk-net-zero.yaml"


def test_twin_show_prints_hierarchy_reconciliation_and_targets() -> None:
    r = CliRunner().invoke(main, ["twin", "show", "dunkirk"])
    assert r.exit_code == 0, r.output
    assert "site steelworks" in r.output and "meter sw-coking-coal: coking_coal [t]" in r.output
    assert "published 16.000 Mt" in r.output and "OK" in r.output
    assert "target 2050: -100%" in r.output
    assert "pathway: 2021 16.000 Mt" in r.output


def test_twin_show_bad_file_fails_with_path(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("id: x\nname: X\n")
    r = CliRunner().invoke(main, ["twin", "show", str(p)])
    assert r.exit_code == 2  # a file to fix: exit code 2, listed
    assert f"{p}: country: Field required" in r.output


def test_scenario_prints_pathway_and_verdict() -> None:
    r = CliRunner().invoke(main, ["scenario", "dunkirk", str(LEVERS), "--every", "5"])
    assert r.exit_code == 0, r.output
    assert "2050" in r.output and "target 2050 (net zero)" in r.output
    assert "MISSED by" in r.output or "MET by" in r.output


def test_explain_list_and_catalogue() -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["twin", "explain", "teda", "chp-steam-to-chem"])
    assert r.exit_code == 0 and "steam:coal_boiler" in r.output and "eliminated" in r.output
    r = runner.invoke(main, ["twin", "list"])
    assert "rotterdam" in r.output
    r = runner.invoke(main, ["twin", "catalogue"])
    assert "33 clusters" in r.output and "jubail" in r.output


# ---- issue 16: loading errors are a list, exit code 2, no traceback ------------------------


def _two_problem_file(tmp_path: Path) -> Path:
    p = tmp_path / "two.yaml"
    p.write_text(
        "id: two\nname: Two\ncountry: FR\ngrid_zone: FR\nreference_year: 2021\nsites:\n"
        "  - id: a\n    name: A\n    assets:\n      - id: x\n        meters:\n"
        "          - {id: m, carrier: natural_gas, unit: MWh, boundary: import}\n"
        "          - {id: m, carrier: diesel, unit: MWh, boundary: import}\n"
        "          - {id: g, carrier: coal, unit: t, boundary: transfer, to_site: b}\n"
        "  - id: b\n    name: B\n    assets:\n      - id: y\n        meters:\n"
        "          - {id: h, carrier: coal, unit: t, boundary: transfer, to_site: a}\n"
    )
    return p


@pytest.mark.parametrize("command", [["twin", "show"], ["twin", "validate"], ["twin", "explain"]])
def test_a_bad_cluster_file_is_listed_with_exit_code_2(tmp_path: Path, command: list[str]) -> None:
    p = _two_problem_file(tmp_path)
    args = [*command, str(p)] + (["m"] if command[-1] == "explain" else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    listed = [line for line in r.output.splitlines() if line.startswith(f"  - {p}: ")]
    assert len(listed) == 2, r.output
    assert "duplicate meter id 'm'" in listed[0] and "transfer cycle of coal" in listed[1]


def test_validate_passes_the_shipped_clusters_with_their_levers() -> None:
    r = CliRunner().invoke(main, ["twin", "validate", "dunkirk", "teda", "rotterdam"])
    assert r.exit_code == 0, r.output
    assert "ok: dunkirk" in r.output and "ok: rotterdam" in r.output
    r = CliRunner().invoke(main, ["twin", "validate", "dunkirk", "--levers", str(LEVERS)])
    assert r.exit_code == 0, r.output


def test_a_bad_levers_file_is_listed_with_exit_code_2(tmp_path: Path) -> None:
    p = tmp_path / "levers.yaml"
    p.write_text(
        "levers:\n"
        "  - {type: electrify, share: 1.5, site: steelworks, start_year: 2030}\n"
        "  - {type: grid_factor, zone: FR, start_year: 2030, points: {2025: 0.01}}\n"
    )
    for args in (
        ["scenario", "dunkirk", str(p)],
        ["twin", "validate", "dunkirk", "--levers", str(p)],
    ):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output
        assert isinstance(r.exception, SystemExit)
        listed = [line for line in r.output.splitlines() if line.startswith(f"  - {p}: ")]
        assert len(listed) == 2, r.output
