"""``clustertwin twin`` and ``clustertwin scenario`` on the shipped clusters."""

from __future__ import annotations

from pathlib import Path

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
    assert r.exit_code == 1
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
