"""Every panel query of every dashboard, run against the real InfluxDB after the real pipeline.

The queries are taken from the generated dashboard JSON (what Grafana loads), with Grafana's
macro and variable replacement done by ``dashboards.flux.standalone``. Each must return data;
the figures that can be known in advance are compared with totals computed offline from the
very readings that were produced.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from dashboards import build
from dashboards.runner import PanelQuery, Series, panel_queries, run_direct
from tests.integration.dashboards.conftest import DRILL_SITE, ProofData

pytestmark = pytest.mark.integration

MODELS = build.dashboard_models()
QUERIES = [pq for model in MODELS.values() for pq in panel_queries(model)]


def _id(pq: PanelQuery) -> str:
    return f"{pq.dashboard_uid.removeprefix('clustertwin-')}:{pq.panel_title}:{pq.ref_id}"


def _run(stack: Any, proof: ProofData, query: str) -> list[Series]:
    with stack.influx_client() as client:
        return run_direct(
            client,
            query,
            org=stack.influx_org,
            bucket=stack.influx_bucket,
            start=proof.start,
            stop=proof.stop,
            variables=proof.variables(),
        )


def _find(uid: str, title: str, ref: str = "A") -> str:
    for pq in QUERIES:
        if pq.dashboard_uid == uid and pq.panel_title == title and pq.ref_id == ref:
            return pq.query
    raise AssertionError(f"no panel {title!r} ({ref}) on {uid}")


def test_there_are_queries_on_every_dashboard() -> None:
    assert {pq.dashboard_uid for pq in QUERIES} == set(MODELS)
    assert len(QUERIES) >= 35


@pytest.mark.parametrize("pq", QUERIES, ids=_id)
def test_panel_query_returns_data(stack: Any, proof: ProofData, pq: PanelQuery) -> None:
    series = _run(stack, proof, pq.query)
    assert series, f"{_id(pq)} returned no data:\n{pq.query}"
    if pq.panel_type == "table":
        assert any(s.columns for s in series)
        return
    numbers = [v for s in series for v in s.numbers()]
    assert numbers, f"{_id(pq)} returned no numbers: {series}"
    assert all(math.isfinite(v) for v in numbers)
    names = {s.name for s in series}
    assert "_value" not in names and "" not in names, f"{_id(pq)}: unnamed series {names}"


def _last_by_name(series: list[Series]) -> dict[str, float]:
    return {s.name: s.numbers()[-1] for s in series if s.numbers()}


def test_by_site_equals_offline_totals(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(_run(stack, proof, _find("clustertwin-overview", "By site")))
    assert set(got) == set(proof.tco2e_by_site)
    for site, tonnes in proof.tco2e_by_site.items():
        assert got[site] == pytest.approx(tonnes, rel=1e-9, abs=1e-6), site


def test_energy_by_carrier_equals_offline_totals(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(_run(stack, proof, _find("clustertwin-overview", "Energy by carrier")))
    want = {c: v for c, v in proof.mwh_by_carrier.items()}
    assert set(got) == set(want)
    for carrier, mwh in want.items():
        assert got[carrier] == pytest.approx(mwh, rel=1e-9, abs=1e-6), carrier


def test_emissions_now_is_the_last_closed_minute_per_hour(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(
        _run(stack, proof, _find("clustertwin-overview", "Emissions now vs pathway"))
    )
    last_minute = max(proof.cluster_minute_tco2e)
    assert got["Now"] == pytest.approx(proof.cluster_minute_tco2e[last_minute] * 60, rel=1e-9)


def test_rate_series_matches_offline_minutes(stack: Any, proof: ProofData) -> None:
    series = _run(stack, proof, _find("clustertwin-overview", "Emissions vs pathway"))
    rate = next(s for s in series if s.name == "Emissions (tCO2e/h)")
    # one-minute display interval: each point is one minute's tonnes x 60
    assert len(rate.numbers()) == len(proof.cluster_minute_tco2e)
    assert sorted(rate.numbers()) == pytest.approx(
        sorted(v * 60 for v in proof.cluster_minute_tco2e.values()), rel=1e-9
    )


def test_site_readings_and_meters(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(_run(stack, proof, _find("clustertwin-site", "Readings in range")))
    assert got["Readings"] == proof.readings_by_site[DRILL_SITE]
    table = _run(stack, proof, _find("clustertwin-site", "Meters"))
    meters = {m for s in table for m in s.columns.get("meter", [])}
    assert meters == proof.meters_by_site[DRILL_SITE]


def test_completeness_is_full_when_every_meter_reported(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(_run(stack, proof, _find("clustertwin-overview", "Data completeness")))
    assert got["Meters reporting"] == pytest.approx(100.0)


def test_network_shows_the_cluster(stack: Any, proof: ProofData) -> None:
    got = _last_by_name(_run(stack, proof, _find("clustertwin-network", "Emissions by cluster")))
    assert set(got) == {"dunkirk"}
