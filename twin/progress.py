"""Where a cluster stands against its pathway, and whether its model matches its published
baseline.

Progress figures are only as good as the data behind them, so every result carries the data
completeness (meters expected vs meters reporting) it was computed from; figures are not
silently scaled up for missing meters.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from twin.emissions import EmissionsCalculator, Totals
from twin.model import Cluster
from twin.targets import TargetPlan

__all__ = [
    "Completeness",
    "Progress",
    "Reconciliation",
    "accounted",
    "progress",
    "reconcile",
    "year_fraction",
]


def accounted(cluster_totals: dict[str, float], scopes: str) -> float:
    """The figure a target is judged on: scope 1, or scope 1 + scope 2 (location-based)."""
    if scopes == "1":
        return cluster_totals["scope1"]
    if scopes == "1+2":
        return cluster_totals["scope1"] + cluster_totals["scope2_location"]
    raise ValueError(f"unknown scope set {scopes!r}")


@dataclass(frozen=True)
class Reconciliation:
    published_tco2e: float
    modelled_tco2e: float
    scopes: str
    year: int
    tolerance_pct: float

    @property
    def difference_pct(self) -> float:
        return 100.0 * (self.modelled_tco2e - self.published_tco2e) / self.published_tco2e

    @property
    def ok(self) -> bool:
        return abs(self.difference_pct) <= self.tolerance_pct


def reconcile(cluster: Cluster, calc: EmissionsCalculator | None = None) -> Reconciliation:
    """Model the reference year from the meters' annual quantities and compare with the
    published baseline."""
    if cluster.plan is None:
        raise ValueError(f"cluster {cluster.id!r} has no published baseline (plan)")
    calc = calc or EmissionsCalculator(cluster, year=cluster.plan.baseline.year)
    totals: Totals = calc.annual()
    base = cluster.plan.baseline
    return Reconciliation(
        published_tco2e=base.tco2e,
        modelled_tco2e=accounted(totals.cluster_dict(), base.scopes),
        scopes=base.scopes,
        year=base.year,
        tolerance_pct=cluster.reconciliation_tolerance_pct,
    )


@dataclass(frozen=True)
class Completeness:
    expected: int
    reporting: int

    @property
    def ratio(self) -> float:
        return 0.0 if self.expected == 0 else self.reporting / self.expected


@dataclass(frozen=True)
class Progress:
    """All figures in tCO2e (run-rates and pathway values in tCO2e per year)."""

    as_of: datetime
    year: int
    elapsed_fraction: float
    pathway_value: float
    run_rate_annualised: float
    run_rate_gap: float  # run-rate minus this year's pathway value; > 0 is off track
    ytd: float
    ytd_budget: float  # pathway value pro rata to the elapsed part of the year
    ytd_gap: float
    projected_year_end: float
    projected_gap: float
    cumulative: float | None
    cumulative_budget: float | None
    cumulative_used_pct: float | None
    completeness: Completeness

    @property
    def on_track(self) -> bool:
        return self.projected_gap <= 0


def year_fraction(as_of: datetime) -> float:
    """Elapsed share of ``as_of``'s calendar year (leap years have 366 days)."""
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    start = datetime(as_of.year, 1, 1, tzinfo=as_of.tzinfo)
    days = 366 if calendar.isleap(as_of.year) else 365
    return (as_of - start).total_seconds() / (days * 86400.0)


def progress(
    plan: TargetPlan,
    as_of: datetime,
    ytd_tco2e: float,
    window_tco2e: float,
    window_seconds: float,
    expected_meters: int,
    reporting_meters: int,
    cumulative_tco2e: float | None = None,
    cumulative_from_year: int | None = None,
) -> Progress:
    """Progress of one cluster or site at ``as_of``.

    ``window_tco2e`` over the last ``window_seconds`` gives the annualised run-rate.
    ``cumulative_tco2e`` (emitted since 1 January of ``cumulative_from_year``, default the
    year after the baseline) is compared with the pathway's carbon budget from that year to
    the last target year.
    """
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    pathway = plan.pathway()
    year = as_of.year
    frac = year_fraction(as_of)
    days = 366 if calendar.isleap(year) else 365
    pathway_value = pathway.at(year)
    run_rate = window_tco2e * (days * 86400.0 / window_seconds)
    ytd_budget = pathway_value * frac
    projected = ytd_tco2e + run_rate * (1.0 - frac)
    cum_budget = used = None
    if cumulative_tco2e is not None:
        first = cumulative_from_year or plan.baseline.year + 1
        last = max([t.year for t in plan.targets] + [p.year for p in plan.points] + [year])
        cum_budget = pathway.cumulative(first, last)
        used = 100.0 * cumulative_tco2e / cum_budget if cum_budget > 0 else float("inf")
    return Progress(
        as_of=as_of,
        year=year,
        elapsed_fraction=frac,
        pathway_value=pathway_value,
        run_rate_annualised=run_rate,
        run_rate_gap=run_rate - pathway_value,
        ytd=ytd_tco2e,
        ytd_budget=ytd_budget,
        ytd_gap=ytd_tco2e - ytd_budget,
        projected_year_end=projected,
        projected_gap=projected - pathway_value,
        cumulative=cumulative_tco2e,
        cumulative_budget=cum_budget,
        cumulative_used_pct=used,
        completeness=Completeness(expected_meters, reporting_meters),
    )
