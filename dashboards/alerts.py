"""Grafana alert rules that watch the figures the dashboards show, as code.

Three rules, each multi-dimensional (one alert instance per cluster, from the ``cluster``
label of the query's series), evaluated by Grafana against the same InfluxDB:

* the cluster's year-to-date emissions exceed the pathway's budget to date;
* the cluster's emissions rate over the last hour runs more than 10 % above the pathway rate;
* fewer than 80 % of a cluster's meters reported in the last 15 minutes (a data alert: the
  figures above cannot be trusted then, kept apart from emission alerts by its ``kind`` label).

The detectors of the stream worker (EWMA/CUSUM, silent and stuck meters) are a different
layer with their own topic; these rules are what an operator sees in Grafana's alert list.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import alerting
from grafana_foundation_sdk.builders import expr as expr_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_model
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import expr as expr_model

from dashboards.boards import FOLDER_TITLE, FOLDER_UID
from dashboards.flux import DATASOURCE_UID, Flux, FluxQueryBuilder
from streams import influx_schema as s

RULE_GROUP = "clustertwin-pathway"
EXPR_UID = "__expr__"
DEFAULT_TWIN = "live"  # streams' default `twin` tag (CLUSTERTWIN_STREAMS_TWIN)


def _rate_by_cluster(twin: str) -> Flux:
    return (
        Flux.bucket()
        .measurement(s.CLUSTER_WINDOW)
        .where(s.TWIN, twin)
        .where(s.RES, "1m")
        .fields(s.TCO2E)
        .group(s.CLUSTER)
        .aggregate_window(every="1m", fn="sum")
        .scale(60.0)
        .keep("_time", "_value", s.CLUSTER)
    )


def _progress_by_cluster(twin: str, field: str, per_hour: bool = False) -> Flux:
    flux = (
        Flux.bucket()
        .measurement(s.PROGRESS)
        .where(s.TWIN, twin)
        .where(s.LEVEL, "cluster")
        .fields(field)
        .group(s.CLUSTER)
    )
    if per_hour:
        flux = flux.scale(1.0 / 8760.0)
    return flux.keep("_time", "_value", s.CLUSTER)


def _meters_reporting_by_cluster(twin: str) -> Flux:
    return (
        Flux.bucket()
        .measurement(s.METER_READING)
        .where(s.TWIN, twin)
        .fields(s.VALUE)
        .group(s.CLUSTER, s.METER)
        .reduce("last")
        .map_raw(
            "r with _value: if int(v: r._time) >= int(v: v.timeRangeStop) - int(v: 15m) "
            "then 100.0 else 0.0"
        )
        .group(s.CLUSTER)
        .reduce("mean")
        .keep("_time", "_value", s.CLUSTER)
    )


def _query(ref: str, flux: Flux, seconds: int) -> alerting.Query:
    return (
        alerting.Query(ref)
        .datasource_uid(DATASOURCE_UID)
        .relative_time_range(alerting_model.RelativeTimeRange(from_val=seconds, to=0))
        .model(FluxQueryBuilder(flux, ref_id=ref))
    )


def _expr(ref: str, model: Any) -> alerting.Query:
    return (
        alerting.Query(ref)
        .datasource_uid(EXPR_UID)
        .relative_time_range(alerting_model.RelativeTimeRange(from_val=600, to=0))
        .model(
            model.ref_id(ref).datasource(
                dashboard_model.DataSourceRef(type_val="__expr__", uid=EXPR_UID)
            )
        )
    )


def _reduce(ref: str, source: str, reducer: Any) -> alerting.Query:
    return _expr(ref, expr_builders.TypeReduce().expression(source).reducer(reducer))


def _threshold(ref: str, source: str, op: Any, value: float) -> alerting.Query:
    condition = expr_builders.ExprTypeThresholdConditions().evaluator(
        expr_builders.ExprTypeThresholdConditionsEvaluator().type(op).params([value])
    )
    return _expr(ref, expr_builders.TypeThreshold().expression(source).conditions([condition]))


def _rule(uid: str, title: str, kind: str, summary: str, for_: str) -> alerting.Rule:
    return (
        alerting.Rule(title)
        .uid(uid)
        .folder_uid(FOLDER_UID)
        .rule_group(RULE_GROUP)
        .for_val(for_)
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"product": "clustertwin", "kind": kind})
        .annotations({"summary": summary})
    )


def rules(twin: str = DEFAULT_TWIN) -> list[alerting.Rule]:
    above_budget = (
        _rule(
            "clustertwin-ytd-above-budget",
            "Cluster year to date above pathway budget",
            "emissions",
            "{{ $labels.cluster }}: year-to-date emissions are {{ $values.B.Value | printf "
            '"%.0f" }} % of the pathway budget to date.',
            "15m",
        )
        .with_query(_query("A", _progress_by_cluster(twin, s.YTD_VS_BUDGET_PCT), 3600))
        .with_query(_reduce("B", "A", "last"))
        .with_query(_threshold("C", "B", "gt", 100.0))
        .condition("C")
    )
    rate_above = (
        _rule(
            "clustertwin-rate-above-pathway",
            "Cluster emissions rate above pathway",
            "emissions",
            "{{ $labels.cluster }}: the last hour ran more than 10 % above the pathway rate.",
            "10m",
        )
        .with_query(_query("A", _rate_by_cluster(twin), 3600))
        .with_query(_query("B", _progress_by_cluster(twin, s.PATHWAY_TCO2E_YEAR, True), 3600))
        .with_query(_reduce("RA", "A", "mean"))
        .with_query(_reduce("RB", "B", "last"))
        .with_query(_expr("C", expr_builders.TypeMath().expression("$RA > 1.1 * $RB")))
        .condition("C")
    )
    silent = (
        _rule(
            "clustertwin-meters-silent",
            "Cluster meters not reporting",
            "data",
            '{{ $labels.cluster }}: only {{ $values.B.Value | printf "%.0f" }} % of the '
            "meters reported in the last 15 minutes; the cluster's figures are incomplete.",
            "5m",
        )
        .with_query(_query("A", _meters_reporting_by_cluster(twin), 86400))
        .with_query(_reduce("B", "A", "last"))
        .with_query(_threshold("C", "B", "lt", 80.0))
        .condition("C")
    )
    return [above_budget, rate_above, silent]


def rule_payloads(twin: str = DEFAULT_TWIN) -> list[dict[str, Any]]:
    """Rules as Grafana's provisioning API takes them (``/api/v1/provisioning/alert-rules``)."""
    encoder = JSONEncoder(sort_keys=True)
    out: list[dict[str, Any]] = []
    for rule in rules(twin):
        payload: dict[str, Any] = json.loads(encoder.encode(rule.build()))
        payload["orgID"] = payload.get("orgID") or 1
        out.append(payload)
    return out


def provisioning_file(twin: str = DEFAULT_TWIN) -> dict[str, Any]:
    """The same rules as a Grafana file-provisioning document (``provisioning/alerting/``)."""
    file_rules = []
    for payload in rule_payloads(twin):
        file_rules.append(
            {
                "uid": payload["uid"],
                "title": payload["title"],
                "condition": payload["condition"],
                "data": payload["data"],
                "noDataState": payload["noDataState"],
                "execErrState": payload["execErrState"],
                "for": payload["for"],
                "labels": payload.get("labels", {}),
                "annotations": payload.get("annotations", {}),
                "isPaused": False,
            }
        )
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": RULE_GROUP,
                "folder": FOLDER_TITLE,
                "interval": "1m",
                "rules": file_rules,
            }
        ],
    }


__all__ = ["RULE_GROUP", "expr_model", "provisioning_file", "rule_payloads", "rules"]
