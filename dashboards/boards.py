"""The four ClusterTwin dashboards, built with grafana-foundation-sdk.

UIDs and titles are part of the product: links, bookmarks and the API push rely on them, so
they never change once released. Every panel takes its query from :mod:`dashboards.queries`.
"""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model

from dashboards import panels as p
from dashboards import queries as q
from streams import influx_schema as s

FOLDER_UID = "clustertwin"
FOLDER_TITLE = "ClusterTwin"
TAGS = ["clustertwin", "emissions"]

OVERVIEW_UID = "clustertwin-overview"
SITE_UID = "clustertwin-site"
PORT_UID = "clustertwin-port"
NETWORK_UID = "clustertwin-network"

GREEN, AMBER, RED = "#009E73", "#E69F00", "#D55E00"


def _base(uid: str, title: str, description: str) -> dash.Dashboard:
    links: list[cogbuilder.Builder[model.DashboardLink]] = [
        dash.DashboardLink("ClusterTwin")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags(["clustertwin"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    ]
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .links(links)
    )


def overview() -> dash.Dashboard:
    """Cluster overview: where the cluster stands against its pathway, now and this year."""
    d = _base(
        OVERVIEW_UID,
        "ClusterTwin · Cluster overview",
        "Live emissions of one industrial cluster against its decarbonisation pathway.",
    ).variables([p.twin_variable(), p.cluster_variable()])
    d.with_row(p.row("Now and this year"))
    d.with_panel(
        p.stat_panel(
            "Emissions now vs pathway",
            [q.cluster_rate_now(), q.pathway_rate_now()],
            p.UNIT_T_PER_H,
            "Scope 1 + 2 (location-based) rate over the last closed minute, next to this "
            "year's pathway expressed per hour.",
            w=6,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Year to date vs budget",
            [
                q.progress_figure(s.YTD_TCO2E, "Year to date"),
                q.progress_figure(s.BUDGET_TO_DATE_TCO2E, "Budget to date"),
            ],
            p.UNIT_TONNES,
            "Emissions since 1 January in the scopes the target counts, and the pathway's "
            "pro-rata budget for the same share of the year.",
            w=6,
            decimals=0,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Projected year end and gap",
            [
                q.progress_figure(s.PROJECTED_YEAR_END_TCO2E, "Projected"),
                q.progress_figure(s.PROJECTED_GAP_TCO2E, "Gap to pathway"),
            ],
            p.UNIT_TONNES,
            "Year-end total at the year-to-date pace, and how far it lands above (positive) or "
            "below the pathway's value for the year.",
            w=6,
            decimals=0,
            thresholds=((None, GREEN), (0.0, RED)),
        )
    )
    d.with_panel(
        p.stat_panel(
            "Data completeness",
            [q.meters_reporting_pct()],
            "percent",
            "Share of the cluster's meters whose latest reading is at most 15 minutes old at "
            "the end of the range. Figures above rest on this data.",
            w=6,
            decimals=0,
            thresholds=((None, RED), (80.0, AMBER), (95.0, GREEN)),
        )
    )
    d.with_row(p.row("Trajectory"))
    d.with_panel(
        p.timeseries_panel(
            "Emissions vs pathway",
            [q.cluster_rate_series(), q.pathway_rate_series()],
            p.UNIT_T_PER_H,
            "Cluster emissions rate against the rate the pathway allows this year.",
            w=16,
            colours={
                "Emissions (tCO2e/h)": p.ACTUAL_COLOUR,
                "Pathway (tCO2e/h)": p.PATHWAY_COLOUR,
            },
        )
    )
    d.with_panel(
        p.bargauge_panel(
            "Year to date vs budget (%)",
            [q.progress_figure(s.YTD_VS_BUDGET_PCT, "Year to date / budget")],
            "percent",
            "Progress towards this year's step on the path to 2030 and net zero: at or below "
            "100 % the cluster is on its pathway.",
            w=8,
            max_value=150.0,
            thresholds=((None, GREEN), (100.0, AMBER), (110.0, RED)),
        )
    )
    d.with_row(p.row("Targets and breakdown"))
    d.with_panel(
        p.bargauge_panel(
            "Towards 2030 and net zero",
            q.towards_targets(),
            "percent",
            "How far the annualised run-rate over the range has come from the baseline towards "
            "the 2030 pathway level and towards net zero (0 % = at baseline, 100 % = reached; "
            "negative = above baseline). Baselines and targets: the plan in twin/clusters.",
            w=6,
            max_value=100.0,
            min_value=-50.0,
            thresholds=((None, RED), (50.0, AMBER), (100.0, GREEN)),
        )
    )
    d.with_panel(
        p.bargauge_panel(
            "By site",
            [q.by_site_total()],
            p.UNIT_TONNES,
            "tCO2e (scope 1 + 2 location-based) of each site over the range.",
            w=6,
        )
    )
    d.with_panel(
        p.pie_panel(
            "Energy by carrier",
            [q.by_carrier_total()],
            p.UNIT_MWH,
            "Energy used over the range, by carrier.",
            w=6,
        )
    )
    d.with_panel(
        p.pie_panel(
            "By scope",
            [q.by_scope_total()],
            p.UNIT_TONNES,
            "tCO2e over the range: scope 1, scope 2 location-based and market-based "
            "(the two scope 2 figures are alternatives, not additive).",
            w=6,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Emissions by carrier",
            [q.by_carrier_series()],
            p.UNIT_T_PER_H,
            "Emissions rate by energy carrier, stacked.",
            w=16,
            stacked=True,
        )
    )
    d.with_panel(
        p.alert_list_panel("Open alerts", "Firing and pending ClusterTwin alert rules.", w=8)
    )
    return d


def site() -> dash.Dashboard:
    """Site drill-down: meters, energy mix, emissions, drift statistics, data quality."""
    site_var = p.query_variable(
        "site",
        "Site",
        p.tag_values_query(s.SITE, s.SITE_WINDOW, twin="${twin}", cluster="${cluster}"),
    )
    d = _base(
        SITE_UID,
        "ClusterTwin · Site drill-down",
        "One site of a cluster: its meters, energy mix, emissions, drift and data quality.",
    ).variables([p.twin_variable(), p.cluster_variable(), site_var])
    d.with_row(p.row("Emissions"))
    d.with_panel(
        p.stat_panel(
            "Emissions now",
            [q.site_rate_now()],
            p.UNIT_T_PER_H,
            "Site rate (scope 1 + 2 location-based) over the last closed minute. Pathways are "
            "shown on the cluster overview: the example clusters set targets per cluster.",
            w=6,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Year to date",
            [q.progress_figure(s.YTD_TCO2E, "Year to date", "site", True)],
            p.UNIT_TONNES,
            "Site emissions since 1 January.",
            w=6,
            decimals=0,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Data completeness",
            [q.meters_reporting_pct(site=True)],
            "percent",
            "Share of the site's meters that reported in the last 15 minutes of the range.",
            w=6,
            decimals=0,
            thresholds=((None, RED), (80.0, AMBER), (95.0, GREEN)),
        )
    )
    d.with_panel(
        p.stat_panel(
            "Readings in range",
            [q.readings_series().reduce("sum").label("Readings")],
            "short",
            "Readings accepted into this site's windows over the range.",
            w=6,
            decimals=0,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Emissions by scope",
            [q.by_scope_series(site=True)],
            p.UNIT_T_PER_H,
            "Site emissions rate by scope.",
            colours=p.SCOPE_COLOURS,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Energy mix",
            [q.by_carrier_series(s.ENERGY_MWH, site=True)],
            "MW",
            "Energy use by carrier (MWh per hour = MW), stacked.",
            stacked=True,
        )
    )
    d.with_row(p.row("Drift statistics"))
    d.with_panel(
        p.timeseries_panel(
            "Rate and moving average",
            [q.site_rate_series(), q.site_rate_moving_average(15)],
            p.UNIT_T_PER_H,
            "Per-minute rate and its 15-minute moving average: a sustained shift shows as the "
            "average leaving the band of the raw rate.",
            w=16,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Rate statistics",
            [
                q.site_rate_stat("mean", "Mean"),
                q.site_rate_stat("stddev", "Std dev"),
                q.site_rate_stat("max", "Max"),
            ],
            p.UNIT_T_PER_H,
            "Mean, standard deviation and maximum of the per-minute rate over the range.",
            w=8,
            h=8,
        )
    )
    d.with_row(p.row("Meters and data quality"))
    d.with_panel(
        p.table_panel(
            "Meters",
            [q.meter_table()],
            "Latest reading of each meter, its quality flag and when it was read.",
            w=12,
        )
    )
    d.with_panel(
        p.pie_panel(
            "Quality of latest readings",
            [q.quality_counts()],
            "short",
            "Meters whose latest reading is measured, estimated or gap-filled.",
            w=6,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Readings per minute",
            [q.readings_series()],
            "short",
            "Accepted readings per minute: a drop is missing data, not an emissions cut.",
            w=6,
            bars=True,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Energy per meter",
            [q.meter_energy_series()],
            "MW",
            "Each meter's energy flow (MWh per hour).",
            w=24,
        )
    )
    d.with_panel(
        p.table_panel(
            "Restatements",
            [q.restatements_table()],
            "Hours of this site whose figures changed after they had closed, because readings "
            "arrived late (a backfill, a gateway's buffer, a lagging connector): the hour, "
            "old and new tCO2e, how many readings were added, and why.",
            w=24,
        )
    )
    return d


def port() -> dash.Dashboard:
    """Port view: shore power, cranes, vessels at berth, for clusters that have a port."""
    port_var = p.query_variable(
        "port",
        "Port site",
        p.tag_values_query(
            s.SITE, s.SITE_WINDOW, twin="${twin}", cluster="${cluster}", carrier=q.SHORE_POWER
        ),
    )
    d = _base(
        PORT_UID,
        "ClusterTwin · Port",
        "Shore power, cranes and vessels at berth of a cluster's port (a site with shore power).",
    ).variables([p.twin_variable(), p.cluster_variable(), port_var])
    d.with_panel(
        p.stat_panel(
            "Vessels at berth on shore power",
            [q.vessels_on_shore_power()],
            "short",
            "Shore-power meters (one per berth or berth group) that drew power in their last "
            "closed minute: ships at berth plugged in instead of running their engines.",
            w=6,
            decimals=0,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Port emissions in range",
            [q.port_total(s.TCO2E, "tCO2e")],
            p.UNIT_TONNES,
            "Scope 1 + 2 (location-based) emissions of the port site over the range.",
            w=6,
            decimals=1,
        )
    )
    d.with_panel(
        p.stat_panel(
            "Port energy in range",
            [q.port_total(s.ENERGY_MWH, "MWh")],
            p.UNIT_MWH,
            "Energy used by the port over the range.",
            w=6,
            decimals=1,
        )
    )
    d.with_panel(
        p.pie_panel(
            "Port energy by carrier",
            [q.port_by_carrier()],
            p.UNIT_MWH,
            "Shore power against the fuels ships and equipment burn.",
            w=6,
            h=5,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Shore power by berth",
            [q.shore_power_series()],
            "MW",
            "Electricity supplied to ships at berth instead of their auxiliary engines.",
            stacked=True,
        )
    )
    d.with_panel(
        p.timeseries_panel(
            "Cranes and cargo handling",
            [q.crane_series()],
            "MW",
            "Energy of the cranes, straddle carriers and yard vehicles (the port assets of "
            "kind cargo_handling in the cluster model).",
        )
    )
    return d


def network() -> dash.Dashboard:
    """Network view: every cluster of the twin side by side, emissions against pathways."""
    d = _base(
        NETWORK_UID,
        "ClusterTwin · Network",
        "All clusters of the twin side by side: emissions against their pathways.",
    ).variables([p.twin_variable()])
    d.with_panel(
        p.timeseries_panel(
            "Emissions by cluster",
            [q.network_rate_series()],
            p.UNIT_T_PER_H,
            "Emissions rate of each cluster (scope 1 + 2 location-based).",
            w=16,
        )
    )
    d.with_panel(
        p.bargauge_panel(
            "Year to date vs budget (%)",
            [q.network_progress(s.YTD_VS_BUDGET_PCT)],
            "percent",
            "Each cluster's year-to-date emissions as a share of its pathway budget to date.",
            w=8,
            max_value=150.0,
            thresholds=((None, GREEN), (100.0, AMBER), (110.0, RED)),
        )
    )
    d.with_panel(
        p.table_panel(
            "Clusters against pathways",
            [q.network_table()],
            "Latest progress of each cluster: year to date, budget to date, the pathway's "
            "value for the year, the projected year end and its gap to the pathway.",
            w=16,
        )
    )
    d.with_panel(
        p.bargauge_panel(
            "Projected gap to pathway",
            [q.network_progress(s.PROJECTED_GAP_TCO2E)],
            p.UNIT_TONNES,
            "Projected year end minus the pathway's value for the year (positive: overshoot).",
            w=8,
            thresholds=((None, GREEN), (0.0, RED)),
        )
    )
    d.with_panel(
        p.bargauge_panel(
            "Towards 2030 and net zero",
            q.towards_targets(network=True),
            "percent",
            "Each cluster's annualised run-rate: how far from its baseline towards its 2030 "
            "pathway level and towards net zero.",
            w=24,
            max_value=100.0,
            min_value=-50.0,
            thresholds=((None, RED), (50.0, AMBER), (100.0, GREEN)),
        )
    )
    return d


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    OVERVIEW_UID: overview,
    SITE_UID: site,
    PORT_UID: port,
    NETWORK_UID: network,
}
