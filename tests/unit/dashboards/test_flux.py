"""The typed Flux model: composition, validation, and the Grafana-equivalent interpolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from grafana_foundation_sdk.cog import runtime as cogruntime

from dashboards.flux import (
    DATASOURCE_UID,
    Flux,
    FluxError,
    FluxQuery,
    FluxQueryBuilder,
    Var,
    interpolate_variables,
    standalone,
    string,
)


def test_pipeline_renders_in_order_with_grafana_macros() -> None:
    flux = (
        Flux.bucket()
        .measurement("site_window")
        .where("cluster", Var("cluster"))
        .fields("tco2e", "energy_mwh")
        .aggregate_window(fn="sum")
        .label("Total")
    )
    text = flux.render()
    lines = text.splitlines()
    assert lines[0] == "from(bucket: v.defaultBucket)"
    assert lines[1] == "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)"
    assert '|> filter(fn: (r) => r.cluster == "${cluster}")' in text
    assert 'r._field == "tco2e" or r._field == "energy_mwh"' in text
    assert "aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)" in text
    assert text.index("aggregateWindow") < text.index('set(key: "_field", value: "Total")')


def test_pipelines_are_immutable() -> None:
    base = Flux.bucket().measurement("m")
    a = base.fields("x")
    b = base.fields("y")
    assert 'r._field == "x"' in a.render() and 'r._field == "x"' not in b.render()
    assert base.render().count("|>") == 2


def test_aggregates_are_stamped_selectors_keep_their_time() -> None:
    assert "_time: v.timeRangeStop" in Flux.bucket().reduce("sum").render()
    assert "_time: v.timeRangeStop" not in Flux.bucket().reduce("last").render()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Flux.bucket().fields("bad field"),
        lambda: Flux.bucket().where("no-dash", "x"),
        lambda: Flux.bucket().aggregate_window(every="5 minutes"),
        lambda: Flux.bucket().aggregate_window(fn="average"),
        lambda: Flux.bucket().where_match("meter", "a/b"),
        lambda: Flux.bucket().fields(),
        lambda: Flux().render(),
        lambda: Flux.bucket().measurement("m").range("-1h"),
        lambda: Var("not a name"),
        lambda: Flux.bucket().moving_average(0),
    ],
)
def test_mistakes_fail_when_the_dashboard_is_built(make: object) -> None:
    with pytest.raises(FluxError):
        make()  # type: ignore[operator]


def test_string_literals_escape_quotes_and_interpolation() -> None:
    assert string('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert string("${x}") == '"\\${x}"'  # a literal, not a variable
    assert string(Var("site")) == '"${site}"'


def test_variables_are_replaced_like_grafanas_frontend() -> None:
    text = 'r.site == "${site}" and r.c == "$cluster" and $__interval'
    out = interpolate_variables(text, {"site": "port", "cluster": "dunkirk"})
    assert out == 'r.site == "port" and r.c == "dunkirk" and $__interval'
    with pytest.raises(FluxError, match="twin"):
        interpolate_variables('r.twin == "${twin}"', {})


def test_standalone_replaces_macros_as_grafana_backend_does() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    flux = Flux.bucket().aggregate_window().where("site", Var("site")).render()
    text = standalone(
        flux,
        start=start,
        stop=start + timedelta(hours=1),
        bucket="clustertwin/autogen",
        window=timedelta(minutes=5),
        variables={"site": "steelworks"},
    )
    assert 'from(bucket: "clustertwin/autogen")' in text
    assert "range(start: 2026-01-02T03:04:05.000000Z, stop: 2026-01-02T04:04:05.000000Z)" in text
    assert "every: 300s" in text
    assert '"steelworks"' in text and "v." not in text


def test_flux_query_is_an_sdk_dataquery_and_round_trips() -> None:
    query = FluxQueryBuilder(Flux.bucket().measurement("m"), ref_id="B").build()
    data = query.to_json()
    assert data["refId"] == "B"
    assert data["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
    back = cogruntime.dataquery_from_json(data, "")
    assert isinstance(back, FluxQuery)
    assert back.to_json() == data
