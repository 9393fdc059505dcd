"""The committed alert rules, evaluated on the real InfluxDB after the real worker: no Grafana.

Each rule's datasource queries run on InfluxDB over the rule's own relative time range, as
Grafana's scheduler would run them at the proof's "now"; their reduce, threshold and math
expressions are evaluated by ``dashboards.expressions`` with Grafana's documented semantics.
The figures each step produces are compared with what is known offline about the readings
the simulator produced, and each rule's state with the state those readings call for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from dashboards import alerts, build
from dashboards.expressions import RuleEvaluation, evaluate_rule, labels
from dashboards.flux import Flux
from dashboards.runner import query_frames, run_direct
from streams import influx_schema as s
from streams.progress_series import year_fraction
from tests.integration.dashboards.conftest import CLUSTER, ProofData
from twin.model import load_cluster

pytestmark = pytest.mark.integration

DK = labels(cluster=CLUSTER)
UIDS = [r["uid"] for r in alerts.rule_payloads()]


def _rules(twin: str) -> dict[str, dict[str, Any]]:
    return {r["uid"]: r for r in alerts.provisioning_file(twin)["groups"][0]["rules"]}


def _evaluate(stack: Any, rule: dict[str, Any], now: datetime) -> RuleEvaluation:
    def query(text: str, start: datetime, stop: datetime) -> list[Any]:
        with stack.influx_client() as client:
            return query_frames(
                client,
                text,
                org=stack.influx_org,
                bucket=stack.influx_bucket,
                start=start,
                stop=stop,
            )

    return evaluate_rule(rule, query, now)


def _last_progress(stack: Any, proof: ProofData, field: str) -> tuple[datetime, float]:
    """The cluster's last progress point of the hour before ``ready``: (time, value)."""
    flux = (
        Flux.bucket()
        .measurement(s.PROGRESS)
        .where(s.TWIN, proof.twin)
        .where(s.LEVEL, "cluster")
        .where(s.CLUSTER, CLUSTER)
        .fields(field)
    )
    with stack.influx_client() as client:
        series = run_direct(
            client,
            str(flux),
            org=stack.influx_org,
            bucket=stack.influx_bucket,
            start=proof.ready - timedelta(hours=1),
            stop=proof.ready,
            variables={},
        )
    points = [(t, float(v)) for one in series for t, v in zip(one.times, one.values, strict=True)]
    assert points, f"no {field} progress in the last hour"
    when, value = max(points, key=lambda p: p[0] or datetime.min.replace(tzinfo=UTC))
    assert when is not None
    return when, value


def _plan() -> Any:
    """The cluster's target plan, read from the twin (not from what the pipeline wrote)."""
    return load_cluster(CLUSTER).plan


def test_the_evaluated_rules_are_the_committed_file_for_the_proof_twin(proof: ProofData) -> None:
    """What is evaluated here is the committed file, only watching the proof's twin tag."""
    doc = yaml.safe_load(build.ALERTING_FILE.read_text())
    flux_queries = [
        step["model"]
        for rule in doc["groups"][0]["rules"]
        for step in rule["data"]
        if "query" in step["model"]
    ]
    assert len(flux_queries) == 4
    for model in flux_queries:
        assert model["query"].count('r.twin == "live"') == 1, model["query"]
        model["query"] = model["query"].replace('r.twin == "live"', f'r.twin == "{proof.twin}"')
    assert doc == alerts.provisioning_file(proof.twin)


@pytest.mark.parametrize("uid", UIDS)
def test_every_rule_query_returns_one_series_for_the_cluster(
    stack: Any, proof: ProofData, uid: str
) -> None:
    result = _evaluate(stack, _rules(proof.twin)[uid], proof.ready)
    assert result.frames, uid
    for ref, frames in result.frames.items():
        assert [f.labels for f in frames] == [DK], f"{uid} {ref}: {frames}"
        assert frames[0].values and None not in frames[0].values, f"{uid} {ref}"
    # one alert instance, for the one cluster of the proof twin
    assert set(result.states) == {DK}, result.states


def test_year_to_date_rule_is_normal_at_the_offline_share_of_the_budget(
    stack: Any, proof: ProofData
) -> None:
    result = _evaluate(stack, _rules(proof.twin)["clustertwin-ytd-above-budget"], proof.ready)
    # the budget to date at the last progress point, from the twin's own pathway
    when, _ = _last_progress(stack, proof, s.YTD_VS_BUDGET_PCT)
    year, fraction = year_fraction(int(when.timestamp() * 1000))
    plan = _plan()
    budget = plan.pathway().at(year) * fraction
    scopes = ["s1", "s2_location"] if plan.baseline.scopes == "1+2" else ["s1"]
    ytd = sum(proof.tco2e_by_scope[k] for k in scopes)
    [b] = result.numbers["B"]
    assert b.value == pytest.approx(100.0 * ytd / budget, rel=1e-6)
    # 90 minutes of emissions against a budget that has run since 1 January
    assert 0.0 < b.value < 100.0
    assert [n.value for n in result.numbers["C"]] == [0.0]
    assert result.states == {DK: "Normal"}


def test_rate_rule_compares_the_offline_hourly_rate_with_the_pathway(
    stack: Any, proof: ProofData
) -> None:
    rule = _rules(proof.twin)["clustertwin-rate-above-pathway"]
    result = _evaluate(stack, rule, proof.ready)
    start_ms = int((proof.ready - timedelta(seconds=3600)).timestamp() * 1000)
    minutes = [t * 60 for m, t in proof.cluster_minute_tco2e.items() if m >= start_ms]
    assert 50 <= len(minutes) <= 61
    [ra] = result.numbers["RA"]
    assert ra.value == pytest.approx(sum(minutes) / len(minutes), rel=1e-9)
    [rb] = result.numbers["RB"]
    pathway = _plan().pathway().at(proof.ready.year) / 8760.0
    assert rb.value == pytest.approx(pathway, rel=1e-9)
    assert pathway > 0
    expected = "Alerting" if ra.value > 1.1 * pathway else "Normal"
    assert result.states == {DK: expected}


def test_silent_meters_rule_is_normal_now_and_fires_when_the_meters_fall_silent(
    stack: Any, proof: ProofData
) -> None:
    rule = _rules(proof.twin)["clustertwin-meters-silent"]
    now = _evaluate(stack, rule, proof.ready)
    assert [n.value for n in now.numbers["B"]] == [pytest.approx(100.0)]
    assert now.states == {DK: "Normal"}
    # the same data seen 16 minutes after the last reading's minute: every meter is silent
    last_ms = max(proof.cluster_minute_tco2e) + 60_000
    later = datetime.fromtimestamp(last_ms / 1000, tz=proof.ready.tzinfo) + timedelta(minutes=16)
    silent = _evaluate(stack, rule, later)
    assert [n.value for n in silent.numbers["B"]] == [0.0]
    assert silent.states == {DK: "Alerting"}


@pytest.mark.parametrize("uid", UIDS)
def test_a_twin_without_data_is_no_data_which_the_rules_map_to_normal(
    stack: Any, proof: ProofData, uid: str
) -> None:
    rule = _rules(f"{proof.twin}-absent")[uid]
    result = _evaluate(stack, rule, proof.ready)
    assert all(frames == [] for frames in result.frames.values()), result.frames
    assert rule["noDataState"] == "OK"
    assert result.states == {(): "Normal"}
