"""The shipped example clusters reconcile to their published baselines, and the catalogue
keeps unknown figures unknown. Published figures: WEF 2023 (Dunkirk 16 Mt scope 1 2021;
TEDA 16 Mt scope 1+2 2020), CE Delft 2024 (Rotterdam port area 20.3 Mt scope 1 2023)."""

from __future__ import annotations

import pytest

from twin.catalogue import load_catalogue
from twin.model import available_clusters, load_cluster
from twin.progress import reconcile


@pytest.mark.parametrize(
    ("cluster_id", "year", "tco2e", "scopes"),
    [("dunkirk", 2021, 16e6, "1"), ("teda", 2020, 16e6, "1+2"), ("rotterdam", 2023, 20.3e6, "1")],
)
def test_example_clusters_reconcile(cluster_id: str, year: int, tco2e: float, scopes: str) -> None:
    c = load_cluster(cluster_id)
    assert c.plan is not None
    assert (c.plan.baseline.year, c.plan.baseline.tco2e, c.plan.baseline.scopes) == (
        year,
        tco2e,
        scopes,
    )
    assert c.sources, "published figures must cite their source"
    rec = reconcile(c)
    assert rec.ok, f"{cluster_id}: modelled {rec.modelled_tco2e:,.0f} vs {tco2e:,.0f}"
    assert abs(rec.difference_pct) < 1.0


def test_reconcile_detects_a_mismatch() -> None:
    c = load_cluster("dunkirk")
    assert c.plan is not None
    doctored = c.model_copy(
        update={
            "plan": c.plan.model_copy(
                update={"baseline": c.plan.baseline.model_copy(update={"tco2e": 20e6})}
            )
        }
    )
    rec = reconcile(doctored)
    assert not rec.ok and rec.difference_pct == pytest.approx(-19.99, abs=0.05)


def test_catalogue_matches_network_and_twins() -> None:
    cat = load_catalogue()
    assert cat.network.clusters == 33 and cat.network.countries == 16
    assert cat.network.reduction_potential_tco2e_per_year == 832e6
    ids = [e.id for e in cat.clusters]
    assert len(ids) == len(set(ids))
    assert len(ids) <= cat.network.clusters
    for e in cat.clusters:
        if e.twin:
            assert e.twin in available_clusters()
            c = load_cluster(e.twin)
            assert e.baseline is not None and c.plan is not None
            assert (e.baseline.year, e.baseline.tco2e) == (
                c.plan.baseline.year,
                c.plan.baseline.tco2e,
            )


def test_catalogue_unknowns_stay_unknown() -> None:
    cat = load_catalogue()
    jubail = cat.get("jubail")
    assert jubail.baseline is None and jubail.jobs is None and jubail.gdp_usd_per_year is None
    lfec = cat.get("lfec")
    assert lfec.baseline is not None and lfec.baseline.tco2e == 143e6
    assert lfec.jobs == 34546
