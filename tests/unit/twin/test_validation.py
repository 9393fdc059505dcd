"""Issue 16, defect 6: what a cluster or library file must not get away with, each refused
with an error naming the item (cluster, site, meter, target year, factor id) and the rule."""

from __future__ import annotations

from typing import Any

import pytest

from twin.factors import FactorError, FactorLibrary
from twin.model import ClusterFileError, available_clusters, load_cluster

from .conftest import make_cluster, meter, site


def _transfer(mid: str, carrier: str, to: str) -> dict[str, Any]:
    return meter(mid, carrier, boundary="transfer", to_site=to, annual_quantity=10)


def test_a_fuel_sent_round_two_sites_is_refused() -> None:
    with pytest.raises(ClusterFileError) as err:
        make_cluster(
            [
                site("a", _transfer("a-gas-to-b", "natural_gas", "b")),
                site("b", _transfer("b-gas-to-a", "natural_gas", "a")),
            ]
        )
    msg = str(err.value)
    assert "cluster 't'" in msg and "natural_gas" in msg
    assert "a -> b (meter a-gas-to-b) -> a (meter b-gas-to-a)" in msg
    assert "a transfer is metered once, at the sender" in msg


def test_a_longer_cycle_of_one_carrier_is_refused_once() -> None:
    with pytest.raises(ClusterFileError) as err:
        make_cluster(
            [
                site("a", _transfer("ab", "hydrogen", "b")),
                site("b", _transfer("bc", "hydrogen", "c")),
                site(
                    "c",
                    _transfer("ca", "hydrogen", "a"),
                    {**_transfer("cb", "process_co2", "b"), "unit": "t"},
                ),
            ]
        )
    msg = str(err.value)
    assert "a -> b (meter ab) -> c (meter bc) -> a (meter ca)" in msg
    assert msg.count("transfer cycle") == 1


def test_exchanges_of_different_carriers_and_energy_both_ways_are_symbiosis() -> None:
    """Blast-furnace gas to the power plant and its electricity back (Dunkirk), steam both
    ways on a shared steam network: normal, accepted."""
    c = make_cluster(
        [
            site(
                "steel",
                _transfer("bfg", "blast_furnace_gas", "power"),
                _transfer("lp-steam", "steam", "power"),
            ),
            site(
                "power",
                _transfer("el", "electricity", "steel"),
                _transfer("hp-steam", "steam", "steel"),
            ),
        ]
    )
    assert len(c.meter_ids) == 4


@pytest.mark.parametrize("cluster_id", available_clusters())
def test_shipped_clusters_keep_loading(cluster_id: str) -> None:
    assert load_cluster(cluster_id).id == cluster_id


def _plan(*targets: dict[str, Any]) -> dict[str, Any]:
    return {"baseline": {"year": 2021, "tco2e": 1000.0}, "targets": list(targets)}


def _load_plan(plan: dict[str, Any]) -> str:
    with pytest.raises(ClusterFileError) as err:
        make_cluster([site("s", meter("m", "natural_gas"))], plan=plan)
    return str(err.value)


def test_a_target_above_the_baseline_is_refused() -> None:
    msg = _load_plan(_plan({"year": 2030, "tco2e": 1200.0}))
    assert "plan.targets[0]: target 2030: 1,200 tCO2e is above the baseline" in msg
    assert "1,000 tCO2e (2021)" in msg


def test_a_later_target_laxer_than_an_earlier_one_is_refused() -> None:
    msg = _load_plan(
        _plan({"year": 2040, "reduction_pct": 30}, {"year": 2030, "reduction_pct": 50})
    )
    assert "plan.targets[0]: target 2040: allows 700 tCO2e, more than target 2030 (500" in msg
    # Equal is a plateau, not a relaxation.
    make_cluster(
        [site("s", meter("m", "natural_gas"))],
        plan=_plan({"year": 2030, "reduction_pct": 50}, {"year": 2040, "tco2e": 500}),
    )


def test_site_plans_follow_the_same_rules() -> None:
    with pytest.raises(ClusterFileError, match=r"sites\[0\]\(s\)\.plan\.targets\[0\]: target 2030"):
        make_cluster(
            [site("s", meter("m", "natural_gas"), plan=_plan({"year": 2030, "tco2e": 2e3}))]
        )


def test_bad_targets_name_their_year() -> None:
    msg = _load_plan(_plan({"year": 2030, "tco2e": 5}, {"year": 2030, "reduction_pct": 10}))
    assert "target 2030: a second target or point for 2030" in msg
    msg = _load_plan(_plan({"year": 2019, "reduction_pct": 10}))
    assert "target 2019: not after the baseline year 2021" in msg
    msg = _load_plan(_plan({"year": 2035}))
    assert "plan.targets[0]: target 2035: give exactly one of reduction_pct or tco2e" in msg


def test_duplicate_meter_ids_name_the_meter_and_both_sites() -> None:
    with pytest.raises(ClusterFileError) as err:
        make_cluster([site("s1", meter("m1", "natural_gas")), site("s2", meter("m1", "diesel"))])
    msg = str(err.value)
    assert "sites[1](s2).assets[0](a).meters[0](m1).id: duplicate meter id 'm1'" in msg
    assert "first at site 's1', asset 'a'" in msg


def test_every_cluster_problem_is_listed_on_its_own_line() -> None:
    with pytest.raises(ClusterFileError) as err:
        make_cluster(
            [
                site("s1", meter("m1", "natural_gas"), meter("m1", "diesel")),
                site("s2", _transfer("x", "steam", "nowhere")),
            ]
        )
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("inline: sites[") for line in lines), lines


_BASE = {
    "kind": "combustion",
    "carrier": "natural_gas",
    "category": "manufacturing",
    "region": "GLOBAL",
    "year": 2006,
    "version": "1",
    "source": "s",
    "unit": "kg/TJ",
}


def test_a_negative_factor_in_a_library_file_is_refused() -> None:
    doc = {"factors": [{**_BASE, "id": "ng-neg", "values": {"CO2": -56100, "CH4": 1}}]}
    with pytest.raises(FactorError) as err:
        FactorLibrary.from_documents([("lib.yaml", doc)])
    msg = str(err.value)
    assert msg.startswith("lib.yaml: factors[0](ng-neg): values.CO2: ")
    assert "must not be negative" in msg


def test_every_error_of_a_library_file_is_shown_with_its_location() -> None:
    doc = {
        "factors": [
            {**_BASE, "id": "ok", "values": {"CO2": 1}},
            {**_BASE, "id": "two-bad", "year": "soon", "colour": "red", "values": {"CO2": 1}},
            {**_BASE, "id": "neg", "values": {"N2O": -1}},
            {**_BASE, "id": "bad-carrier", "carrier": "plutonium"},
        ]
    }
    with pytest.raises(FactorError) as err:
        FactorLibrary.from_documents([("lib.yaml", doc)])
    lines = str(err.value).splitlines()
    assert any(li.startswith("lib.yaml: factors[1](two-bad): year: ") for li in lines), lines
    assert any(li.startswith("lib.yaml: factors[1](two-bad): colour: Extra") for li in lines)
    assert any(li.startswith("lib.yaml: factors[2](neg): values.N2O: ") for li in lines)
    assert any(li.startswith("lib.yaml: factors[3](bad-carrier): carrier: ") for li in lines)
    assert len(lines) == 4, lines
