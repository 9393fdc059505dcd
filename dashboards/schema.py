"""The InfluxDB schema the dashboards read, named once.

It mirrors what the pipeline writes (``streams/sink.py``; ``streams/README.md`` documents it).
A unit test builds points with the pipeline's own line-protocol functions and checks every
name used here against them, so a rename on either side fails the build instead of leaving
panels that quietly show "No data".
"""

from __future__ import annotations

from typing import Final

# -- measurements ---------------------------------------------------------------------------
# Tumbling-window totals (timestamp = window start), one point per window and carrier.
METER_WINDOW: Final = "meter_window"
SITE_WINDOW: Final = "site_window"
CLUSTER_WINDOW: Final = "cluster_window"
# Latest reading of each meter (timestamp = the reading's own time).
METER_LATEST: Final = "meter_latest"
# Every accepted reading (timestamp = its own time), late ones included: what a restatement
# reads back, and what says whether a past range had its data.
METER_READING: Final = "meter_reading"
# A site hour restated after it had closed (timestamp = the record time that restated it;
# tag HOUR = the hour's start, epoch ms).
RESTATEMENT: Final = "restatement"
# Year-to-date running totals per cluster (no site tag) and per site, per carrier.
TWIN_YTD: Final = "twin_ytd"

# -- tags -------------------------------------------------------------------------------------
TWIN: Final = "twin"
CLUSTER: Final = "cluster"
SITE: Final = "site"
METER: Final = "meter"
CARRIER: Final = "carrier"
RES: Final = "res"  # window resolution: one of RESOLUTIONS
YEAR: Final = "year"

RESOLUTIONS: Final = ("1m", "15m", "1h")

# -- fields of the window and year-to-date measurements ---------------------------------------
ENERGY_MWH: Final = "energy_mwh"
TCO2E: Final = "tco2e"  # scope 1 + scope 2 (location-based): the headline figure
TCO2E_S1: Final = "tco2e_s1"
TCO2E_S2_LOCATION: Final = "tco2e_s2_location"
TCO2E_S2_MARKET: Final = "tco2e_s2_market"
TCO2E_S3_UPSTREAM: Final = "tco2e_s3_upstream"  # upstream (well-to-tank) of fuels and power
SCOPE_FIELDS: Final = (TCO2E_S1, TCO2E_S2_LOCATION, TCO2E_S2_MARKET, TCO2E_S3_UPSTREAM)
READINGS: Final = "readings"  # integer: readings that went into the window
# bool: the window is final. Site and meter windows close after their grace period; cluster
# windows only when they leave the cluster stage's retention (6 h), so "closed" figures for a
# cluster are taken from its sites (cluster window = sum of its site windows).
COMPLETE: Final = "complete"
FIGURE_FIELDS: Final = (ENERGY_MWH, *SCOPE_FIELDS, TCO2E, READINGS)

# -- fields of meter_latest (and meter_reading) -----------------------------------------------
VALUE: Final = "value"
QUALITY: Final = "quality"  # measured | estimated | gap_filled

# -- restatement: tags and fields --------------------------------------------------------------
HOUR: Final = "hour"
OLD_TCO2E: Final = "old_tco2e"
NEW_TCO2E: Final = "new_tco2e"
READINGS_ADDED: Final = "readings_added"
REASON: Final = "reason"
RESTATEMENT_FIELDS: Final = (
    OLD_TCO2E,
    NEW_TCO2E,
    "old_energy_mwh",
    "new_energy_mwh",
    READINGS_ADDED,
    REASON,
)

# Human labels for the scope fields, used as series names.
SCOPE_LABELS: Final = {
    TCO2E_S1: "Scope 1",
    TCO2E_S2_LOCATION: "Scope 2 (location-based)",
    TCO2E_S2_MARKET: "Scope 2 (market-based)",
    TCO2E_S3_UPSTREAM: "Scope 3 (upstream)",
}

# -- progress against targets (streams/progress_series.py), every few seconds per cluster, site --
PROGRESS: Final = "progress"
LEVEL: Final = "level"  # tag: "cluster" | "site"
CLUSTER_SITE: Final = "_cluster"  # the site tag of cluster-level progress points
YTD_TCO2E: Final = "ytd_tco2e"  # year to date, in the scopes the plan counts
YTD_SCOPE_FIELDS: Final = ("ytd_tco2e_s1", "ytd_tco2e_s2_location", "ytd_tco2e_s2_market")
YEAR_FRACTION: Final = "year_fraction"
PATHWAY_TCO2E_YEAR: Final = "pathway_tco2e_year"  # the pathway's value for the whole year
BUDGET_TO_DATE_TCO2E: Final = "budget_to_date_tco2e"  # pathway x fraction of the year gone
YTD_VS_BUDGET_PCT: Final = "ytd_vs_budget_pct"
PROJECTED_YEAR_END_TCO2E: Final = "projected_year_end_tco2e"
PROJECTED_GAP_TCO2E: Final = "projected_gap_tco2e"  # projected minus pathway (> 0: overshoot)
ON_TRACK: Final = "on_track"  # bool
