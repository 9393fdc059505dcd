"""House style for ClusterTwin panels and variables, on top of grafana-foundation-sdk.

Each helper takes the Flux queries a panel shows and returns an SDK builder with the units,
colours, legends and sizes shared by all four dashboards, so they look like one product and a
panel is described by what it shows rather than by fifty option calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import bargauge, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import piechart as piechart_model

from dashboards.flux import Flux, FluxQueryBuilder, datasource_ref, string
from streams import influx_schema as schema

Target = tuple[str, Flux]  # (legend/refId label, query)

# Okabe-Ito-like palette: distinguishable for colour-blind readers.
SCOPE_COLOURS = {
    "Scope 1": "#D55E00",
    "Scope 2 (location-based)": "#0072B2",
    "Scope 2 (market-based)": "#56B4E9",
    "Scope 3 (upstream)": "#CC79A7",
}
ACTUAL_COLOUR = "#D55E00"
PATHWAY_COLOUR = "#009E73"

UNIT_T_PER_H = "t/h"  # Grafana shows custom suffix units verbatim
UNIT_TONNES = "suffix: tCO2e"
UNIT_MWH = "suffix: MWh"


def _targets(queries: Sequence[Flux | Target]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    built: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for i, item in enumerate(queries):
        query = item[1] if isinstance(item, tuple) else item
        built.append(FluxQueryBuilder(query, ref_id=chr(ord("A") + i)))
    return built


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _size(builder: cogbuilder.Builder[model.Panel], w: int, h: int) -> None:
    # All panel builders share the span/height API of dashboard.Panel.
    builder.span(w).height(h)  # type: ignore[attr-defined]


def stat_panel(
    title: str,
    queries: Sequence[Flux | Target],
    unit: str,
    description: str,
    w: int = 4,
    h: int = 5,
    decimals: int = 1,
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "blue"),),
    graph: bool = False,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .targets(_targets(queries))
        .unit(unit)
        .decimals(decimals)
        .thresholds(_thresholds(*thresholds))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA if graph else common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    _size(panel, w, h)
    return panel


def timeseries_panel(
    title: str,
    queries: Sequence[Flux | Target],
    unit: str,
    description: str,
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
    bars: bool = False,
    colours: dict[str, str] | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .targets(_targets(queries))
        .unit(unit)
        .line_width(2)
        .fill_opacity(35 if stacked else 10)
        .span_nulls(True)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .stacking(
            common_builders.StackingConfig().mode(
                common.StackingMode.NORMAL if stacked else common.StackingMode.NONE
            )
        )
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "lastNotNull"])
        )
    )
    for name, colour in (colours or {}).items():
        panel.override_by_name(
            name,
            [
                model.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": colour}
                )
            ],
        )
    _size(panel, w, h)
    return panel


def bargauge_panel(
    title: str,
    queries: Sequence[Flux | Target],
    unit: str,
    description: str,
    w: int = 8,
    h: int = 8,
    max_value: float | None = None,
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "#0072B2"),),
    min_value: float = 0.0,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .targets(_targets(queries))
        .unit(unit)
        .decimals(1)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .thresholds(_thresholds(*thresholds))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .min(min_value)
    )
    if max_value is not None:
        panel.max(max_value)
    _size(panel, w, h)
    return panel


def pie_panel(
    title: str,
    queries: Sequence[Flux | Target],
    unit: str,
    description: str,
    w: int = 8,
    h: int = 8,
) -> piechart.Panel:
    panel = (
        piechart.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .targets(_targets(queries))
        .unit(unit)
        .decimals(1)
        .pie_type(piechart_model.PieChartType.DONUT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .legend(
            piechart.PieChartLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .values([piechart_model.PieChartLegendValues.PERCENT])
        )
    )
    _size(panel, w, h)
    return panel


def table_panel(
    title: str, queries: Sequence[Flux | Target], description: str, w: int = 12, h: int = 8
) -> table.Panel:
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .targets(_targets(queries))
        .decimals(2)
        .show_header(True)
    )
    _size(panel, w, h)
    return panel


def alert_list_panel(title: str, description: str, w: int = 8, h: int = 8) -> dash.Panel:
    """Grafana's own alert list, filtered to the ClusterTwin folder: no query of its own."""
    panel = (
        dash.Panel()
        .type("alertlist")
        .title(title)
        .description(description)
        .options(
            {
                "viewMode": "list",
                "groupMode": "default",
                "maxItems": 20,
                "sortOrder": 1,
                "showInstances": True,
                "stateFilter": {"firing": True, "pending": True, "noData": True, "error": True},
                "alertInstanceLabelFilter": "",
                "folder": {"uid": "clustertwin"},
                "datasource": "grafana",
            }
        )
    )
    _size(panel, w, h)
    return panel


def row(title: str) -> dash.Row:
    return dash.Row(title)


# -- variables --------------------------------------------------------------------------------


def tag_values_query(tag: str, measurement: str, **filters: str) -> str:
    """A variable query listing the values of one tag, in plain Flux (no schema package).

    ``schema.tagValues`` is not in the Flux of InfluxDB 1.8, which the local stack may run.
    """
    flux = Flux.bucket().measurement(measurement)
    for key, value in filters.items():
        if value.startswith("$"):
            flux = flux._then(f'filter(fn: (r) => r.{key} == "{value}")')
        else:
            flux = flux._then(f"filter(fn: (r) => r.{key} == {string(value)})")
    flux = flux.keep(tag)._then("group()")._then(f'distinct(column: "{tag}")').sort("_value")
    return flux.render()


def query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(datasource_ref())
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(False)
        .include_all(False)
    )


def twin_variable() -> dash.QueryVariable:
    return query_variable(
        "twin", "Twin", tag_values_query(schema.TWIN, schema.CLUSTER_WINDOW)
    ).hide(model.VariableHide.HIDE_VARIABLE)


def cluster_variable() -> dash.QueryVariable:
    return query_variable(
        "cluster",
        "Cluster",
        tag_values_query(schema.CLUSTER, schema.CLUSTER_WINDOW, twin="${twin}"),
    )
