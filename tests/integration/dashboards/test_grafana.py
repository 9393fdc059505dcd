"""A real Grafana (built from its Go module by the local stack) provisioned with grafana-client.

The push goes through the same code as `clustertwin dashboards push`; then every panel query
is sent to Grafana's own ``/api/ds/query`` (the request its frontend makes, variables already
interpolated) and must return the same series and values as the query run on InfluxDB
directly. The alert rules' queries and expressions are evaluated by Grafana too.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from dashboards import alerts, build, provision
from dashboards.boards import FOLDER_UID
from dashboards.flux import DATASOURCE_UID
from dashboards.runner import (
    PanelQuery,
    frames_to_series,
    grafana_query_payload,
    panel_queries,
    run_direct,
)
from tests.integration.dashboards.conftest import GrafanaHandle, ProofData

pytestmark = pytest.mark.integration

MODELS = build.dashboard_models()
QUERIES = [pq for model in MODELS.values() for pq in panel_queries(model)]


def _id(pq: PanelQuery) -> str:
    return f"{pq.dashboard_uid.removeprefix('clustertwin-')}:{pq.panel_title}:{pq.ref_id}"


@pytest.fixture(scope="module")
def pushed(stack: Any, grafana: GrafanaHandle, proof: ProofData) -> Any:
    api = grafana.api()
    target = provision.InfluxTarget(
        url=stack.influx_url,
        token=stack.influx_token,
        org=stack.influx_org,
        bucket=stack.influx_bucket,
    )
    first = provision.push(api, target, twin=proof.twin)
    second = provision.push(api, target, twin=proof.twin)
    return api, first, second


def test_push_provisions_everything_and_is_idempotent(pushed: Any) -> None:
    api, first, second = pushed
    kinds = {(c.kind, c.uid) for c in first}
    assert ("datasource", DATASOURCE_UID) in kinds
    assert {uid for kind, uid in kinds if kind == "dashboard"} == set(MODELS)
    assert len([k for k in kinds if k[0] == "alert-rule"]) == len(alerts.rules())
    assert all(c.action == "unchanged" for c in second), second
    for uid, model in MODELS.items():
        stored = api.dashboard.get_dashboard(uid)
        assert stored["meta"]["folderUid"] == FOLDER_UID
        assert stored["dashboard"]["panels"] == model["panels"]
    health = api.datasource.health(DATASOURCE_UID)
    assert health.get("status") == "OK", health


def test_changed_dashboard_is_updated_then_unchanged(stack: Any, pushed: Any) -> None:
    api, _, _ = pushed
    uid = "clustertwin-port"
    stored = api.dashboard.get_dashboard(uid)["dashboard"]
    stored["title"] = "edited by hand"
    api.dashboard.update_dashboard(
        {"dashboard": stored, "folderUid": FOLDER_UID, "overwrite": True}
    )
    change = provision.ensure_dashboard(api, MODELS[uid])
    assert change.action == "updated"
    assert api.dashboard.get_dashboard(uid)["dashboard"]["title"] == MODELS[uid]["title"]
    assert provision.ensure_dashboard(api, MODELS[uid]).action == "unchanged"


@pytest.mark.parametrize("pq", QUERIES, ids=_id)
def test_panel_query_through_grafana(
    stack: Any, proof: ProofData, pushed: Any, pq: PanelQuery
) -> None:
    api, _, _ = pushed
    body = grafana_query_payload(
        pq.query, start=proof.start, stop=proof.stop, variables=proof.variables()
    )
    response = api.client.POST("/ds/query", json=body)
    via_grafana = frames_to_series(response)
    assert via_grafana, f"{_id(pq)}: Grafana returned no frames"
    with stack.influx_client() as client:
        direct = run_direct(
            client,
            pq.query,
            org=stack.influx_org,
            bucket=stack.influx_bucket,
            start=proof.start,
            stop=proof.stop,
            variables=proof.variables(),
        )
    if pq.panel_type == "table":
        # a table arrives as one frame with a column per field
        names = {s.name for s in via_grafana}
        assert {c for s in direct for c in s.columns} & names
        return
    got = {s.name: [v for v in s.values if isinstance(v, int | float)] for s in via_grafana}
    want = {s.name: s.numbers() for s in direct}
    assert set(got) == set(want), _id(pq)
    for name, values in want.items():
        assert len(got[name]) == len(values), name
        assert all(
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
            for a, b in zip(sorted(got[name]), sorted(values), strict=True)
        ), name


@pytest.mark.parametrize("uid", [r["uid"] for r in alerts.rule_payloads()])
def test_alert_rule_evaluates_in_grafana(proof: ProofData, pushed: Any, uid: str) -> None:
    api, _, _ = pushed
    rule = api.alertingprovisioning.get_alertrule(uid)
    assert rule["folderUID"] == FOLDER_UID
    assert proof.twin in rule["data"][0]["model"]["query"]
    result = api.client.POST(
        "/v1/eval", json={"data": rule["data"], "condition": rule["condition"]}
    )
    frames = result["results"]
    for ref, res in frames.items():
        assert not res.get("error"), f"{uid} {ref}: {res.get('error')}"
    condition = frames[rule["condition"]]["frames"]
    assert condition, f"{uid}: the condition produced no series"
    # one alert instance per cluster: the proof twin has one cluster
    labels = [f["schema"]["fields"][0].get("labels") or {} for f in condition]
    assert {lab.get("cluster") for lab in labels} == {"dunkirk"}, labels
