"""``clustertwin twin`` (inspect a cluster's twin) and ``clustertwin scenario`` (what-if).

Both work offline on the domain model: no Kafka or InfluxDB is needed to read a cluster, its
factors, its reconciliation to the published baseline, or a projected pathway.

A cluster, library or levers file that cannot be used is reported as the list of every
problem the domain found, one ``<file>: <path(id)>: <why>`` each, with exit code 2 (a file to
fix: running again will not help) and no traceback.
"""

from __future__ import annotations

import click

from twin.catalogue import load_catalogue
from twin.emissions import SCOPES, EmissionsCalculator
from twin.factors import FactorError
from twin.model import Cluster, ClusterFileError, available_clusters, load_cluster
from twin.progress import reconcile
from twin.scenarios import Scenario, ScenarioError, ScenarioResult, load_scenario, run_scenario

gwp_option = click.option(
    "--gwp",
    type=click.Choice(["AR4", "AR5", "AR6"]),
    default="AR6",
    show_default=True,
    help="Global warming potential set for CH4/N2O.",
)


class FileProblems(click.ClickException):
    """Every problem of a file the twin refused, as a list; exit code 2."""

    exit_code = 2

    def __init__(self, exc: Exception) -> None:
        self.lines = str(exc).splitlines() or [type(exc).__name__]
        n = len(self.lines)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''}:\n" + "\n".join(f"  - {li}" for li in self.lines)
        )


_REFUSED = (ClusterFileError, FactorError, ScenarioError)


def _load(cluster: str) -> Cluster:
    try:
        return load_cluster(cluster)
    except ClusterFileError as exc:
        raise FileProblems(exc) from None


def _project(c: Cluster, levers: str) -> tuple[Scenario, ScenarioResult]:
    """Load LEVERS and run them on ``c``; a lever the cluster cannot take names the file."""
    sc = load_scenario(levers)
    try:
        return sc, run_scenario(c, sc)
    except (ScenarioError, FactorError) as exc:
        raise ScenarioError("\n".join(f"{levers}: {li}" for li in str(exc).splitlines())) from None


def _calculator(c: Cluster, gwp: str) -> EmissionsCalculator:
    try:
        return EmissionsCalculator(c, gwp=gwp)
    except FactorError as exc:
        raise FileProblems(exc) from None


def _t(value: float) -> str:
    """Tonnes, readable at cluster scale."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.3f} Mt"
    if abs(value) >= 1e3:
        return f"{value / 1e3:,.1f} kt"
    return f"{value:,.1f} t"


def _by_gas(g: dict[str, float], net_scope1: float) -> str:
    """Scope 1 by gas (t of each gas), the biogenic CO2 memo (not in scope 1) and CO2 sent
    to storage (gross scope 1 - captured = net scope 1, the figure above)."""
    line = f"scope 1 by gas: CO2 {_t(g['co2'])}, CH4 {_t(g['ch4'])}, N2O {_t(g['n2o'])}"
    if g["co2e_other"]:
        line += f", other {_t(g['co2e_other'])} CO2e"
    line += f"; memo: biogenic CO2 {_t(g['co2_biogenic'])}"
    if g["co2_captured"]:
        line += (
            f"; gross scope 1 {_t(net_scope1 + g['co2_captured'])}, "
            f"captured for storage {_t(g['co2_captured'])}, net {_t(net_scope1)}"
        )
    return line


@click.group()
def twin() -> None:
    """Inspect cluster twins: hierarchy, factors, baselines, targets, network catalogue."""


@twin.command("list")
def list_clusters() -> None:
    """Shipped example clusters."""
    for cid in available_clusters():
        c = _load(cid)
        click.echo(f"{cid:12} {c.country}  {c.name}")


@twin.command()
@click.argument("cluster")
@gwp_option
@click.option("--meters/--no-meters", default=True, help="List every meter.")
def show(cluster: str, gwp: str, meters: bool) -> None:
    """Print CLUSTER (id or YAML path): sites, assets, meters, annual emissions, targets."""
    c = _load(cluster)
    calc = _calculator(c, gwp)
    totals = calc.annual()
    click.echo(
        f"{c.name} [{c.id}]  country={c.country}  grid={c.grid_zone}  "
        f"reference year={c.reference_year}  GWP={gwp}"
    )
    for site in c.sites:
        s = totals.site(site.id)
        click.echo(
            f"  site {site.id}: {site.name}  (scope 1 {_t(s['scope1'])}, "
            f"scope 2 loc {_t(s['scope2_location'])} / mkt {_t(s['scope2_market'])}"
            + (f", H2 upstream {_t(s['scope3_upstream'])}" if s["scope3_upstream"] else "")
            + ")"
        )
        click.echo(f"    {_by_gas(totals.site_gases(site.id), s['scope1'])}")
        for asset in site.assets:
            click.echo(f"    asset {asset.id}: {asset.name or asset.kind}")
            if not meters:
                continue
            for m in asset.meters:
                scope = m.effective_scope
                dest = f" -> {m.to_site}" if m.to_site else ""
                qty = "" if m.annual_quantity is None else f"  {m.annual_quantity:,.0f} {m.unit}/yr"
                click.echo(
                    f"      meter {m.id}: {m.carrier.value} [{m.unit}] {m.boundary.value}{dest}"
                    f"  scope {scope if scope is not None else '-'}{qty}"
                )
    cl = totals.cluster_dict()
    click.echo("cluster view (transfers netted):")
    for name in SCOPES:
        click.echo(f"  {name:16} {_t(cl[name]):>14}")
    click.echo(f"  {_by_gas(totals.cluster_gases(), cl['scope1'])}")
    elim = dict(zip(SCOPES, totals.eliminations, strict=True))
    if any(elim.values()):
        click.echo(
            "  eliminated internal transfers: "
            + ", ".join(f"{k} {_t(v)}" for k, v in elim.items() if v)
        )
    if c.plan is not None:
        rec = reconcile(c, calc)
        b = c.plan.baseline
        status = "OK" if rec.ok else "MISMATCH"
        click.echo(
            f"baseline {b.year}: published {_t(b.tco2e)} (scope {b.scopes}, {b.source}); "
            f"modelled {_t(rec.modelled_tco2e)} ({rec.difference_pct:+.2f}%, "
            f"tolerance {rec.tolerance_pct}%) {status}"
        )
        for t in c.plan.targets:
            what = f"-{t.reduction_pct:g}%" if t.reduction_pct is not None else _t(t.tco2e or 0)
            click.echo(f"target {t.year}: {what} -> {_t(t.level(b))}  {t.label}")
        last = max([t.year for t in c.plan.targets] + [b.year])
        series = c.plan.pathway().series(b.year, last)
        step = 5 if last - b.year > 10 else 1
        click.echo(
            "pathway: "
            + ", ".join(
                f"{y} {_t(v)}" for y, v in series.items() if (y - b.year) % step == 0 or y == last
            )
        )
    else:
        click.echo("no published baseline or targets")


@twin.command()
@click.argument("cluster")
@click.argument("meter")
@gwp_option
def explain(cluster: str, meter: str, gwp: str) -> None:
    """Show the factors (id, version, source) behind METER's emissions."""
    c = _load(cluster)
    calc = _calculator(c, gwp)
    if meter not in c.meter_index():
        raise click.ClickException(f"no meter {meter!r} in cluster {c.id!r}")
    prov = calc.provenance(meter)
    if not prov:
        click.echo(f"{meter}: carries no emission of its own (generation/export/receipt)")
    for p in prov:
        click.echo(
            f"{p.scope}: {p.tco2e_per_unit:.6g} tCO2e/{p.canonical_unit} -> site "
            f"{p.attributed_site}; factor {p.factor_id} v{p.factor_version} ({p.gwp})\n"
            f"    source: {p.factor_source}" + (f"\n    note: {p.note}" if p.note else "")
        )


@twin.command()
@click.argument("clusters", nargs=-1, required=True)
@click.option(
    "--levers",
    type=click.Path(exists=True, dir_okay=False),
    help="Also check this levers file against each cluster.",
)
def validate(clusters: tuple[str, ...], levers: str | None) -> None:
    """Check CLUSTERS (ids or YAML paths), their factors and optionally a levers file: every
    problem of every file listed, exit code 2 if there is any."""
    lines: list[str] = []
    for cluster in clusters:
        try:
            c = load_cluster(cluster)
            EmissionsCalculator(c)
            if levers is not None:
                _project(c, levers)
        except _REFUSED as exc:
            lines += [li for li in str(exc).splitlines() if li not in lines]
            continue
        click.echo(f"ok: {c.id} ({len(c.sites)} sites, {len(c.meter_index())} meters)")
    if lines:
        raise FileProblems(ValueError("\n".join(lines)))


@twin.command()
def catalogue() -> None:
    """The network of named clusters with their published figures (unknown stays blank)."""
    cat = load_catalogue()
    n = cat.network
    click.echo(
        f"network: {n.clusters} clusters, {n.countries} countries, reduction potential "
        f"{_t(n.reduction_potential_tco2e_per_year)}/yr, GDP ${n.gdp_usd / 1e9:,.0f} bn, "
        f"{n.jobs:,} jobs ({n.source})"
    )
    for e in cat.clusters:
        base = (
            f"{_t(e.baseline.tco2e)} ({e.baseline.year}, scope {e.baseline.scopes})"
            if e.baseline
            else "-"
        )
        twin_id = f" twin={e.twin}" if e.twin else ""
        click.echo(f"  {e.id:34} {e.country}  baseline {base}{twin_id}")


@click.command()
@click.argument("cluster")
@click.argument("levers", type=click.Path(exists=True, dir_okay=False))
@click.option("--every", default=1, show_default=True, help="Print every N-th year.")
def scenario(cluster: str, levers: str, every: int) -> None:
    """Project CLUSTER under the levers in LEVERS.yaml and say when targets are met or missed."""
    c = _load(cluster)
    try:
        sc, result = _project(c, levers)
    except (ScenarioError, FactorError) as exc:
        raise FileProblems(exc) from None
    click.echo(f"{sc.name} on {c.name} (accounted scopes: {result.scopes}, GWP {sc.gwp})")
    click.echo(
        f"{'year':>4} {'BAU':>12} {'scenario':>12} {'pathway':>12} {'gap':>12} "
        f"{'captured':>11} {'H2 upstr.':>10}"
    )
    for i, y in enumerate(result.years):
        if i % max(every, 1) and y is not result.years[-1]:
            continue
        pw = "-" if y.pathway is None else _t(y.pathway)
        gap = "-" if y.gap is None else _t(y.gap)
        click.echo(
            f"{y.year:>4} {_t(y.bau):>12} {_t(y.scenario):>12} {pw:>12} {gap:>12} "
            f"{_t(y.captured):>11} {_t(y.scope3_upstream):>10}"
        )
    for t in result.targets:
        verdict = "MET" if t.met else "MISSED"
        when = (
            f"first at/below target level in {t.first_year_at_or_below}"
            if t.first_year_at_or_below
            else "never at/below target level within the horizon"
        )
        click.echo(
            f"target {t.year} ({t.label}): level {_t(t.level)}, projected {_t(t.projected)} "
            f"-> {verdict} by {_t(abs(t.margin))}; {when}"
        )
    for note in result.notes:
        click.echo(f"note: {note}")
