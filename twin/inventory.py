"""The annual inventory an accountant or verifier signs: lines, factors, quality, uncertainty.

Built from the twin's stored year-to-date figures (one row per site, carrier and transfer
side, and the cluster's own rows) and the cluster model, which says where each figure comes
from (the factor of every meter, with id, version and source). Rules:

* **Lines** are a site's figures per carrier; a transfer between sites is two lines, the
  sender's (its energy, and for fuel that moves the credit) and the receiver's (the tonnes it
  is attributed). Each line carries the factors of the meters that make it.
* **Scope 1** is shown per gas (t of CO2, CH4, N2O, and CO2e a factor gives only as CO2e),
  gross and net of the CO2 sent to capture/storage, which is its own line of figures.
  **Biogenic CO2** is a memo item, outside the scopes (GHG Protocol Corporate Standard ch. 9;
  ESRS E1-6 AR 43). Scope 2 is location- and market-based; scope 3 is the upstream of fuels,
  power and hydrogen bought (category 3).
* **Transfers eliminated**: the sum of the site totals minus the cluster's own total, per
  figure. The cluster's total is what the worker's cluster stage holds, not re-added here,
  so a verifier sees both and the difference.
* **Uncertainty** (``twin.uncertainty``, IPCC 2006 Vol. 1 Ch. 3 Approach 1): a line's scope 1
  combines its gases' tonnes with the largest uncertainty its factors declare for each gas,
  times its meters' activity uncertainty (the largest declared); lines sum in quadrature
  into site and cluster totals. Anything undeclared leaves the total's uncertainty unknown.
* **Data quality**: the share of each line's energy that was measured, estimated or gap
  filled (by the meter's declared method, ``twin.gapfill``), and the gap-filled MWh, from the
  worker's completeness figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from twin.emissions import EmissionsCalculator
from twin.model import Cluster
from twin.uncertainty import Uncertain, product, total

__all__ = [
    "COLUMNS",
    "FactorRef",
    "Figures",
    "Inventory",
    "Line",
    "Restatement",
    "build_inventory",
]


@dataclass(frozen=True)
class Figures:
    """A line's figures for the year, in the units the names say."""

    energy_mwh: float = 0.0
    scope1_tco2e: float = 0.0  # net of captured CO2
    scope1_gross_tco2e: float = 0.0
    scope2_location_tco2e: float = 0.0
    scope2_market_tco2e: float = 0.0
    scope3_upstream_tco2e: float = 0.0
    co2_t: float = 0.0
    ch4_t: float = 0.0
    n2o_t: float = 0.0
    co2e_other_t: float = 0.0
    co2_biogenic_t: float = 0.0
    co2_captured_t: float = 0.0
    readings: float = 0.0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __sub__(self, other: Figures) -> Figures:
        return Figures(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    @property
    def total_location_tco2e(self) -> float:
        """ESRS E1-6 §44(d): scope 1 + 2 (location) + 3."""
        return self.scope1_tco2e + self.scope2_location_tco2e + self.scope3_upstream_tco2e

    @property
    def total_market_tco2e(self) -> float:
        return self.scope1_tco2e + self.scope2_market_tco2e + self.scope3_upstream_tco2e


def sum_figures(items: Iterable[Figures]) -> Figures:
    out = Figures()
    for f in items:
        out = out + f
    return out


@dataclass(frozen=True, order=True)
class FactorRef:
    scope: str
    factor_id: str
    version: str
    source: str


@dataclass(frozen=True)
class Restatement:
    """A stored restatement of the year: a closed hour that later readings changed."""

    site: str
    hour_ms: int
    old_tco2e: float
    new_tco2e: float
    reason: str


@dataclass(frozen=True)
class Line:
    site: str
    carrier: str
    transfer: str  # "" or the transfer side ("<mode>><receiver>" / "<mode><<sender>")
    figures: Figures
    factors: tuple[FactorRef, ...] = ()
    # measured | estimated | gap_filled -> (MWh, readings) of the line (None: not known)
    quality: Mapping[str, tuple[float, float]] | None = None
    scope1_uncertainty: Uncertain | None = None


@dataclass(frozen=True)
class Inventory:
    cluster: str
    year: int
    gwp: str
    lines: tuple[Line, ...]
    site_totals: Mapping[str, Figures]
    site_scope1_uncertainty: Mapping[str, Uncertain]
    cluster_total: Figures
    cluster_scope1_uncertainty: Uncertain
    eliminated: Figures  # sum of the sites minus the cluster: transfers counted once
    restatements: tuple[Restatement, ...] = field(default=())


# (column, what it is: GHG Protocol / ESRS E1-6 name) in CSV order; README lists them too
COLUMNS: tuple[tuple[str, str], ...] = (
    ("cluster", "reporting boundary (industrial cluster)"),
    ("site", "site (facility); '_cluster' for the cluster's own totals"),
    ("line", "carrier of the line, 'total' or 'transfers eliminated'"),
    ("transfer", "transfer side, if the line is one"),
    ("energy_mwh", "energy or fuel quantity, MWh (net calorific value)"),
    ("scope1_co2_t", "GHG Protocol: scope 1 by gas, CO2 (fossil), t"),
    ("scope1_ch4_t", "GHG Protocol: scope 1 by gas, CH4, t"),
    ("scope1_n2o_t", "GHG Protocol: scope 1 by gas, N2O, t"),
    ("scope1_other_tco2e", "scope 1 a factor gives only as CO2e, t CO2e"),
    ("scope1_gross_tco2e", "ESRS E1-6 §44(a): gross Scope 1 GHG emissions, t CO2e"),
    ("co2_captured_t", "CO2 sent to capture/storage (not netted in gross scope 1), t"),
    ("scope1_net_tco2e", "scope 1 net of captured CO2, t CO2e"),
    ("scope2_location_tco2e", "ESRS E1-6 §44(b): gross location-based Scope 2, t CO2e"),
    ("scope2_market_tco2e", "ESRS E1-6 §44(b): gross market-based Scope 2, t CO2e"),
    ("scope3_upstream_tco2e", "ESRS E1-6 §44(c): Scope 3 cat. 3 (fuel- and energy-related)"),
    ("total_location_tco2e", "ESRS E1-6 §44(d): total GHG emissions, location-based"),
    ("total_market_tco2e", "ESRS E1-6 §44(d): total GHG emissions, market-based"),
    ("biogenic_co2_t", "memo: biogenic CO2, outside the scopes (ESRS E1-6 AR 43), t"),
    ("readings", "readings counted"),
    ("measured_share", "share of the energy measured (of the readings, for lines of no energy)"),
    ("estimated_share", "share of the energy estimated (idem)"),
    ("gap_filled_share", "share of the energy gap filled (idem)"),
    ("gap_filled_mwh", "energy gap filled by the meters' declared methods, MWh"),
    ("scope1_uncertainty_pct", "95 % half-width of scope 1, % (IPCC Approach 1)"),
    ("uncertainty_approximate", "true: outside Approach 1's validity (see README)"),
    ("factors", "factors used: scope:id@version"),
    ("factor_sources", "their sources"),
)


@dataclass(frozen=True)
class _MeterFactors:
    meter: str
    site: str  # where it is metered
    carrier: str
    to_site: str  # the receiver of a transfer, else ""
    refs: frozenset[FactorRef]
    activity_pct: float | None


def _meter_factors(calc: EmissionsCalculator, cluster: Cluster) -> list[_MeterFactors]:
    out = []
    for site in cluster.sites:
        for asset in site.assets:
            for m in asset.meters:
                refs = frozenset(
                    FactorRef(p.scope, p.factor_id, p.factor_version, p.factor_source)
                    for p in calc.provenance(m.id)
                )
                out.append(
                    _MeterFactors(
                        m.id, site.id, m.carrier.value, m.to_site or "", refs, m.uncertainty_pct
                    )
                )
    return out


def _meters_of_line(
    meters: Sequence[_MeterFactors], site: str, carrier: str, transfer: str
) -> list[_MeterFactors]:
    """The meters a line's figures come from: a site's own meters of the carrier, or the
    transfer meter of a sender's ("<mode>><receiver>") or receiver's ("<mode><<sender>") side."""
    _mode, sent, receiver = transfer.partition(">")
    if sent:
        return [m for m in meters if (m.site, m.carrier, m.to_site) == (site, carrier, receiver)]
    _mode, got, sender = transfer.partition("<")
    if got:
        return [m for m in meters if (m.site, m.carrier, m.to_site) == (sender, carrier, site)]
    return [m for m in meters if (m.site, m.carrier, m.to_site) == (site, carrier, "")]


def _scope1_uncertainty(
    figures: Figures,
    refs: Iterable[FactorRef],
    calc: EmissionsCalculator,
    activity_pct: float | None,
) -> Uncertain:
    gwp = calc.gwp_set
    pct: dict[str, float | None] = {}
    for ref in refs:
        if ref.scope != "scope1" or ref.factor_id not in calc.library:
            continue
        f = calc.library.get(ref.factor_id)
        for gas in f.gases:
            declared = f.uncertainty_pct.get(gas)
            known = pct.get(gas, 0.0)
            pct[gas] = None if declared is None or known is None else max(known, declared)
    gases = (
        ("CO2", figures.co2_t, figures.co2_t),
        ("CH4", figures.ch4_t, gwp.co2e({"CH4": figures.ch4_t}, False)),
        ("N2O", figures.n2o_t, gwp.co2e({"N2O": figures.n2o_t}, False)),
    )
    terms = [Uncertain(co2e, pct.get(gas) if t else 0.0) for gas, t, co2e in gases]
    terms.append(Uncertain(figures.co2e_other_t, None if figures.co2e_other_t else 0.0))
    by_gas = total(terms)
    return product(by_gas, Uncertain(1.0, activity_pct if by_gas.value else 0.0))


def build_inventory(
    cluster: Cluster,
    year: int,
    site_rows: Sequence[tuple[str, str, str, Figures]],
    cluster_rows: Sequence[tuple[str, Figures]],
    quality: Mapping[tuple[str, str, str], Mapping[str, tuple[float, float]]] | None = None,
    restatements: Sequence[Restatement] = (),
    gwp: str = "AR6",
) -> Inventory:
    """The inventory of ``cluster`` for ``year`` from its stored rows: ``site_rows`` as
    (site, carrier, transfer side, figures), ``cluster_rows`` as (carrier, figures),
    ``quality`` as (site, carrier, transfer side) -> {quality: (MWh, readings)}."""
    calc = EmissionsCalculator(cluster, gwp=gwp, year=year)
    meters = _meter_factors(calc, cluster)
    lines = []
    for site, carrier, transfer, figs in sorted(site_rows, key=lambda r: r[:3]):
        mine = _meters_of_line(meters, site, carrier, transfer)
        refs = sorted(set().union(*(m.refs for m in mine)) if mine else set())
        pcts = [m.activity_pct for m in mine]
        activity_pct = None if not pcts or None in pcts else max(p for p in pcts if p is not None)
        lines.append(
            Line(
                site,
                carrier,
                transfer,
                figs,
                tuple(refs),
                (quality or {}).get((site, carrier, transfer)),
                _scope1_uncertainty(figs, refs, calc, activity_pct),
            )
        )
    site_totals: dict[str, Figures] = {}
    site_unc: dict[str, Uncertain] = {}
    for site in sorted({ln.site for ln in lines}):
        of_site = [ln for ln in lines if ln.site == site]
        site_totals[site] = sum_figures(ln.figures for ln in of_site)
        site_unc[site] = total(ln.scope1_uncertainty for ln in of_site if ln.scope1_uncertainty)
    cluster_total = sum_figures(f for _, f in cluster_rows)
    return Inventory(
        cluster=cluster.id,
        year=year,
        gwp=gwp,
        lines=tuple(lines),
        site_totals=site_totals,
        site_scope1_uncertainty=site_unc,
        cluster_total=cluster_total,
        cluster_scope1_uncertainty=total(
            ln.scope1_uncertainty for ln in lines if ln.scope1_uncertainty and not ln.transfer
        ),
        eliminated=sum_figures(site_totals.values()) - cluster_total,
        restatements=tuple(restatements),
    )


def _row(
    inv: Inventory,
    site: str,
    line: str,
    transfer: str,
    f: Figures,
    quality: Mapping[str, tuple[float, float]] | None = None,
    unc: Uncertain | None = None,
    refs: Sequence[FactorRef] = (),
) -> dict[str, object]:
    q = quality or {}
    # shares of the line's energy; of its readings where it carries none (process CO2)
    basis = 0 if sum(m for m, _ in q.values()) else 1
    whole = sum(v[basis] for v in q.values())

    def share(name: str) -> float | None:
        return q.get(name, (0.0, 0.0))[basis] / whole if whole else None

    return {
        "cluster": inv.cluster,
        "site": site,
        "line": line,
        "transfer": transfer,
        "energy_mwh": f.energy_mwh,
        "scope1_co2_t": f.co2_t,
        "scope1_ch4_t": f.ch4_t,
        "scope1_n2o_t": f.n2o_t,
        "scope1_other_tco2e": f.co2e_other_t,
        "scope1_gross_tco2e": f.scope1_gross_tco2e,
        "co2_captured_t": f.co2_captured_t,
        "scope1_net_tco2e": f.scope1_tco2e,
        "scope2_location_tco2e": f.scope2_location_tco2e,
        "scope2_market_tco2e": f.scope2_market_tco2e,
        "scope3_upstream_tco2e": f.scope3_upstream_tco2e,
        "total_location_tco2e": f.total_location_tco2e,
        "total_market_tco2e": f.total_market_tco2e,
        "biogenic_co2_t": f.co2_biogenic_t,
        "readings": int(f.readings),
        "measured_share": share("measured"),
        "estimated_share": share("estimated"),
        "gap_filled_share": share("gap_filled"),
        "gap_filled_mwh": q["gap_filled"][0] if "gap_filled" in q else None,
        "scope1_uncertainty_pct": None if unc is None or unc.pct is None else round(unc.pct, 4),
        "uncertainty_approximate": None if unc is None else unc.approximate,
        "factors": ";".join(f"{r.scope}:{r.factor_id}@{r.version}" for r in refs),
        "factor_sources": ";".join(sorted({r.source for r in refs})),
    }


def rows(inv: Inventory) -> list[dict[str, object]]:
    """The inventory as rows of COLUMNS: each line, each site's total, the eliminated
    transfers and the cluster's total."""
    out = []
    for site, total_figs in inv.site_totals.items():
        for ln in (x for x in inv.lines if x.site == site):
            out.append(
                _row(
                    inv,
                    site,
                    ln.carrier,
                    ln.transfer,
                    ln.figures,
                    ln.quality,
                    ln.scope1_uncertainty,
                    ln.factors,
                )
            )
        out.append(_row(inv, site, "total", "", total_figs, unc=inv.site_scope1_uncertainty[site]))
    out.append(_row(inv, "_cluster", "transfers eliminated", "", inv.eliminated))
    out.append(
        _row(inv, "_cluster", "total", "", inv.cluster_total, unc=inv.cluster_scope1_uncertainty)
    )
    return out
