"""The Python evaluation of alert expressions follows Grafana's documented semantics.

These are the rules the Grafana-free alert tests rely on (tests/integration/dashboards/
test_alert_rules.py): if the evaluator mis-joined labels or ignored NaN, those tests would
prove nothing, so each behaviour is pinned here on hand-made series.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from dashboards import alerts
from dashboards.expressions import (
    ExpressionError,
    Frame,
    Number,
    evaluate_rule,
    labels,
    math_expression,
    reduce,
    threshold,
)

DK = labels(cluster="dunkirk")
RT = labels(cluster="rotterdam")


def test_reducers_on_a_clean_series() -> None:
    frame = [Frame(DK, (1.0, 4.0, 2.0, 3.0))]
    got = {r: reduce(frame, r)[0].value for r in ("last", "mean", "sum", "min", "max", "count")}
    assert got == {"last": 3.0, "mean": 2.5, "sum": 10.0, "min": 1.0, "max": 4.0, "count": 4.0}
    assert reduce(frame, "median")[0].value == 2.5
    assert reduce(frame, "last")[0].labels == DK


def test_strict_mode_makes_a_null_or_nan_point_nan_and_the_modes_drop_or_replace() -> None:
    frame = [Frame(DK, (1.0, None, math.nan, 5.0))]
    assert math.isnan(reduce(frame, "mean")[0].value)
    assert reduce(frame, "count")[0].value == 4.0
    assert reduce(frame, "mean", "dropNN")[0].value == 3.0
    assert reduce(frame, "sum", "replaceNN", 10.0)[0].value == 26.0
    assert math.isnan(reduce([Frame(DK, ())], "last")[0].value)
    with pytest.raises(ExpressionError):
        reduce(frame, "average")


def test_threshold_evaluators() -> None:
    nums = [Number(DK, 100.0), Number(RT, 120.0)]
    assert [n.value for n in threshold(nums, "gt", [100.0])] == [0.0, 1.0]
    assert [n.value for n in threshold(nums, "gte", [100.0])] == [1.0, 1.0]
    assert [n.value for n in threshold(nums, "lt", [110.0])] == [1.0, 0.0]
    assert [n.value for n in threshold(nums, "within_range", [100.0, 130.0])] == [0.0, 1.0]
    assert [n.value for n in threshold(nums, "outside_range", [105.0, 130.0])] == [1.0, 0.0]
    assert math.isnan(threshold([Number(DK, math.nan)], "gt", [0.0])[0].value)
    with pytest.raises(ExpressionError):
        threshold(nums, "bigger", [1.0])


def test_math_joins_numbers_by_labels() -> None:
    env = {
        "RA": [Number(DK, 12.0), Number(RT, 9.0)],
        "RB": [Number(RT, 10.0), Number(DK, 10.0)],
    }
    got = {n.labels: n.value for n in math_expression("$RA > 1.1 * $RB", env)}
    assert got == {DK: 1.0, RT: 0.0}
    # a number without labels joins every labelled one (its labels are a subset)
    env["K"] = [Number((), 2.0)]
    got = {n.labels: n.value for n in math_expression("${RA} / $K", env)}
    assert got == {DK: 6.0, RT: 4.5}


def test_math_nan_propagates_except_for_short_cuts() -> None:
    env = {"A": [Number(DK, math.nan)], "B": [Number(DK, 1.0)], "Z": [Number(DK, 0.0)]}
    assert math.isnan(math_expression("$A > 1", env)[0].value)
    assert math_expression("$B || $A", env)[0].value == 1.0
    assert math_expression("$Z && $A", env)[0].value == 0.0
    with pytest.raises(ExpressionError):
        math_expression("log($B)", env)
    with pytest.raises(ExpressionError):
        math_expression("$Q + 1", env)


def _rules(twin: str = "t") -> dict[str, dict[str, object]]:
    doc = alerts.provisioning_file(twin)
    return {r["uid"]: r for r in doc["groups"][0]["rules"]}


def test_the_committed_rules_evaluate_on_given_series() -> None:
    rule = _rules()["clustertwin-rate-above-pathway"]

    def query(text: str, start: object, stop: object) -> list[Frame]:
        if "cluster_window" in text:  # the rate, t/h, per minute
            return [Frame(DK, (10.0, 14.0)), Frame(RT, (5.0, 5.0))]
        return [Frame(DK, (10.0,)), Frame(RT, (10.0,))]  # the pathway rate

    result = evaluate_rule(rule, query, datetime(2026, 1, 1, tzinfo=UTC))
    assert {n.labels: n.value for n in result.numbers["RA"]} == {DK: 12.0, RT: 5.0}
    assert result.states == {DK: "Alerting", RT: "Normal"}


def test_no_series_is_no_data_mapped_by_the_rule() -> None:
    rule = _rules()["clustertwin-meters-silent"]
    result = evaluate_rule(rule, lambda *_: [], datetime(2026, 1, 1, tzinfo=UTC))
    assert result.numbers["C"] == []
    assert result.states == {(): "Normal"}  # noDataState OK
    assert rule["noDataState"] == "OK"
