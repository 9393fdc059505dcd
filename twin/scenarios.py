"""What-if scenarios: levers (data, YAML) applied to the twin's annual activity, projected
year by year against the cluster's pathway.

Activity is held at its starting level (the live run-rate, or the meters' reference-year
quantities) unless a lever changes it; the projection isolates the levers' effect rather than
forecasting demand. Emissions a lever creates elsewhere (electricity bought to replace gas,
upstream hydrogen production) are counted against the target by default, so moving tonnes
out of scope 1 does not look like cutting them.

How levers combine (each rule is what keeps a scenario physically possible):

* Business as usual is the starting activity with no lever at all, the grid lever included:
  the grid factor stays the library's for the start; a cleaner grid is the grid lever's
  effect and shows as scenario below BAU, never as a lower BAU.
* Shares of one quantity compose on what is left, in file order: a lever moving share ``a``
  of a meter (electrify, hydrogen_switch; times its ramp) takes ``a`` of what the levers above
  it left, so ``a`` then ``b`` move ``1 - (1 - a)(1 - b)`` of the meter. Electrify 0.5 then
  hydrogen 0.8 moves 50% to electricity and 40% to hydrogen (90%), never 130%.
* Capture works the same way on the capturing site's scope 1 after the fuel levers: each CCS
  lever captures its rate of what earlier CCS levers at that site left, so capture never
  exceeds the site's emissions (two 90% levers capture 99%, not 180%).
* A grid trajectory starts at ``start_year`` from the library value of the year before and
  interpolates between its points; a point before ``start_year`` is refused (it would be
  interpolated backwards into values nobody gave), and one zone takes one grid lever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from twin.carriers import Carrier, HydrogenRoute
from twin.emissions import S1, S2L, S2M, S3, EmissionsCalculator
from twin.factors import FactorLibrary
from twin.model import FUELS, Cluster
from twin.targets import Pathway, TargetPlan
from twin.yaml_loader import load_yaml

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = [
    "CcsLever",
    "ElectrifyLever",
    "GridFactorLever",
    "HydrogenSwitchLever",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "TargetOutcome",
    "YearResult",
    "load_scenario",
    "run_scenario",
]


class ScenarioError(ValueError):
    """A levers file that cannot be applied; names the file, lever and field."""


class _Lever(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    start_year: int
    full_year: int | None = None  # linear ramp from start_year to full_year; None = step

    @model_validator(mode="after")
    def _ramp(self) -> _Lever:
        if self.full_year is not None and self.full_year < self.start_year:
            raise ValueError("full_year must not be before start_year")
        return self

    def ramp(self, year: int) -> float:
        """Share of the lever in effect in ``year`` (0..1)."""
        if year < self.start_year:
            return 0.0
        if self.full_year is None or self.full_year == self.start_year or year >= self.full_year:
            return 1.0
        return (year - self.start_year + 1) / (self.full_year - self.start_year + 1)


class _Selection(_Lever):
    """Which fuel meters a lever acts on: explicit ids, or a site's fuels (optionally only
    some carriers)."""

    meters: tuple[str, ...] = ()
    site: str | None = None
    carriers: tuple[Carrier, ...] = ()
    share: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _what(self) -> _Selection:
        if bool(self.meters) == (self.site is not None):
            raise ValueError("give either meters or site")
        return self


class ElectrifyLever(_Selection):
    type: Literal["electrify"]
    # Electricity needed per MWh of fuel displaced (e.g. 0.9/0.99 for a gas boiler replaced
    # by an electrode boiler; well below 1 for heat pumps).
    electric_mwh_per_fuel_mwh: float = Field(default=0.9, gt=0)
    supplier_factor_id: str | None = None


class HydrogenSwitchLever(_Selection):
    type: Literal["hydrogen_switch"]
    route: HydrogenRoute
    h2_mwh_per_fuel_mwh: float = Field(default=1.0, gt=0)


class CcsLever(_Lever):
    type: Literal["ccs"]
    site: str
    capture_rate: float = Field(gt=0, le=1)  # share of the site's gross scope 1 captured


class GridFactorLever(_Lever):
    type: Literal["grid_factor"]
    zone: str
    # year -> tCO2e/MWh, interpolated linearly; from start_year until the first point the
    # value ramps from the library factor.
    points: dict[int, float]

    @model_validator(mode="after")
    def _points(self) -> GridFactorLever:
        if not self.points or any(v < 0 for v in self.points.values()):
            raise ValueError("points must be a non-empty year -> non-negative tCO2e/MWh map")
        early = sorted(y for y in self.points if y < self.start_year)
        if early:
            raise ValueError(
                f"grid_factor lever {self.name or self.zone!r}: point {early[0]} is before "
                f"start_year {self.start_year} (the trajectory starts at start_year from the "
                "library value; give points from start_year on)"
            )
        return self

    def value(self, year: int, library_value: float) -> float:
        """tCO2e/MWh in ``year`` (at or after ``start_year``)."""
        ys = [self.start_year - 1, *sorted(self.points)]
        vs = [library_value, *(self.points[y] for y in sorted(self.points))]
        return float(np.interp(year, ys, vs))


Lever = Annotated[
    ElectrifyLever | HydrogenSwitchLever | CcsLever | GridFactorLever,
    Field(discriminator="type"),
]


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "scenario"
    cluster: str | None = None
    start_year: int | None = None  # default: the cluster's reference year
    horizon: int = 2050
    gwp: Literal["AR4", "AR5", "AR6"] = "AR6"
    count_induced: bool = True  # count lever-induced scope 2 and upstream H2 against targets
    levers: tuple[Lever, ...] = ()

    @model_validator(mode="after")
    def _one_grid_lever_per_zone(self) -> Scenario:
        seen: dict[str, int] = {}
        for i, lever in enumerate(self.levers):
            if isinstance(lever, GridFactorLever):
                if lever.zone in seen:
                    raise ValueError(
                        f"levers[{i}]: a second grid_factor lever for zone {lever.zone!r} "
                        f"(first: levers[{seen[lever.zone]}]); give one lever with all points"
                    )
                seen[lever.zone] = i
        return self


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{p}: not valid YAML: {e}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "<root>"
            lines.append(f"{p}: {where}: {err['msg'].removeprefix('Value error, ')}")
        raise ScenarioError("\n".join(lines)) from None


@dataclass(frozen=True)
class YearResult:
    year: int
    bau: float  # accounted tCO2e with no lever at all (the grid lever included)
    scenario: float  # accounted tCO2e with levers
    pathway: float | None
    scope1: float
    scope2_location: float
    scope2_market: float
    scope3_upstream: float
    captured: float

    @property
    def gap(self) -> float | None:
        return None if self.pathway is None else self.scenario - self.pathway


@dataclass(frozen=True)
class TargetOutcome:
    year: int
    label: str
    level: float
    projected: float
    met: bool
    first_year_at_or_below: int | None  # first projected year at/below the target level

    @property
    def margin(self) -> float:
        """Positive: tonnes to spare; negative: tonnes short."""
        return self.level - self.projected


@dataclass
class ScenarioResult:
    cluster_id: str
    scenario: str
    scopes: str
    years: list[YearResult] = field(default_factory=list)
    targets: list[TargetOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _selected(cluster: Cluster, lever: _Selection, where: str) -> list[int]:
    index = cluster.meter_index()
    if lever.meters:
        out = []
        for mid in dict.fromkeys(lever.meters):
            ref = index.get(mid)
            if ref is None:
                raise ScenarioError(f"{where}.meters: no meter {mid!r} in cluster {cluster.id!r}")
            if ref.carrier not in FUELS:
                raise ScenarioError(f"{where}.meters: {mid!r} is {ref.carrier.value}, not a fuel")
            out.append(ref.position)
        return out
    if lever.site not in cluster.site_ids:
        raise ScenarioError(f"{where}.site: no site {lever.site!r} in cluster {cluster.id!r}")
    wanted = set(lever.carriers) or set(FUELS)
    return [
        r.position
        for r in index.values()
        if r.site_id == lever.site
        and r.carrier in wanted
        and r.carrier in FUELS
        and r.boundary.value == "import"
    ]


@dataclass(frozen=True)
class _Setup:
    """What every projected year shares: the cluster resolved once, the starting activity and
    the meters each fuel lever acts on."""

    cluster: Cluster
    scenario: Scenario
    factors: FactorLibrary | None
    start: int
    calc: EmissionsCalculator  # no lever: the BAU calculator
    q0: FloatArray  # starting activity, canonical units
    idx: IntArray
    site_pos: dict[str, int]
    zone_of_meter: tuple[str, ...]
    selections: dict[int, list[int]]  # lever position -> meter positions (fuel levers)


def _setup(
    cluster: Cluster,
    scenario: Scenario,
    quantities: npt.ArrayLike | None,
    factors: FactorLibrary | None,
) -> _Setup:
    """Check the scenario against the cluster (every lever's meters, sites and factors exist)
    before any year is computed, so a bad file fails whole rather than halfway."""
    if scenario.cluster is not None and scenario.cluster != cluster.id:
        raise ScenarioError(f"scenario is for cluster {scenario.cluster!r}, not {cluster.id!r}")
    start = scenario.start_year or cluster.reference_year
    if scenario.horizon < start:
        raise ScenarioError(f"horizon {scenario.horizon} is before start year {start}")
    calc = EmissionsCalculator(cluster, factors, gwp=scenario.gwp)
    if quantities is None:
        q_units = np.array([m.annual_quantity or 0.0 for _, _, m in cluster.meters()])
    else:
        q_units = np.asarray(quantities, dtype=np.float64)
    site_pos = {s: i for i, s in enumerate(calc.site_ids)}
    selections: dict[int, list[int]] = {}
    for i, lever in enumerate(scenario.levers):
        where = f"levers[{i}]"
        if isinstance(lever, ElectrifyLever | HydrogenSwitchLever):
            selections[i] = _selected(cluster, lever, where)
            if not selections[i]:
                raise ScenarioError(f"{where}: selects no fuel meter")
        elif isinstance(lever, CcsLever) and lever.site not in site_pos:
            raise ScenarioError(f"{where}.site: no site {lever.site!r} in cluster {cluster.id!r}")
        if isinstance(lever, ElectrifyLever) and lever.supplier_factor_id:
            calc.library.get(lever.supplier_factor_id)
        if isinstance(lever, HydrogenSwitchLever):
            calc.library.hydrogen(lever.route)
    return _Setup(
        cluster=cluster,
        scenario=scenario,
        factors=factors,
        start=start,
        calc=calc,
        q0=q_units * calc.scale,
        idx=np.arange(calc.n_meters, dtype=np.intp),
        site_pos=site_pos,
        zone_of_meter=tuple(s.grid_zone or cluster.grid_zone for s, _, _ in cluster.meters()),
        selections=selections,
    )


def _year_calculator(setup: _Setup, year: int) -> EmissionsCalculator:
    """The calculator for ``year``: the BAU one unless a grid lever is in effect."""
    overrides = {
        lever.zone: lever.value(year, setup.calc.grid_factor(lever.zone)[0])
        for lever in setup.scenario.levers
        if isinstance(lever, GridFactorLever) and year >= lever.start_year
    }
    if not overrides:
        return setup.calc
    return EmissionsCalculator(
        setup.cluster, setup.factors, setup.scenario.gwp, grid_overrides=overrides
    )


def _h2_factor(calc: EmissionsCalculator, route: HydrogenRoute, zone: str) -> float:
    f = calc.library.hydrogen(route)
    value = f.co2e(calc.gwp_set)
    if f.electricity_per_unit:
        value += f.electricity_per_unit * calc.grid_factor(zone)[0]
    return value


def _shift_fuel(
    setup: _Setup, calc: EmissionsCalculator, year: int
) -> tuple[FloatArray, FloatArray]:
    """(fuel left per meter, induced tCO2e per scope): each fuel lever moves its share of
    what the levers above it left (remaining-share composition)."""
    q = setup.q0.copy()
    induced = np.zeros(4)
    for i, lever in enumerate(setup.scenario.levers):
        r = lever.ramp(year)
        if r == 0.0 or i not in setup.selections:
            continue
        assert isinstance(lever, ElectrifyLever | HydrogenSwitchLever)
        for m in setup.selections[i]:
            moved = q[m] * lever.share * r
            q[m] -= moved
            zone = setup.zone_of_meter[m]
            if isinstance(lever, ElectrifyLever):
                mwh = moved * lever.electric_mwh_per_fuel_mwh
                loc = calc.grid_factor(zone)[0]
                mkt = (
                    calc.library.get(lever.supplier_factor_id).co2e(calc.gwp_set)
                    if lever.supplier_factor_id
                    else loc
                )
                induced[S2L] += mwh * loc
                induced[S2M] += mwh * mkt
            else:
                mwh = moved * lever.h2_mwh_per_fuel_mwh
                induced[S3] += mwh * _h2_factor(calc, lever.route, zone)
    return q, induced


def _captured(setup: _Setup, site_scope1: FloatArray, year: int) -> float:
    """tCO2 captured in ``year``: each CCS lever takes its rate of the site's scope 1 that
    earlier CCS levers at that site left, so the sum never exceeds the site's emissions."""
    left = {s: max(float(site_scope1[i]), 0.0) for s, i in setup.site_pos.items()}
    captured = 0.0
    for lever in setup.scenario.levers:
        if isinstance(lever, CcsLever):
            c = left[lever.site] * lever.capture_rate * lever.ramp(year)
            left[lever.site] -= c
            captured += c
    return captured


def _accounted(totals: FloatArray, scopes: str) -> float:
    """The tonnes a target of ``scopes`` counts."""
    return float(totals[S1] + (totals[S2L] if scopes == "1+2" else 0.0))


def _project_year(
    setup: _Setup, year: int, bau: float, scopes: str, pathway: Pathway | None
) -> YearResult:
    calc = _year_calculator(setup, year)
    q, induced = _shift_fuel(setup, calc, year)
    totals = calc.aggregate(setup.idx, calc.compute(setup.idx, q))
    captured = _captured(setup, totals.sites[S1], year)
    cl = totals.cluster.copy()
    cl[S1] -= captured
    cl += induced
    acc = _accounted(cl, scopes)
    if setup.scenario.count_induced:
        acc += (induced[S2L] if scopes == "1" else 0.0) + induced[S3]
    return YearResult(
        year=year,
        bau=bau,
        scenario=float(acc),
        pathway=None if pathway is None else pathway.at(year),
        scope1=float(cl[S1]),
        scope2_location=float(cl[S2L]),
        scope2_market=float(cl[S2M]),
        scope3_upstream=float(cl[S3]),
        captured=captured,
    )


def _target_outcomes(plan: TargetPlan, result: ScenarioResult, start: int, horizon: int) -> None:
    by_year = {y.year: y for y in result.years}
    for t in plan.targets:
        level = t.level(plan.baseline)
        yr = by_year.get(t.year)
        if yr is None:
            result.notes.append(f"target {t.year} is outside {start}-{horizon}")
            continue
        first = next((y.year for y in result.years if y.scenario <= level + 1e-6), None)
        result.targets.append(
            TargetOutcome(
                year=t.year,
                label=t.label or f"{t.year} target",
                level=level,
                projected=yr.scenario,
                met=yr.scenario <= level + 1e-6,
                first_year_at_or_below=first,
            )
        )


def run_scenario(
    cluster: Cluster,
    scenario: Scenario,
    quantities: npt.ArrayLike | None = None,
    factors: FactorLibrary | None = None,
) -> ScenarioResult:
    """Project ``scenario`` on ``cluster`` from ``quantities`` (annual, in each meter's unit;
    default the meters' ``annual_quantity``)."""
    setup = _setup(cluster, scenario, quantities, factors)
    plan = cluster.plan
    scopes = plan.baseline.scopes if plan else "1"
    pathway = plan.pathway() if plan else None
    result = ScenarioResult(cluster.id, scenario.name, scopes)
    if scenario.count_induced:
        result.notes.append(
            "accounted = target scopes + scope 2 and upstream hydrogen induced by the levers"
        )
    result.notes.append("activity held at the starting level; CCS energy penalty not modelled")
    # BAU: the starting activity with no lever, the grid included (activity is held, so
    # it is the same every year).
    bau = _accounted(
        setup.calc.aggregate(setup.idx, setup.calc.compute(setup.idx, setup.q0)).cluster, scopes
    )
    for year in range(setup.start, scenario.horizon + 1):
        result.years.append(_project_year(setup, year, bau, scopes, pathway))
    if plan is not None:
        _target_outcomes(plan, result, setup.start, scenario.horizon)
    return result


def scenario_from_mapping(raw: dict[str, Any]) -> Scenario:
    """Validate an already-parsed levers document (used by tests and the API)."""
    return Scenario.model_validate(raw)
