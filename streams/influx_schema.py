"""The InfluxDB schema: every measurement, tag and field name, named once.

The worker writes with these names (``streams.sink``), the restatement reads its own points
back with them (``streams.stored``), and the live view (``streams.webview``) and the Grafana
dashboards (``dashboards/``) query them; ``streams/README.md`` documents the schema. A name
changed here changes on both sides at once, instead of leaving panels that quietly show
"No data". (It lives in ``streams`` because the dashboards may import the stream, not the
other way round.)
"""

from __future__ import annotations

from typing import Final

# -- measurements ---------------------------------------------------------------------------
# Tumbling-window totals (timestamp = window start), one point per window and carrier.
# Cluster windows at every resolution of RESOLUTIONS, written as they grow (at most once a
# second); site windows at every resolution but only once closed (or restated), as meter
# windows at METER_RESOLUTIONS. At 165,000 meters a point per meter, resolution and batch
# was 3 of the 4.6-5.6 points written per reading (a meter's live figures are its readings,
# below), and rewriting a site's open windows with every batch, then once more to close
# them, 0.95 of the 2.5 left. The live figures of a site are the worker's state (the live
# view); the dashboards' per-minute figures lag by the grace period.
METER_WINDOW: Final = "meter_window"
SITE_WINDOW: Final = "site_window"
CLUSTER_WINDOW: Final = "cluster_window"
# Every accepted reading (timestamp = its own time), late ones included: what a restatement
# reads back, what says whether a past range had its data, and a meter's latest value
# (``last()``; there is no separate "latest" measurement: it repeated this one's point).
METER_READING: Final = "meter_reading"
# A site hour restated after it had closed (timestamp = the record time that restated it;
# tag HOUR = the hour's start, epoch ms).
RESTATEMENT: Final = "restatement"
# A factor revision's restatement (``streams.factor_restate``): per site, carrier and year,
# what the readings in the new version's validity period held and hold at the new version
# (timestamp = the period's start: a second run overwrites the same point).
FACTOR_RESTATEMENT: Final = "factor_restatement"
# ... and its change of the 1-hour windows (``streams.factor_windows``): per site, carrier and
# hour (tag LEVEL=site) and per cluster carrier and hour (LEVEL=cluster, no site tag), the
# change of every figure (``delta_field``, with the headline's: delta_tco2e) and the restated
# readings in the hour (timestamp = the hour's start; tags RES=1h and the revision's FACTOR,
# OLD_VERSION, NEW_VERSION: a rerun overwrites the same points). The windows themselves are
# left as the worker wrote them, the previous edition; the current edition of a window is
# the window plus the changes of every revision (``streams.editions``).
WINDOW_RESTATEMENT: Final = "window_restatement"
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
# site_window and twin_ytd of a transfer between sites (``streams.transfers``): on the
# sender's point "<mode>><receiver>" (its energy and, for fuel that moves, the credit), on
# the receiver's "<mode><<sender>" (the tonnes it is attributed); absent on other points.
TRANSFER: Final = "transfer"

RESOLUTIONS: Final = ("1m", "15m", "1h")
# the resolutions at which meter windows are kept and stored (closed windows only)
METER_RESOLUTIONS: Final = ("1h",)
# the resolutions at which an open site window is written: none (an open window is the
# worker's; the live view's history fills a site's open hours from its closed 1-min windows)
SITE_OPEN_RESOLUTIONS: Final[tuple[str, ...]] = ()

# The window measurement of each level of a ``streams.windows.WindowUpdate``.
WINDOW_MEASUREMENTS: Final = {"meter": METER_WINDOW, "site": SITE_WINDOW, "cluster": CLUSTER_WINDOW}

# -- fields of the window and year-to-date measurements ---------------------------------------
ENERGY_MWH: Final = "energy_mwh"
TCO2E: Final = "tco2e"  # scope 1 + scope 2 (location-based): the headline figure
TCO2E_S1: Final = "tco2e_s1"
TCO2E_S2_LOCATION: Final = "tco2e_s2_location"
TCO2E_S2_MARKET: Final = "tco2e_s2_market"
TCO2E_S3_UPSTREAM: Final = "tco2e_s3_upstream"  # upstream (well-to-tank) of fuels and power
SCOPE_FIELDS: Final = (TCO2E_S1, TCO2E_S2_LOCATION, TCO2E_S2_MARKET, TCO2E_S3_UPSTREAM)
# Scope 1 by gas, in t of the gas (the order of ``twin.contract.GASES``): fossil CO2, CH4,
# N2O, CO2e a factor gives only as CO2e; then two lines that are NOT in scope 1: biogenic CO2
# (a memo item) and CO2 sent to capture/storage. tco2e_s1 is net of the captured CO2;
# tco2e_s1_gross = tco2e_s1 + co2_captured_t.
CO2_T: Final = "co2_t"
CH4_T: Final = "ch4_t"
N2O_T: Final = "n2o_t"
CO2E_OTHER_T: Final = "co2e_other_t"
CO2_BIOGENIC_T: Final = "co2_biogenic_t"
CO2_CAPTURED_T: Final = "co2_captured_t"
GAS_FIELDS: Final = (CO2_T, CH4_T, N2O_T, CO2E_OTHER_T, CO2_BIOGENIC_T, CO2_CAPTURED_T)
TCO2E_S1_GROSS: Final = "tco2e_s1_gross"
READINGS: Final = "readings"  # integer: readings that went into the window
# bool: the window is final. Site and meter windows close after their grace period; cluster
# windows only when they leave the cluster stage's retention (6 h), so "closed" figures for a
# cluster are taken from its sites (cluster window = sum of its site windows).
COMPLETE: Final = "complete"
FIGURE_FIELDS: Final = (ENERGY_MWH, *SCOPE_FIELDS, TCO2E, *GAS_FIELDS, TCO2E_S1_GROSS, READINGS)

# -- completeness: extra fields of the site twin_ytd points (per site, carrier and year) --------
# Per data quality (measured, estimated, gap_filled): its tCO2e (scope 1 + 2 location), its
# MWh, its readings, and its share of the point's tCO2e (omitted when that is zero). The
# cluster's figures are the sums over its sites (the shares: of the sums). Names:
# ``quality_field(quality, figure)``, e.g. ``gap_filled_tco2e``, ``measured_share``.
QUALITY_FIGURES: Final = (TCO2E, ENERGY_MWH, READINGS)
QUALITY_SHARE: Final = "share"


def quality_field(quality: str, figure: str) -> str:
    """The twin_ytd field of one data quality's figure (or its ``QUALITY_SHARE``)."""
    return f"{quality}_{figure}"


# -- fields of meter_reading ------------------------------------------------------------------
# Tags: twin, cluster, site, meter, carrier. InfluxDB's write cost is per field value, not
# per point (measured: 12 fields ~30,000 points/s, 4 fields ~80,000, 1 field ~185,000 on one
# 2-core machine), so a reading is four fields: its value and quality (the meter's latest,
# the quality panels), its energy (the per-meter power panels) and one string READING_PACKED
# that holds what only the worker reads back (a restatement recomputing a window exactly).
VALUE: Final = "value"
QUALITY: Final = "quality"  # measured | estimated | gap_filled
READING_ENERGY: Final = "e"  # integer, nano-MWh: what the reading added to its windows
READING_PACKED: Final = "r"
# The reading's priced figures as nano-unit integers, in the order of a figure vector
# (energy, then the scopes of ``streams.meter_vectors.SCOPES``, then the gases).
READING_FIGURES: Final = (
    READING_ENERGY,
    "s1",
    "s2l",
    "s2m",
    "s3",
    "co2",
    "ch4",
    "n2o",
    "oth",
    "bio",
    "ccs",
)
# The Kafka record that brought it (so a replay can tell its own unstored effect from a
# duplicate), and its interval's start (epoch ms, -1 for an instant).
KAFKA_PARTITION: Final = "kp"
KAFKA_OFFSET: Final = "ko"
INTERVAL_START: Final = "st"
# READING_PACKED: these integers, space-separated, in this order. (Points stored before it
# carry READING_FIGURES, KAFKA_PARTITION, KAFKA_OFFSET, INTERVAL_START as fields of their
# own; the read-back takes either.)
READING_PACKED_LAYOUT: Final = (*READING_FIGURES[1:], KAFKA_PARTITION, KAFKA_OFFSET, INTERVAL_START)

# -- restatement: tags and fields --------------------------------------------------------------
HOUR: Final = "hour"
OLD_TCO2E: Final = "old_tco2e"
NEW_TCO2E: Final = "new_tco2e"
OLD_ENERGY_MWH: Final = "old_energy_mwh"
NEW_ENERGY_MWH: Final = "new_energy_mwh"
READINGS_ADDED: Final = "readings_added"
REASON: Final = "reason"
RESTATEMENT_FIELDS: Final = (
    OLD_TCO2E,
    NEW_TCO2E,
    OLD_ENERGY_MWH,
    NEW_ENERGY_MWH,
    READINGS_ADDED,
    REASON,
)

# -- factor_restatement: tags (besides twin, cluster, site, carrier, year) and fields ----------
FACTOR: Final = "factor"  # the factor id
OLD_VERSION: Final = "old_version"
NEW_VERSION: Final = "new_version"
PERIOD_FROM: Final = "period_from"  # epoch ms, inclusive
PERIOD_TO: Final = "period_to"  # epoch ms, exclusive (-1: open-ended)
TCO2E_CHANGED: Final = "tco2e_changed"  # new_tco2e - old_tco2e (scope 1 + 2 location)
# the change of each scope and gas figure: ``delta_field(name)``, e.g. delta_tco2e_s2_location
# (window_restatement also carries the headline's, ``delta_field(TCO2E)``)
DELTA_FIELDS_OF: Final = (*SCOPE_FIELDS, *GAS_FIELDS)


def delta_field(name: str) -> str:
    """The factor_restatement (and window_restatement) field of the change of one figure of
    ``DELTA_FIELDS_OF`` (or of the headline, ``TCO2E``)."""
    return f"delta_{name}"


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
# what the factor restatements changed of ytd_tco2e (included in it; 0: none): the previous
# edition's year to date is ytd_tco2e - restated_tco2e
RESTATED_TCO2E: Final = "restated_tco2e"

# -- the worker's own counters (streams/app.py), every 10 s per worker --------------------------
PIPELINE: Final = "pipeline"
APP: Final = "app"  # tag: the worker's Faust app id

# -- alerts (streams/alerting): one point per alert event, and the detectors' own figures -------
ALERT_STATE: Final = "alert_state"
ALERT_DETECTOR: Final = "alert_detector"
KIND: Final = "kind"  # tag of alert_state: the alert's kind
# fields of alert_state (besides VALUE)
OPEN: Final = "open"  # 1 while open, 0 once resolved
EVENT: Final = "event"  # "open" | "update" | "resolve"
ALERT_ID: Final = "alert_id"
SEVERITY: Final = "severity"  # the number of streams.alerting.model.SEVERITY_LEVEL
CATEGORY: Final = "category"
THRESHOLD: Final = "threshold"
