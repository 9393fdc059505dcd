"""What-if levers with hand-checked numbers. One site burning 1,000 MWh of natural gas a year
(202.16556 tCO2e in AR6, IPCC 2006 defaults) on the French grid (36 gCO2/kWh, RTE 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twin.model import Cluster, load_cluster
from twin.scenarios import (
    ScenarioError,
    ScenarioResult,
    load_scenario,
    run_scenario,
    scenario_from_mapping,
)

from .conftest import make_cluster, meter, site

GAS = 0.20196 + 3.6e-6 * 29.8 + 3.6e-7 * 273  # tCO2e/MWh, AR6
BASE = 1000 * GAS  # 202.16556 t


def _cluster(**plan: Any) -> Cluster:
    extra = {"plan": plan} if plan else {}
    return make_cluster(
        [
            site(
                "plant",
                meter("gas", "natural_gas", annual_quantity=1000),
                meter("el", "electricity", annual_quantity=0),
            )
        ],
        **extra,
    )


def _run(levers: list[dict[str, Any]], horizon: int = 2030, **kw: Any) -> ScenarioResult:
    sc = scenario_from_mapping({"start_year": 2025, "horizon": horizon, "levers": levers, **kw})
    plan = {
        "baseline": {"year": 2021, "tco2e": BASE},
        "targets": [{"year": 2030, "reduction_pct": 40}],
    }
    return run_scenario(_cluster(**plan), sc)


def test_no_levers_is_flat_bau() -> None:
    r = _run([])
    assert [y.year for y in r.years] == list(range(2025, 2031))
    assert all(y.scenario == pytest.approx(BASE) and y.bau == pytest.approx(BASE) for y in r.years)


def test_electrify_half_the_gas() -> None:
    r = _run(
        [
            {
                "type": "electrify",
                "meters": ["gas"],
                "share": 0.5,
                "start_year": 2026,
                "electric_mwh_per_fuel_mwh": 0.9,
            }
        ]
    )
    y25, y26 = r.years[0], r.years[1]
    assert y25.scenario == pytest.approx(BASE)
    # 500 MWh gas left (101.08 t) + 450 MWh electricity x 0.036 = 16.2 t scope 2.
    assert y26.scope1 == pytest.approx(BASE / 2)
    assert y26.scope2_location == pytest.approx(16.2)
    assert y26.scenario == pytest.approx(BASE / 2 + 16.2)  # induced scope 2 counted


def test_induced_emissions_can_be_left_out() -> None:
    r = _run(
        [{"type": "electrify", "site": "plant", "share": 0.5, "start_year": 2025}],
        count_induced=False,
    )
    assert r.years[0].scenario == pytest.approx(BASE / 2)


def test_linear_ramp() -> None:
    r = _run(
        [
            {
                "type": "electrify",
                "meters": ["gas"],
                "share": 1.0,
                "start_year": 2026,
                "full_year": 2030,
                "electric_mwh_per_fuel_mwh": 1.0,
            }
        ]
    )
    # Ramp 2026..2030: 1/5, 2/5, ... 1. In 2028, 600 MWh electrified.
    y = {x.year: x for x in r.years}
    assert y[2028].scope1 == pytest.approx(400 * GAS)
    assert y[2028].scope2_location == pytest.approx(600 * 0.036)
    assert y[2030].scope1 == pytest.approx(0.0, abs=1e-9)


def test_switch_to_grey_hydrogen_does_not_look_like_a_cut() -> None:
    r = _run(
        [
            {
                "type": "hydrogen_switch",
                "meters": ["gas"],
                "share": 1.0,
                "route": "smr",
                "start_year": 2025,
            }
        ]
    )
    y = r.years[0]
    assert y.scope1 == pytest.approx(0.0, abs=1e-9)
    # 1,000 MWh H2 = 30,010 kg (LHV 119.96 MJ/kg) x 9.35 kgCO2e/kg = 280.59 t upstream.
    assert y.scope3_upstream == pytest.approx(1000 * 3.6 / 0.11996 * 9.35e-3)
    assert y.scenario > BASE
    green = _run(
        [
            {
                "type": "hydrogen_switch",
                "meters": ["gas"],
                "share": 1.0,
                "route": "electrolysis_renewable",
                "start_year": 2025,
            }
        ]
    )
    assert green.years[0].scenario == pytest.approx(0.0, abs=1e-9)


def test_ccs_and_target_outcome() -> None:
    r = _run([{"type": "ccs", "site": "plant", "capture_rate": 0.9, "start_year": 2029}])
    y = {x.year: x for x in r.years}
    assert y[2028].scenario == pytest.approx(BASE)
    assert y[2029].captured == pytest.approx(0.9 * BASE)
    assert y[2029].scenario == pytest.approx(0.1 * BASE)
    (t,) = r.targets
    assert t.level == pytest.approx(0.6 * BASE)
    assert t.met and t.first_year_at_or_below == 2029
    assert t.margin == pytest.approx(0.5 * BASE)


def test_missed_target_says_by_how_much() -> None:
    r = _run([{"type": "ccs", "site": "plant", "capture_rate": 0.3, "start_year": 2026}])
    (t,) = r.targets
    assert not t.met and t.first_year_at_or_below is None
    assert t.margin == pytest.approx(0.6 * BASE - 0.7 * BASE)


def test_grid_factor_lever_interpolates_from_library_value() -> None:
    r = _run(
        [
            {
                "type": "electrify",
                "meters": ["gas"],
                "share": 1.0,
                "start_year": 2025,
                "electric_mwh_per_fuel_mwh": 1.0,
            },
            {"type": "grid_factor", "zone": "FR", "start_year": 2026, "points": {2030: 0.0}},
        ]
    )
    y = {x.year: x.scope2_location for x in r.years}
    assert y[2025] == pytest.approx(36.0)
    assert y[2028] == pytest.approx(1000 * 0.036 * 2 / 5)  # 2025 0.036 -> 2030 0.0
    assert y[2030] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("lever", "message"),
    [
        (
            {"type": "electrify", "meters": ["nope"], "share": 0.5, "start_year": 2026},
            "no meter 'nope'",
        ),
        ({"type": "electrify", "meters": ["el"], "share": 0.5, "start_year": 2026}, "not a fuel"),
        (
            {"type": "ccs", "site": "mars", "capture_rate": 0.5, "start_year": 2026},
            "no site 'mars'",
        ),
    ],
)
def test_lever_errors_name_the_lever(lever: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        _run([lever])


def test_levers_file_validation(tmp_path: Path) -> None:
    p = tmp_path / "levers.yaml"
    p.write_text("levers:\n  - type: teleport\n    start_year: 2030\n")
    with pytest.raises(ScenarioError, match=r"levers.yaml: levers\.0: Input tag 'teleport'"):
        load_scenario(p)
    p.write_text("levers:\n  - {type: electrify, share: 1.5, site: x, start_year: 2030}\n")
    with pytest.raises(ScenarioError, match=r"levers\.0\.electrify\.share"):
        load_scenario(p)
    p.write_text("cluster: teda\n")
    with pytest.raises(ScenarioError, match="is for cluster 'teda'"):
        run_scenario(load_cluster("dunkirk"), load_scenario(p))


def test_shipped_dunkirk_levers_run() -> None:
    path = Path(__file__).parents[3] / "twin" / "levers" / "dunkirk-net-zero.yaml"
    r = run_scenario(load_cluster("dunkirk"), load_scenario(path))
    assert r.years[0].year == 2021 and r.years[-1].year == 2050
    assert r.years[0].scenario == pytest.approx(r.years[0].bau)
    assert r.years[-1].scenario < 0.5 * r.years[0].bau
    assert r.targets and r.targets[0].year == 2050


# ---- issue 16, defect 4: BAU, overlapping levers, double capture, grid points -------------

GRID_FR = 0.036  # tCO2/MWh, the library's FR grid factor for 2021 (RTE)


def _cluster_1_2(el_mwh: float) -> Cluster:
    """The plant also buys ``el_mwh`` of electricity; its targets cover scopes 1+2."""
    return make_cluster(
        [
            site(
                "plant",
                meter("gas", "natural_gas", annual_quantity=1000),
                meter("el", "electricity", annual_quantity=el_mwh),
            )
        ],
        plan={
            "baseline": {"year": 2021, "tco2e": BASE + el_mwh * GRID_FR, "scopes": "1+2"},
            "targets": [{"year": 2030, "reduction_pct": 40}],
        },
    )


def test_bau_has_no_lever_at_all_not_even_the_grid() -> None:
    """A cleaner grid is a lever: BAU stays at the starting grid factor, so the lever's
    effect shows as the gap between BAU and the scenario."""
    sc = scenario_from_mapping(
        {
            "start_year": 2025,
            "horizon": 2030,
            "levers": [
                {"type": "grid_factor", "zone": "FR", "start_year": 2026, "points": {2030: 0.0}}
            ],
        }
    )
    r = run_scenario(_cluster_1_2(1000), sc)
    for y in r.years:
        # Offline: the grid goes linearly from the library value (2025) to 0 (2030).
        grid = GRID_FR * (2030 - max(y.year, 2025)) / 5
        assert y.bau == pytest.approx(BASE + 1000 * GRID_FR), y.year
        assert y.scenario == pytest.approx(BASE + 1000 * grid), y.year
    assert r.years[-1].bau - r.years[-1].scenario == pytest.approx(1000 * GRID_FR)


@pytest.mark.parametrize(
    "levers",
    [
        [("electrify", 0.5, 2025, None), ("electrify", 0.8, 2025, None)],
        [("electrify", 0.8, 2025, None), ("hydrogen_switch", 0.5, 2025, None)],
        [("hydrogen_switch", 1.0, 2026, 2030), ("electrify", 0.7, 2025, 2027)],
        [("electrify", 1.0, 2025, None), ("electrify", 1.0, 2025, None)],
        [
            ("electrify", 0.3, 2025, 2029),
            ("electrify", 0.6, 2027, None),
            ("hydrogen_switch", 0.9, 2028, 2030),
        ],
    ],
)
def test_overlapping_levers_take_their_share_of_what_is_left(
    levers: list[tuple[str, float, int, int | None]],
) -> None:
    """Shares of one meter compose on the remaining quantity, in file order: 0.5 then 0.8
    moves 0.5 + 0.8 x 0.5 = 90%, never more than the 100% there is."""
    docs: list[dict[str, Any]] = []
    for kind, share, start, full in levers:
        doc: dict[str, Any] = {
            "type": kind,
            "meters": ["gas"],
            "share": share,
            "start_year": start,
            "full_year": full,
        }
        if kind == "electrify":
            doc["electric_mwh_per_fuel_mwh"] = 1.0
        else:
            doc["route"] = "electrolysis_renewable"
        docs.append(doc)
    r = _run(docs)
    for y in r.years:
        left, electrified = 1000.0, 0.0
        for kind, share, start, full in levers:  # offline: the rule, by hand
            ramp = (
                0.0
                if y.year < start
                else (
                    1.0
                    if full is None or y.year >= full
                    else (y.year - start + 1) / (full - start + 1)
                )
            )
            moved = left * share * ramp
            left -= moved
            electrified += moved if kind == "electrify" else 0.0
        assert y.scope1 == pytest.approx(left * GAS, abs=1e-9), y.year
        assert y.scope1 >= 0.0
        assert y.scope2_location == pytest.approx(electrified * GRID_FR, abs=1e-9), y.year


def test_two_ccs_levers_capture_what_the_first_left() -> None:
    r = _run(
        [
            {"type": "ccs", "site": "plant", "capture_rate": 0.9, "start_year": 2025},
            {"type": "ccs", "site": "plant", "capture_rate": 0.9, "start_year": 2027},
        ]
    )
    y = {x.year: x for x in r.years}
    assert y[2026].captured == pytest.approx(0.9 * BASE)
    assert y[2027].captured == pytest.approx(BASE * (1 - 0.1 * 0.1))  # 0.9, then 0.9 of 0.1
    assert all(0 <= x.captured <= BASE + 1e-9 and x.scenario >= -1e-9 for x in r.years)


def test_capture_never_exceeds_the_capturing_sites_emissions() -> None:
    """Capture at one site of two is bounded by that site's scope 1, not the cluster's."""
    c = make_cluster(
        [
            site("plant", meter("gas", "natural_gas", annual_quantity=1000)),
            site("other", meter("gas2", "natural_gas", annual_quantity=3000)),
        ]
    )
    sc = scenario_from_mapping(
        {
            "start_year": 2025,
            "horizon": 2026,
            "levers": [
                {"type": "ccs", "site": "plant", "capture_rate": 1.0, "start_year": 2025},
                {"type": "ccs", "site": "plant", "capture_rate": 0.5, "start_year": 2025},
            ],
        }
    )
    r = run_scenario(c, sc)
    assert r.years[0].captured == pytest.approx(BASE)
    assert r.years[0].scenario == pytest.approx(3 * BASE)


def test_grid_point_before_start_year_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "levers.yaml"
    p.write_text(
        "levers:\n"
        "  - {type: grid_factor, name: cleaner grid, zone: FR, start_year: 2030,\n"
        "     points: {2025: 0.01, 2040: 0.0}}\n"
    )
    with pytest.raises(
        ScenarioError,
        match=r"levers\.0\.grid_factor: grid_factor lever 'cleaner grid': point 2025 is before "
        r"start_year 2030",
    ):
        load_scenario(p)
    p.write_text(
        "levers:\n  - {type: grid_factor, zone: FR, start_year: 2030, points: {2030: 0}}\n"
    )
    load_scenario(p)  # a point at start_year is the lever's first value


def test_one_grid_lever_per_zone(tmp_path: Path) -> None:
    p = tmp_path / "levers.yaml"
    p.write_text(
        "levers:\n"
        "  - {type: grid_factor, zone: FR, start_year: 2026, points: {2030: 0.02}}\n"
        "  - {type: grid_factor, zone: FR, start_year: 2031, points: {2040: 0.0}}\n"
    )
    with pytest.raises(ScenarioError, match=r"levers\[1\]: a second grid_factor lever for zone"):
        load_scenario(p)
