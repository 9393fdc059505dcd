"""The annual inventory's rules (twin.inventory), on the Dunkirk model, worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from twin.factors import load_gwp_sets
from twin.inventory import COLUMNS, Figures, Restatement, build_inventory, rows
from twin.model import Cluster, load_cluster

REPO = Path(__file__).resolve().parents[3]


def _with_activity_uncertainty(cluster: Cluster, meter_id: str, pct: float) -> Cluster:
    sites = []
    for site in cluster.sites:
        assets = []
        for asset in site.assets:
            meters = tuple(
                m.model_copy(update={"uncertainty_pct": pct}) if m.id == meter_id else m
                for m in asset.meters
            )
            assets.append(asset.model_copy(update={"meters": meters}))
        sites.append(site.model_copy(update={"assets": tuple(assets)}))
    return cluster.model_copy(update={"sites": tuple(sites)})


def _site_of(cluster: Cluster, meter_id: str) -> str:
    for site in cluster.sites:
        for asset in site.assets:
            if any(m.id == meter_id for m in asset.meters):
                return site.id
    raise KeyError(meter_id)


def test_sites_less_the_eliminated_transfers_are_the_cluster() -> None:
    dunkirk = load_cluster("dunkirk")
    a, b = dunkirk.sites[0].id, dunkirk.sites[1].id
    site_rows = [
        (a, "natural_gas", "", Figures(energy_mwh=100, scope1_tco2e=20.2, co2_t=20.0, readings=4)),
        (a, "electricity", "internal>" + b, Figures(energy_mwh=30)),
        (b, "electricity", "internal<" + a, Figures(scope2_location_tco2e=1.5)),
    ]
    cluster_rows = [
        ("natural_gas", Figures(energy_mwh=100, scope1_tco2e=20.2, co2_t=20.0, readings=4)),
        ("electricity", Figures(energy_mwh=30)),
    ]
    restated = [Restatement(a, 3_600_000, 1.0, 2.0, "late readings")]
    inv = build_inventory(dunkirk, 2026, site_rows, cluster_rows, restatements=restated)
    assert inv.eliminated.scope2_location_tco2e == pytest.approx(1.5)
    assert inv.eliminated.scope1_tco2e == pytest.approx(0.0)
    out = rows(inv)
    assert [set(r) for r in out] == [{c for c, _ in COLUMNS}] * len(out)
    total = next(r for r in out if r["site"] == "_cluster" and r["line"] == "total")
    assert total["scope1_net_tco2e"] == pytest.approx(20.2)
    assert total["total_location_tco2e"] == pytest.approx(20.2)  # the 1.5 t was internal
    assert inv.restatements == tuple(restated)


def test_a_gas_line_carries_its_factor_and_its_uncertainty_worked_by_hand() -> None:
    dunkirk = _with_activity_uncertainty(load_cluster("dunkirk"), "pw-natgas", 2.0)
    site = _site_of(dunkirk, "pw-natgas")
    # 1 TJ of natural gas in the power plant (energy industries, AR6)
    co2, ch4, n2o = 56.1, 0.001, 0.0001
    figs = Figures(energy_mwh=277.7778, co2_t=co2, ch4_t=ch4, n2o_t=n2o)
    inv = build_inventory(dunkirk, 2026, [(site, "natural_gas", "", figs)], [], gwp="AR6")
    line = inv.lines[0]
    assert any(r.factor_id == "ipcc2006:energy_industries:natural_gas" for r in line.factors)
    gwp = load_gwp_sets()["AR6"].values
    parts = [(co2, 3.9), (ch4 * gwp["CH4_fossil"], 200.0), (n2o * gwp["N2O"], 200.0)]
    whole = sum(v for v, _ in parts)
    by_gas = 100 * math.sqrt(sum((v * p / 100) ** 2 for v, p in parts)) / whole
    assert line.scope1_uncertainty is not None
    assert line.scope1_uncertainty.pct == pytest.approx(math.hypot(by_gas, 2.0), rel=1e-9)
    assert line.scope1_uncertainty.approximate  # CH4 and N2O ranges exceed Approach 1's


def test_an_undeclared_activity_uncertainty_leaves_the_total_unknown() -> None:
    dunkirk = load_cluster("dunkirk")
    site = _site_of(dunkirk, "pw-natgas")
    figs = Figures(co2_t=56.1, scope1_tco2e=56.1)
    inv = build_inventory(dunkirk, 2026, [(site, "natural_gas", "", figs)], [])
    assert inv.lines[0].scope1_uncertainty is not None
    assert inv.lines[0].scope1_uncertainty.pct is None
    assert inv.site_scope1_uncertainty[site].pct is None


def test_the_readme_names_every_column() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [c for c, _ in COLUMNS if f"| `{c}` |" not in readme]
    assert not missing, missing


def test_quality_shares_are_of_energy_or_of_readings_where_a_line_has_no_energy() -> None:
    dunkirk = load_cluster("dunkirk")
    site = dunkirk.sites[0].id
    site_rows = [
        (site, "natural_gas", "", Figures(energy_mwh=100.0, readings=10)),
        (site, "process_co2", "", Figures(scope1_tco2e=5.0, readings=4)),
    ]
    quality = {
        (site, "natural_gas", ""): {"measured": (75.0, 7), "gap_filled": (25.0, 3)},
        (site, "process_co2", ""): {"measured": (0.0, 3), "estimated": (0.0, 1)},
    }
    out = {r["line"]: r for r in rows(build_inventory(dunkirk, 2026, site_rows, [], quality))}
    gas, co2 = out["natural_gas"], out["process_co2"]
    assert (gas["measured_share"], gas["gap_filled_share"], gas["gap_filled_mwh"]) == (
        0.75,
        0.25,
        25.0,
    )
    assert (co2["measured_share"], co2["estimated_share"]) == (0.75, 0.25)
    assert out["total"]["measured_share"] is None  # a total's shares are its lines'
