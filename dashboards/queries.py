"""Every figure the dashboards show, as a named Flux query over the pipeline's schema.

Panels, alert rules, the README pictures and the tests all take their queries from here, so
"the figure on the panel" and "the figure the test checked" are the same text.

Conventions: the window measurements carry one point per window *and carrier*, so a total is
``group()`` + a per-window ``sum``; rates are tCO2e per hour, from the 1-minute windows
(``x 60``) averaged over Grafana's display interval; year-to-date and progress figures are the
latest point in the range. Only closed windows (``complete``) feed the "now" figures: an open
window holds part of a minute and would read low.
"""

from __future__ import annotations

import re

from dashboards.flux import Flux, Var, string
from dashboards.model import ClusterTargets, load_facts
from streams import influx_schema as s
from streams.transfers import ELIMINATED_TAG_PREFIX

TWIN = Var("twin")
CLUSTER = Var("cluster")
SITE = Var("site")


def _windows(measurement: str, res: str = "1m", cluster: bool = True) -> Flux:
    flux = Flux.bucket().measurement(measurement).where(s.TWIN, TWIN)
    if cluster:
        flux = flux.where(s.CLUSTER, CLUSTER)
    return flux.where(s.RES, res)


def _per_minute_total(flux: Flux, field: str) -> Flux:
    """Sum the carriers (or sites) of each 1-minute window: one series, one point per minute."""
    return flux.fields(field).group().aggregate_window(every="1m", fn="sum")


def _closed(flux: Flux, field: str) -> Flux:
    """Only windows past their grace period: pivot the value next to ``complete``."""
    return (
        flux.fields(field, s.COMPLETE)
        .pivot_fields()
        .filter_raw(f"r.{s.COMPLETE} == true")
        .map_raw(f'r with _value: float(v: r.{field}), _field: "{field}"')
        .drop(field, s.COMPLETE)
    )


# -- cluster overview -------------------------------------------------------------------------


def cluster_rate_series() -> Flux:
    """Cluster emissions rate (tCO2e/h, scope 1 + 2 location) over time."""
    return (
        _per_minute_total(_windows(s.CLUSTER_WINDOW), s.TCO2E)
        .scale(60.0)
        .aggregate_window(fn="mean")
        .label("Emissions (tCO2e/h)")
    )


def _last_closed_minute(flux: Flux) -> Flux:
    """The newest minute whose site windows are all closed: their total tCO2e, as t/h.

    A minute counts only when every site x carrier window of it is ``complete``: an open
    window holds part of a minute and would read low. Cluster windows stay open for hours
    (see :mod:`streams.influx_schema`), so the cluster's figure is the sum of its sites'.
    """
    return (
        flux.fields(s.TCO2E, s.COMPLETE)
        .pivot_fields()
        .group("_time")
        ._then(
            "reduce(identity: {total: 0.0, open: 0}, fn: (r, accumulator) => ({"
            f"total: accumulator.total + float(v: r.{s.TCO2E}), "
            f"open: accumulator.open + (if r.{s.COMPLETE} then 0 else 1)}}))"
        )
        .filter_raw("r.open == 0")
        .map_raw("r with _value: r.total * 60.0")
        .group()
        .sort("_time")
        .reduce("last")
        .label("Now")
    )


def cluster_rate_now() -> Flux:
    """Cluster emissions rate over the last closed minute (tCO2e/h): its site windows less
    the energy transfers a neighbour already counted (``streams.transfers``)."""
    eliminated = f"r.{s.TRANSFER} =~ /^{ELIMINATED_TAG_PREFIX}/"
    return _last_closed_minute(
        _windows(s.SITE_WINDOW).filter_raw(f"not exists r.{s.TRANSFER} or not ({eliminated})")
    )


def site_rate_now() -> Flux:
    """Site emissions rate over the last closed minute (tCO2e/h)."""
    return _last_closed_minute(_windows(s.SITE_WINDOW).where(s.SITE, SITE))


def _progress(level: str, site: bool = False) -> Flux:
    flux = Flux.bucket().measurement(s.PROGRESS).where(s.TWIN, TWIN).where(s.CLUSTER, CLUSTER)
    flux = flux.where(s.LEVEL, level)
    if site:
        flux = flux.where(s.SITE, SITE)
    return flux


def pathway_rate_series(level: str = "cluster", site: bool = False) -> Flux:
    """This year's pathway as an hourly rate (tCO2e/h) over time, to draw beside the actual."""
    return (
        _progress(level, site)
        .fields(s.PATHWAY_TCO2E_YEAR)
        .aggregate_window(fn="last")
        .scale(1.0 / 8760.0)
        .label("Pathway (tCO2e/h)")
    )


def pathway_rate_now(level: str = "cluster", site: bool = False) -> Flux:
    return (
        _progress(level, site)
        .fields(s.PATHWAY_TCO2E_YEAR)
        .reduce("last")
        .scale(1.0 / 8760.0)
        .label("Pathway")
    )


def progress_figure(field: str, label: str, level: str = "cluster", site: bool = False) -> Flux:
    """The latest value of one progress field (year to date, budget, projection, gap...)."""
    return _progress(level, site).fields(field).reduce("last").label(label)


def progress_series(field: str, label: str, level: str = "cluster", site: bool = False) -> Flux:
    return _progress(level, site).fields(field).aggregate_window(fn="last").label(label)


def by_site_total(field: str = s.TCO2E) -> Flux:
    """Total over the range per site (tCO2e or MWh), one bar per site."""
    return _windows(s.SITE_WINDOW).fields(field).group(s.SITE).reduce("sum").label_by(s.SITE)


def by_carrier_total(field: str = s.ENERGY_MWH, site: bool = False) -> Flux:
    measurement = s.SITE_WINDOW if site else s.CLUSTER_WINDOW
    flux = _windows(measurement)
    if site:
        flux = flux.where(s.SITE, SITE)
    return flux.fields(field).group(s.CARRIER).reduce("sum").label_by(s.CARRIER)


def by_carrier_series(field: str = s.TCO2E, site: bool = False) -> Flux:
    """Per carrier over time, rate per hour (tCO2e/h or MW) at the display interval."""
    measurement = s.SITE_WINDOW if site else s.CLUSTER_WINDOW
    flux = _windows(measurement)
    if site:
        flux = flux.where(s.SITE, SITE)
    return (
        flux.fields(field)
        .group(s.CARRIER)
        .scale(60.0)
        .aggregate_window(fn="mean")
        .label_by(s.CARRIER)
    )


def by_scope_total(site: bool = False) -> Flux:
    measurement = s.SITE_WINDOW if site else s.CLUSTER_WINDOW
    flux = _windows(measurement)
    if site:
        flux = flux.where(s.SITE, SITE)
    return flux.fields(*s.SCOPE_FIELDS).group("_field").reduce("sum").relabel_fields(s.SCOPE_LABELS)


def by_scope_series(site: bool = False) -> Flux:
    measurement = s.SITE_WINDOW if site else s.CLUSTER_WINDOW
    flux = _windows(measurement)
    if site:
        flux = flux.where(s.SITE, SITE)
    return (
        flux.fields(*s.SCOPE_FIELDS)
        .group("_field")
        .aggregate_window(every="1m", fn="sum")
        .scale(60.0)
        .aggregate_window(fn="mean")
        .relabel_fields(s.SCOPE_LABELS)
    )


def meters_reporting_pct(site: bool = False, fresh: str = "15m") -> Flux:
    """Share of the meters seen in the range whose newest reading is at most ``fresh`` old.

    Measured against the end of the range, not the wall clock, so a past range is judged by
    the data it has now: every stored reading counts, so readings that came late (a
    backfill, a gateway's buffer) make their range complete again.
    """
    flux = Flux.bucket().measurement(s.METER_READING).where(s.TWIN, TWIN).where(s.CLUSTER, CLUSTER)
    if site:
        flux = flux.where(s.SITE, SITE)
    return (
        flux.fields(s.VALUE)
        .group(s.METER)
        .reduce("last")
        .map_raw(
            "r with _value: if int(v: r._time) >= int(v: v.timeRangeStop) - int(v: "
            + fresh
            + ") then 100.0 else 0.0"
        )
        .group()
        .reduce("mean")
        .label("Meters reporting")
    )


def readings_series(site: bool = True) -> Flux:
    """Readings per minute accepted into the windows: a drop is a data problem, not a saving."""
    flux = _windows(s.SITE_WINDOW if site else s.CLUSTER_WINDOW)
    if site:
        flux = flux.where(s.SITE, SITE)
    return _per_minute_total(flux, s.READINGS).label("Readings per minute")


# -- site drill-down --------------------------------------------------------------------------


def site_rate_series() -> Flux:
    return (
        _per_minute_total(_windows(s.SITE_WINDOW).where(s.SITE, SITE), s.TCO2E)
        .scale(60.0)
        .aggregate_window(fn="mean")
        .label("Emissions (tCO2e/h)")
    )


def site_rate_moving_average(minutes: int = 60) -> Flux:
    """Drift statistic: the rate smoothed over ``minutes`` (a sustained shift stands out)."""
    return (
        _per_minute_total(_windows(s.SITE_WINDOW).where(s.SITE, SITE), s.TCO2E)
        .scale(60.0)
        .moving_average(minutes)
        .aggregate_window(fn="mean")
        .label(f"{minutes}-min average (tCO2e/h)")
    )


def site_rate_stat(fn: str, label: str) -> Flux:
    """Drift statistics over the range: mean / stddev / max of the per-minute rate."""
    return (
        _per_minute_total(_windows(s.SITE_WINDOW).where(s.SITE, SITE), s.TCO2E)
        .scale(60.0)
        .reduce(fn)
        .label(label)
    )


def _meter_readings(site: Var = SITE) -> Flux:
    """The stored readings of a site's meters (``meter_reading``: a meter's latest value is
    its newest reading; its power, its readings' energy)."""
    return (
        Flux.bucket()
        .measurement(s.METER_READING)
        .where(s.TWIN, TWIN)
        .where(s.CLUSTER, CLUSTER)
        .where(s.SITE, site)
    )


def _meter_power(flux: Flux) -> Flux:
    """MW per meter: its readings' energy (nano-MWh) summed per minute, x 60, averaged over
    Grafana's interval. (A reading of an interval counts in the minute it ends.)"""
    return (
        flux.fields(s.READING_ENERGY)
        .group(s.METER)
        .aggregate_window(every="1m", fn="sum")
        .scale(60.0 / 1e9)
        .aggregate_window(fn="mean")
        .label_by(s.METER)
    )


def meter_table() -> Flux:
    """Each meter of the site: latest value, its quality flag and when it was read."""
    return (
        _meter_readings()
        .fields(s.VALUE, s.QUALITY)
        .group(s.METER, "_field")
        .reduce("last")
        .pivot_fields()
        .group()
        .keep(s.METER, "_time", s.VALUE, s.QUALITY)
        .sort(s.METER)
    )


def restatements_table() -> Flux:
    """The restatements made in the range (``_time``) of the site's hours (``hour``, epoch
    ms): old and new tCO2e, readings added, why."""
    return (
        Flux.bucket()
        .measurement(s.RESTATEMENT)
        .where(s.TWIN, TWIN)
        .where(s.CLUSTER, CLUSTER)
        .where(s.SITE, SITE)
        .fields(s.OLD_TCO2E, s.NEW_TCO2E, s.READINGS_ADDED, s.REASON)
        .pivot_fields()
        .group()
        .keep("_time", s.HOUR, s.CARRIER, s.OLD_TCO2E, s.NEW_TCO2E, s.READINGS_ADDED, s.REASON)
        .sort("_time", desc=True)
    )


def meter_energy_series() -> Flux:
    """Energy per meter (MW: MWh per minute x 60)."""
    return _meter_power(_meter_readings())


def quality_counts() -> Flux:
    """How many meters are in each quality state (measured / estimated / gap-filled)."""
    return (
        _meter_readings()
        .fields(s.QUALITY)
        .group(s.METER)
        .reduce("last")
        .map_raw("r with state: string(v: r._value)")
        .group("state")
        .count()
        .label_by("state")
    )


# -- port -------------------------------------------------------------------------------------

SHORE_POWER = "shore_power"
PORT = Var("port")


def _port_meters(carrier: str | None = None, meter_pattern: str | None = None) -> Flux:
    flux = _meter_readings(PORT)
    if carrier is not None:
        flux = flux.where(s.CARRIER, carrier)
    if meter_pattern is not None:
        flux = flux.where_match(s.METER, meter_pattern)
    return flux


def shore_power_series() -> Flux:
    """Shore power delivered to ships at berth (MW), per berth meter."""
    return _meter_power(_port_meters(carrier=SHORE_POWER))


def vessels_on_shore_power() -> Flux:
    """Berths whose shore-power meter drew power in its newest reading: ships plugged in."""
    return (
        _port_meters(carrier=SHORE_POWER)
        .fields(s.READING_ENERGY)
        .group(s.METER)
        .reduce("last")
        .map_raw("r with _value: if r._value > 0.0 then 1.0 else 0.0")
        .group()
        .reduce("sum")
        .label("Vessels on shore power")
    )


def _any_of(ids: tuple[str, ...]) -> str:
    if not ids:
        return "^$"  # no such meter in any cluster model: the panel stays empty, not wrong
    return "^(" + "|".join(re.escape(i) for i in ids) + ")$"


def crane_series() -> Flux:
    """Cranes and cargo handling (MW): the meters of the port assets of kind cargo_handling."""
    return _meter_power(_port_meters(meter_pattern=_any_of(load_facts().crane_meters)))


def port_total(field: str, label: str) -> Flux:
    return (
        _windows(s.SITE_WINDOW).where(s.SITE, PORT).fields(field).group().reduce("sum").label(label)
    )


def port_by_carrier() -> Flux:
    return (
        _windows(s.SITE_WINDOW)
        .where(s.SITE, PORT)
        .fields(s.ENERGY_MWH)
        .group(s.CARRIER)
        .reduce("sum")
        .label_by(s.CARRIER)
    )


# -- network ----------------------------------------------------------------------------------


def network_rate_series() -> Flux:
    """Emissions rate of every cluster of the twin (tCO2e/h), one line per cluster."""
    return (
        _windows(s.CLUSTER_WINDOW, cluster=False)
        .fields(s.TCO2E)
        .group(s.CLUSTER)
        .aggregate_window(every="1m", fn="sum")
        .scale(60.0)
        .aggregate_window(fn="mean")
        .label_by(s.CLUSTER)
    )


def _network_progress(field: str) -> Flux:
    return (
        Flux.bucket()
        .measurement(s.PROGRESS)
        .where(s.TWIN, TWIN)
        .where(s.LEVEL, "cluster")
        .fields(field)
        .group(s.CLUSTER)
        .reduce("last")
    )


def network_progress(field: str) -> Flux:
    return _network_progress(field).label_by(s.CLUSTER)


def network_table() -> Flux:
    """One row per cluster: year to date, budget to date, pathway, projection, gap, on track."""
    return (
        Flux.bucket()
        .measurement(s.PROGRESS)
        .where(s.TWIN, TWIN)
        .where(s.LEVEL, "cluster")
        .fields(
            s.YTD_TCO2E,
            s.BUDGET_TO_DATE_TCO2E,
            s.PATHWAY_TCO2E_YEAR,
            s.PROJECTED_YEAR_END_TCO2E,
            s.PROJECTED_GAP_TCO2E,
            s.YTD_VS_BUDGET_PCT,
        )
        .group(s.CLUSTER, "_field")
        .reduce("last")
        .drop("_time")
        .pivot_fields(row_key=s.CLUSTER)
        .group()
        .sort(s.CLUSTER)
    )


# -- progress towards the milestone (2030) and net zero ---------------------------------------


def _by_cluster(targets: tuple[ClusterTargets, ...], value: str) -> str:
    """A Flux expression picking a per-cluster constant from the twin's target plans."""
    expr = "0.0"
    for t in reversed(targets):
        expr = f"if r.cluster == {string(t.cluster)} then {getattr(t, value)!r} else {expr}"
    return expr


def towards_targets(network: bool = False) -> list[Flux]:
    """How far the cluster's annualised run-rate has come from its baseline (%).

    ``(baseline - run-rate x 8760 h) / (baseline - target)``: 0 % = still emitting at the
    baseline, 100 % = at the 2030 pathway level (resp. net zero). The run-rate is the mean
    per-minute rate over the range, so it answers "if we kept running like this". Baselines
    and 2030 levels come from the twin's plans at build time (scope 1 + 2 location-based is
    compared with the plan's baseline as published).
    """
    targets = load_facts().targets
    flux = _windows(s.CLUSTER_WINDOW, cluster=not network).fields(s.TCO2E).group(s.CLUSTER)
    base = (
        flux.aggregate_window(every="1m", fn="sum")
        .reduce("mean")
        .map_raw(
            "r with _value: float(v: r._value) * 60.0 * 8760.0, baseline: "
            + _by_cluster(targets, "baseline_tco2e")
            + ", milestone: "
            + _by_cluster(targets, "milestone_tco2e")
        )
        .filter_raw("r.baseline > 0.0")
    )
    out = []
    for label, target in (("2030", "r.milestone"), ("net zero", "0.0")):
        flux = base.map_raw(
            f"r with _value: 100.0 * (r.baseline - r._value) / (r.baseline - {target})"
        )
        if network:
            out.append(
                flux.map_raw(f'r with _field: r.cluster + " · {label}"')
                .keep("_time", "_value", "_field")
                .group("_field")
            )
        else:
            out.append(flux.label(f"Towards {label}"))
    return out
