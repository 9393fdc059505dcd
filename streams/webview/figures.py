"""The figures the live web view shows, computed from the worker's own state.

Pure functions of plain data (site states, the cluster stage's windows, the target plan),
so the page's numbers are the twin's numbers by construction and can be tested without a
server: the browser test then only has to show that the page prints what these return.
Every figure is in tCO2e as the twin computes it (scope 1 + scope 2 location-based for
windows; the plan's scopes for progress against the pathway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams import influx_schema as schema
from streams.meter_vectors import NANO, QUALITIES, MeterVectors
from streams.progress_series import Plan, progress_fields
from streams.transfers import attributed, cluster_view
from streams.windows import (
    NFIG,
    QUALITY_NAMES,
    SiteState,
    by_quality,
    figures,
    sum_vecs,
    tco2e_shares,
)
from twin.drift import hours_in_year as year_hours

HOUR_MS = 3_600_000
#: The per-gas keys of ``streams.windows.figures`` (scope 1 by gas and its memo lines).
_GAS_KEYS = frozenset({*schema.GAS_FIELDS, schema.TCO2E_S1_GROSS})
#: A meter whose newest reading is older than this (by the cluster's event-time clock) is not
#: current: the completeness figure counts it as missing.
CURRENT_MS = 15 * 60_000
#: Meters per page of the site table: a site of 5,000 meters is paged, never sent whole.
PAGE_SIZE = 50

# carrier -> site -> nano-unit vector, as the cluster stage holds a window or a year
Held = Mapping[str, Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class ClusterFacts:
    """What one cluster's figures are computed from, read from the worker's state at once."""

    cluster: str
    clock_ms: int  # the cluster's event-time clock (streams.eventtime); -1: no reading yet
    sites: Sequence[str]  # every site of the catalog, in catalog order
    states: Mapping[str, SiteState]  # the sites that have spoken
    hours: Mapping[int, Held]  # 1-hour windows the cluster stage holds, by start
    ytd: Mapping[int, Held]  # year -> year to date
    plan: Plan | None = None
    alerts: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    # start of the cluster's first stored hour of the clock's year (None: not known)
    data_since_ms: int | None = None


def _all(held: Held) -> list[int]:
    """The cluster's figure: transfers count only their energy (``streams.transfers``)."""
    return sum_vecs(v for per_site in cluster_view(held).values() for v in per_site.values())


def _own(views: Held, site: str) -> list[int]:
    """A site's figure in its own view (``views``: ``streams.transfers.attributed``):
    transfers credit the sender and charge the receiver, as ``clustertwin twin show``."""
    return sum_vecs(per_site[site] for per_site in views.values() if site in per_site)


def year_of_ms(ms: int) -> int:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).year


def last_complete_hour(facts: ClusterFacts) -> int | None:
    """Start of the newest 1-hour window that has ended by the cluster's clock: the "now"
    figure is an hour that is over, not the few minutes of the hour under way."""
    ended = [s for s in facts.hours if s + HOUR_MS <= facts.clock_ms]
    return max(ended) if ended else None


def now_figure(facts: ClusterFacts) -> dict[str, Any]:
    """Emissions of the last complete hour beside the pathway's hourly rate for its year."""
    start = last_complete_hour(facts)
    out: dict[str, Any] = {"hour_start": start, "tco2e_per_h": None, "pathway_tco2e_per_h": None}
    if start is None:
        return out
    vec = _all(facts.hours[start])
    out.update(figures(vec))
    out["tco2e_per_h"] = out["tco2e"]
    if facts.plan is not None:
        year = year_of_ms(start)
        out["pathway_tco2e_per_h"] = facts.plan.pathway.at(year) / year_hours(year)
        out["vs_pathway_pct"] = (
            100.0 * out["tco2e_per_h"] / out["pathway_tco2e_per_h"]
            if out["pathway_tco2e_per_h"] > 0
            else None
        )
    return out


#: Readings must cover this share of the year so far for the year to date to be set
#: against the pro-rata budget: a twin that started in November has not emitted "2.6 % of
#: its budget", it has no figure for January to October.
COMPARABLE_PCT = 99.0


def year_start_ms(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000)


def ytd_figure(facts: ClusterFacts) -> dict[str, Any]:
    """Year to date against the pro-rata budget, the projected year end and its gap, with
    the same rule the progress series in InfluxDB uses (``streams.progress_series``), and how much
    of the year so far the readings cover: below ``COMPARABLE_PCT`` the comparison with the
    budget (and the projection at the year-to-date pace) is flagged as not comparable."""
    if facts.clock_ms < 0:
        return {"year": None}
    year = year_of_ms(facts.clock_ms)
    held = facts.ytd.get(year, {})
    vec = _all(held)
    nano = {"s1": vec[1], "s2_location": vec[2], "s2_market": vec[3]}
    out = progress_fields(nano, facts.plan, facts.clock_ms)
    out["year"] = year
    out["scopes"] = facts.plan.scopes if facts.plan is not None else "1"
    out["figures"] = figures(vec)
    start = year_start_ms(year)
    covered = None
    if facts.data_since_ms is not None and facts.clock_ms > start:
        since = max(facts.data_since_ms, start)
        covered = 100.0 * (facts.clock_ms - since) / (facts.clock_ms - start)
    out["data_since_ms"] = facts.data_since_ms
    out["year_covered_pct"] = covered
    out["comparable"] = covered is not None and covered >= COMPARABLE_PCT
    return out


def completeness(facts: ClusterFacts, catalog: MeterVectors) -> dict[str, Any]:
    """How many of the cluster's meters have a current reading, and the quality of the
    newest reading of each (measured, estimated, gap-filled)."""
    total = current = reporting = 0
    quality = dict.fromkeys(QUALITIES, 0)
    for site in facts.sites:
        meters = catalog.sites.get((facts.cluster, site), [])
        total += len(meters)
        state = facts.states.get(site)
        if state is None:
            continue
        for ts, _value, code in state.last.values():
            reporting += 1
            q = QUALITY_NAMES[code]
            quality[q] = quality.get(q, 0) + 1
            if facts.clock_ms - ts <= CURRENT_MS:
                current += 1
    return {
        "meters": total,
        "reporting": reporting,
        "current": current,
        "current_pct": 100.0 * current / total if total else None,
        "current_within_s": CURRENT_MS // 1000,
        "quality": quality,
    }


def _quality_vecs(state: SiteState | None, year: int | None) -> dict[str, list[int]]:
    """A site's year to date by data quality (``streams.windows.by_quality``: the tonnes of
    its own meters, the rule of the twin_ytd completeness fields)."""
    if state is None or year is None:
        return {q: [0] * (NFIG + 1) for q in QUALITY_NAMES}
    return by_quality(state.qytd, year)


def quality_ytd(vecs: Mapping[str, Sequence[int]]) -> dict[str, dict[str, Any]]:
    """Per data quality: its tCO2e (scope 1 + 2 location) and its share of them all
    (``streams.windows.tco2e_shares``; None when there are no tonnes)."""
    shares = tco2e_shares(vecs)
    return {
        q: {"tco2e": (int(v[1]) + int(v[2])) / NANO, "share": shares[q]} for q, v in vecs.items()
    }


def site_qualities(facts: ClusterFacts) -> dict[str, dict[str, list[int]]]:
    """Each site's year to date by quality (nano-units), computed once per update."""
    year = year_of_ms(facts.clock_ms) if facts.clock_ms >= 0 else None
    return {site: _quality_vecs(facts.states.get(site), year) for site in facts.sites}


def cluster_quality(per_site: Mapping[str, Mapping[str, Sequence[int]]]) -> dict[str, Any]:
    """The cluster's year to date by quality: its sites' figures summed, then shared (the
    share of the sums, as the twin_ytd fields say; not a mean of the sites' shares)."""
    total = {q: sum_vecs(vecs[q] for vecs in per_site.values()) for q in QUALITY_NAMES}
    return quality_ytd(total)


def by_site(
    facts: ClusterFacts,
    catalog: MeterVectors,
    qualities: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per site; ``qualities``: ``site_qualities(facts)``, when already computed."""
    qualities = site_qualities(facts) if qualities is None else qualities
    year = year_of_ms(facts.clock_ms) if facts.clock_ms >= 0 else None
    held = facts.ytd.get(year, {}) if year is not None else {}
    hour = last_complete_hour(facts)
    ytd_views = attributed(held)
    hour_views = attributed(facts.hours[hour]) if hour is not None else None
    rows = []
    for site in facts.sites:
        state = facts.states.get(site)
        ytd = figures(_own(ytd_views, site))
        now = figures(_own(hour_views, site)) if hour_views is not None else None
        rows.append(
            {
                "site": site,
                "meters": len(catalog.sites.get((facts.cluster, site), [])),
                "reporting": len(state.last) if state else 0,
                "watermark": state.wm if state else None,
                "behind_s": (facts.clock_ms - state.wm) / 1000 if state and state.wm >= 0 else None,
                "ytd_tco2e": ytd["tco2e"],
                # scope 1 by gas (t), the biogenic CO2 memo, CO2 captured, gross scope 1
                "ytd_by_gas": {k: v for k, v in ytd.items() if k in _GAS_KEYS},
                "ytd_quality": quality_ytd(qualities[site]),
                "now_tco2e_per_h": now["tco2e"] if now else None,
                "late": state.late if state else 0,
                "duplicates": state.duplicates if state else 0,
            }
        )
    return rows


def by_carrier(facts: ClusterFacts) -> list[dict[str, Any]]:
    if facts.clock_ms < 0:
        return []
    held = cluster_view(facts.ytd.get(year_of_ms(facts.clock_ms), {}))
    rows = []
    for carrier in sorted(held):
        f = figures(sum_vecs(held[carrier].values()))
        rows.append({"carrier": carrier, "ytd_tco2e": f["tco2e"], "energy_mwh": f["energy_mwh"]})
    return rows


def cluster_summary(facts: ClusterFacts, catalog: MeterVectors, twin: str) -> dict[str, Any]:
    """Everything the cluster overview shows, in one JSON object (also what it streams)."""
    ytd = ytd_figure(facts)
    qualities = site_qualities(facts)
    return {
        "twin": twin,
        "cluster": facts.cluster,
        "clock_ms": facts.clock_ms,
        "now": now_figure(facts),
        "ytd": ytd,
        # the scopes only: gross scope 1 is a line of ``by_gas``, not a scope
        "by_scope": {k: v for k, v in ytd.get("figures", {}).items() if k in schema.SCOPE_FIELDS},
        "by_gas": {k: v for k, v in ytd.get("figures", {}).items() if k in _GAS_KEYS},
        "completeness": completeness(facts, catalog),
        "ytd_quality": cluster_quality(qualities),
        "by_site": by_site(facts, catalog, qualities),
        "by_carrier": by_carrier(facts),
        "alerts": list(facts.alerts),
    }


def network_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One cluster beside the others: the few figures that compare across clusters."""
    ytd, now, comp = summary["ytd"], summary["now"], summary["completeness"]
    return {
        "cluster": summary["cluster"],
        "clock_ms": summary["clock_ms"],
        "ytd_tco2e": ytd.get("ytd_tco2e"),
        "budget_to_date_tco2e": ytd.get("budget_to_date_tco2e"),
        "ytd_vs_budget_pct": ytd.get("ytd_vs_budget_pct"),
        "projected_gap_tco2e": ytd.get("projected_gap_tco2e"),
        "on_track": ytd.get("on_track"),
        "comparable": ytd.get("comparable"),
        "data_since_ms": ytd.get("data_since_ms"),
        "now_tco2e_per_h": now.get("tco2e_per_h"),
        "pathway_tco2e_per_h": now.get("pathway_tco2e_per_h"),
        "current_pct": comp["current_pct"],
        "sites": len(summary["by_site"]),
        "open_alerts": len(summary["alerts"]),
    }


def site_summary(
    cluster: str,
    site: str,
    state: SiteState | None,
    catalog: MeterVectors,
    clock_ms: int,
    page: int = 0,
    size: int = PAGE_SIZE,
    held: Held | None = None,
) -> dict[str, Any]:
    """A site's meters, one page of them: latest value, quality and how current each is.

    Its year to date is its own view: from the cluster stage's year (``held``), which has
    what other sites transferred to it, else from its own state alone."""
    ids = [catalog.specs[i].meter for i in catalog.sites.get((cluster, site), [])]
    ids.sort()
    pages = max(1, -(-len(ids) // size))
    page = min(max(page, 0), pages - 1)
    rows = []
    for meter in ids[page * size : (page + 1) * size]:
        spec = catalog.specs[catalog.index[meter]]
        last = state.last.get(meter) if state else None
        rows.append(
            {
                "meter": meter,
                "carrier": spec.carrier,
                "unit": next(iter(spec.units)),
                "ts": last[0] if last else None,
                "value": last[1] if last else None,
                "quality": QUALITY_NAMES[last[2]] if last else None,
                "age_s": (clock_ms - last[0]) / 1000 if last and clock_ms >= 0 else None,
                "current": bool(last and clock_ms - last[0] <= CURRENT_MS),
            }
        )
    ytd: dict[str, list[int]] = {}
    if held is not None:
        ytd = {c: list(s[site]) for c, s in attributed(held).items() if site in s}
    elif state is not None and clock_ms >= 0:
        year = year_of_ms(clock_ms)
        mine = [(key, vec) for (y, key), vec in state.ytd.items() if y == year]
        ytd = {
            c: s[site] for c, s in attributed({k: {site: v} for k, v in mine}).items() if site in s
        }
    return {
        "cluster": cluster,
        "site": site,
        "clock_ms": clock_ms,
        "watermark": state.wm if state else None,
        "readings_accepted": state.accepted if state else 0,
        "late": state.late if state else 0,
        "duplicates": state.duplicates if state else 0,
        "ytd": {
            "figures": figures(sum_vecs(ytd.values())),
            "by_carrier": _by(ytd),
            "quality": quality_ytd(
                _quality_vecs(state, year_of_ms(clock_ms) if clock_ms >= 0 else None)
            ),
        },
        "meters": {"total": len(ids), "page": page, "pages": pages, "size": size, "rows": rows},
    }


def _by(vecs: Mapping[str, Sequence[int]]) -> dict[str, dict[str, Any]]:
    return {k: figures(list(v)) for k, v in sorted(vecs.items())}


def explain_factors(catalog: MeterVectors, cluster: str, site: str | None) -> list[dict[str, Any]]:
    """Which factors make a figure: each distinct (scope, factor id, version) with its source
    and the meters that use it, for a cluster or one site."""
    by_ref: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i, spec in enumerate(catalog.specs):
        if spec.cluster != cluster or (site is not None and spec.site != site):
            continue
        for scope, fid, version, source, note, value in catalog.specs[i].factors:
            row = by_ref.setdefault(
                (scope, fid, version),
                {
                    "scope": scope,
                    "factor": fid,
                    "version": version,
                    "tco2e_per_unit": value,
                    "unit": "t" if spec.carrier == "process_co2" else "MWh",
                    "source": source,
                    "note": note,
                    "meters": [],
                },
            )
            row["meters"].append(spec.meter)
    return [by_ref[k] for k in sorted(by_ref)]


def quality_shares(counts: Mapping[str, int]) -> dict[str, Any]:
    """Counts of readings by quality, and each as a percentage of all of them."""
    total = sum(counts.values())
    return {
        "readings": total,
        "counts": {q: int(counts.get(q, 0)) for q in sorted({*QUALITIES, *counts})},
        "pct": {
            q: (100.0 * counts.get(q, 0) / total if total else None)
            for q in sorted({*QUALITIES, *counts})
        },
    }


__all__ = [
    "CURRENT_MS",
    "PAGE_SIZE",
    "ClusterFacts",
    "cluster_summary",
    "explain_factors",
    "network_row",
    "quality_shares",
    "site_summary",
]
