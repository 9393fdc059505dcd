"""Progress against targets, written as its own InfluxDB series per cluster and site.

Grafana should not have to re-derive a pathway from YAML: every ``progress_every_s`` the
worker writes, for each site and cluster that has a target plan in the twin, the year-to-date
emissions next to the pathway's pro-rata budget for the same point of the year, the pathway's
value for the whole year and a projected year end at the current year-to-date pace.

The year to date is the current edition: the worker's own (which a factor revision does not
touch) plus the revisions' changes (``changes``), so what the worker writes after a
``clustertwin restate`` carries the restatement instead of undoing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from streams import influx_schema as schema
from streams.meter_vectors import NANO, MeterVectors
from streams.sink import fields_line
from streams.transfers import own_view
from streams.windows import SiteState


class PathwayLike(Protocol):
    def at(self, year: float) -> float: ...


# What progress reads of the two stages, and nothing more: progress sits below the stages
# (the live view and the twin link use ``Plan``), so it names no stage module.
class ReadableTable(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def all_keys(self) -> Iterable[bytes]: ...


class SiteTables(Protocol):
    """The site stage (``streams.site_stage.SiteStage``), as far as its table."""

    @property
    def table(self) -> ReadableTable: ...

    @property
    def clock_inputs(self) -> Mapping[str, tuple[str, int, int]]: ...

    def take_changed(self) -> list[SiteState]: ...


class ClusterTwins(Protocol):
    """The cluster stage (``streams.cluster_stage.ClusterStage``), as far as its twin."""

    def twin_json(self, cluster: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Plan:
    """What progress needs from a twin target plan: the pathway and which scopes it counts."""

    pathway: PathwayLike
    scopes: str = "1"  # "1" or "1+2"


def year_fraction(ms: int) -> tuple[int, float]:
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    start = datetime(t.year, 1, 1, tzinfo=UTC)
    end = datetime(t.year + 1, 1, 1, tzinfo=UTC)
    return t.year, (t - start).total_seconds() / (end - start).total_seconds()


def progress_fields(
    ytd_nano: Mapping[str, int],
    plan: Plan | None,
    ms: int,
    change: tuple[int, int, int] = (0, 0, 0),
) -> dict[str, Any]:
    """The progress of a year to date (the worker's: the previous edition) with the factor
    restatements' ``change`` of its (s1, s2 location, s2 market) folded in: the current
    edition, which the worker's own state cannot know (``streams.editions``)."""
    year, frac = year_fraction(ms)
    counts_s2 = plan is not None and plan.scopes == "1+2"
    s1 = (ytd_nano.get("s1", 0) + change[0]) / NANO
    s2 = (ytd_nano.get("s2_location", 0) + change[1]) / NANO
    ytd = s1 + s2 if counts_s2 else s1
    f_s1, f_s2_location, f_s2_market = schema.YTD_SCOPE_FIELDS
    out: dict[str, Any] = {
        schema.YTD_TCO2E: ytd,
        f_s1: s1,
        f_s2_location: s2,
        f_s2_market: (ytd_nano.get("s2_market", 0) + change[2]) / NANO,
        schema.YEAR_FRACTION: frac,
        schema.RESTATED_TCO2E: (change[0] + (change[1] if counts_s2 else 0)) / NANO,
    }
    if plan is not None:
        pathway_year = plan.pathway.at(year)
        budget = pathway_year * frac
        projected = ytd / frac if frac > 0 else None
        out.update(
            {
                schema.PATHWAY_TCO2E_YEAR: pathway_year,
                schema.BUDGET_TO_DATE_TCO2E: budget,
                schema.YTD_VS_BUDGET_PCT: (100.0 * ytd / budget) if budget > 0 else None,
                schema.PROJECTED_YEAR_END_TCO2E: projected,
                schema.PROJECTED_GAP_TCO2E: (
                    (projected - pathway_year) if projected is not None else None
                ),
                schema.ON_TRACK: (ytd <= budget),
            }
        )
    return out


@dataclass
class ProgressWriter:
    catalog: MeterVectors
    twin: str
    plans: dict[tuple[str, str], Plan] = field(default_factory=dict)  # (cluster, site or "")
    # the factor restatements' changes: (cluster, site or "", year) -> (s1, s2 location,
    # s2 market) nano (``streams.editions.YtdChanges``, which the worker refreshes)
    changes: Mapping[tuple[str, str, int], tuple[int, int, int]] = field(default_factory=dict)
    # the changes the site points were last all written with (None: not yet written)
    _written_with: dict[tuple[str, str, int], tuple[int, int, int]] | None = field(
        default=None, repr=False
    )

    def site_lines(self, states: list[SiteState]) -> list[str]:
        lines = []
        for state in states:
            if state.wm < 0:
                continue
            year = datetime.fromtimestamp(state.wm / 1000, tz=UTC).year
            ytd = {"s1": 0, "s2_location": 0, "s2_market": 0}
            mine = [(key, vec) for (y, key), vec in state.ytd.items() if y == year]
            # its own view (a transfer: the sender's side; what it received is not here)
            for vec in own_view(state.site, mine):
                ytd["s1"] += vec[1]
                ytd["s2_location"] += vec[2]
                ytd["s2_market"] += vec[3]
            ts = state.wm - state.wm % 60_000
            plan = self.plans.get((state.cluster, state.site))
            change = self.changes.get((state.cluster, state.site, year), (0, 0, 0))
            fields = progress_fields(ytd, plan, state.wm, change)
            lines.append(
                fields_line(
                    schema.PROGRESS,
                    {
                        schema.TWIN: self.twin,
                        schema.CLUSTER: state.cluster,
                        schema.SITE: state.site,
                        schema.LEVEL: "site",
                    },
                    fields,
                    ts,
                )
            )
        return lines

    def lines(self, site_stage: SiteTables, cluster_stage: ClusterTwins) -> list[str]:
        """The progress points of the sites stored since the last call, and of every
        cluster. Every site's only on the first call and when the restatements' changes
        moved: decoding and rewriting all 3,300 sites of 165,000 meters every 10 s was a
        twentieth of the points and a CPU burst under the worker's lock."""
        changed = site_stage.take_changed()
        if self._written_with is None or self._written_with != self.changes:
            self._written_with = dict(self.changes)
            states = []
            for key in list(site_stage.table.all_keys()):
                if key.startswith(b"\x00"):
                    continue
                raw = site_stage.table.get(key)
                if raw is not None:
                    states.append(SiteState.loads(raw))
        else:
            states = changed
        lines = self.site_lines(states)
        cluster_wm: dict[str, int] = {}
        for cl, wm, _seen in site_stage.clock_inputs.values():
            cluster_wm[cl] = max(cluster_wm.get(cl, -1), wm)
        for s in states:
            cluster_wm[s.cluster] = max(cluster_wm.get(s.cluster, -1), s.wm)
        for cluster in self.catalog.clusters:
            twin = cluster_stage.twin_json(cluster)
            wm = cluster_wm.get(cluster, -1)
            if wm < 0 or not twin["year_to_date"]:
                continue
            year = str(datetime.fromtimestamp(wm / 1000, tz=UTC).year)
            total = twin["year_to_date"].get(year, {}).get("total")
            if total is None:
                continue
            ytd = {
                "s1": round(total["tco2e_s1"] * NANO),
                "s2_location": round(total["tco2e_s2_location"] * NANO),
                "s2_market": round(total["tco2e_s2_market"] * NANO),
            }
            change = self.changes.get((cluster, "", int(year)), (0, 0, 0))
            fields = progress_fields(ytd, self.plans.get((cluster, "")), wm, change)
            lines.append(
                fields_line(
                    schema.PROGRESS,
                    {
                        schema.TWIN: self.twin,
                        schema.CLUSTER: cluster,
                        schema.SITE: schema.CLUSTER_SITE,
                        schema.LEVEL: "cluster",
                    },
                    fields,
                    wm - wm % 60_000,
                )
            )
        return lines
