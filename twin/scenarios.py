"""What-if scenarios: levers (data, YAML) applied to the twin's annual activity, projected
year by year against the cluster's pathway.

Activity is held at its starting level (the live run-rate, or the meters' reference-year
quantities) unless a lever changes it; the projection isolates the levers' effect rather than
forecasting demand. Emissions a lever creates elsewhere (electricity bought to replace gas,
upstream hydrogen production) are counted against the target by default, so moving tonnes
out of scope 1 does not look like cutting them.
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
from twin.yaml_loader import load_yaml

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
        return self


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
    bau: float  # accounted tCO2e without levers
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
        for mid in lever.meters:
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


def run_scenario(
    cluster: Cluster,
    scenario: Scenario,
    quantities: npt.ArrayLike | None = None,
    factors: FactorLibrary | None = None,
) -> ScenarioResult:
    """Project ``scenario`` on ``cluster`` from ``quantities`` (annual, in each meter's unit;
    default the meters' ``annual_quantity``)."""
    if scenario.cluster is not None and scenario.cluster != cluster.id:
        raise ScenarioError(f"scenario is for cluster {scenario.cluster!r}, not {cluster.id!r}")
    start = scenario.start_year or cluster.reference_year
    if scenario.horizon < start:
        raise ScenarioError(f"horizon {scenario.horizon} is before start year {start}")
    base_calc = EmissionsCalculator(cluster, factors, gwp=scenario.gwp)
    if quantities is None:
        q_units = np.array([m.annual_quantity or 0.0 for _, _, m in cluster.meters()])
    else:
        q_units = np.asarray(quantities, dtype=np.float64)
    q0 = q_units * base_calc.scale  # canonical
    idx = np.arange(base_calc.n_meters, dtype=np.intp)
    site_pos = {s: i for i, s in enumerate(base_calc.site_ids)}
    zone_of_site = [s.grid_zone or cluster.grid_zone for s in cluster.sites]
    site_of_meter = np.array(
        [site_pos[r.site_id] for r in cluster.meter_index().values()], dtype=np.intp
    )

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
            base_calc.library.get(lever.supplier_factor_id)
        if isinstance(lever, HydrogenSwitchLever):
            base_calc.library.hydrogen(lever.route)

    plan = cluster.plan
    scopes = plan.baseline.scopes if plan else "1"
    pathway = plan.pathway() if plan else None
    result = ScenarioResult(cluster.id, scenario.name, scopes)
    if scenario.count_induced:
        result.notes.append(
            "accounted = target scopes + scope 2 and upstream hydrogen induced by the levers"
        )
    result.notes.append("activity held at the starting level; CCS energy penalty not modelled")

    def grid_overrides(year: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for lever in scenario.levers:
            if isinstance(lever, GridFactorLever) and year >= lever.start_year:
                lib_value = base_calc.grid_factor(lever.zone)[0]
                ys = [lever.start_year - 1, *sorted(lever.points)]
                vs = [lib_value, *(lever.points[y] for y in sorted(lever.points))]
                out[lever.zone] = float(np.interp(year, ys, vs))
        return out

    def h2_factor(calc: EmissionsCalculator, route: HydrogenRoute, zone: str) -> float:
        f = calc.library.hydrogen(route)
        value = f.co2e(calc.gwp_set)
        if f.electricity_per_unit:
            value += f.electricity_per_unit * calc.grid_factor(zone)[0]
        return value

    for year in range(start, scenario.horizon + 1):
        overrides = grid_overrides(year)
        calc = (
            base_calc
            if not overrides
            else EmissionsCalculator(cluster, factors, scenario.gwp, grid_overrides=overrides)
        )
        bau_totals = calc.aggregate(idx, calc.compute(idx, q0))
        q = q0.copy()
        induced = np.zeros(4)
        for i, lever in enumerate(scenario.levers):
            r = lever.ramp(year)
            if r == 0.0 or i not in selections:
                continue
            for m in selections[i]:
                moved = q0[m] * lever.share * r  # type: ignore[union-attr]
                q[m] -= moved
                zone = zone_of_site[site_of_meter[m]]
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
                elif isinstance(lever, HydrogenSwitchLever):
                    mwh = moved * lever.h2_mwh_per_fuel_mwh
                    induced[S3] += mwh * h2_factor(calc, lever.route, zone)
        totals = calc.aggregate(idx, calc.compute(idx, q))
        captured = 0.0
        for lever in scenario.levers:
            if isinstance(lever, CcsLever):
                r = lever.ramp(year)
                gross = max(float(totals.sites[S1, site_pos[lever.site]]), 0.0)
                captured += gross * lever.capture_rate * r
        cl = totals.cluster.copy()
        cl[S1] -= captured
        cl += induced
        bau = bau_totals.cluster
        base_acc = bau[S1] + (bau[S2L] if scopes == "1+2" else 0.0)
        acc = cl[S1] + (cl[S2L] if scopes == "1+2" else 0.0)
        if scenario.count_induced:
            acc += (induced[S2L] if scopes == "1" else 0.0) + induced[S3]
        result.years.append(
            YearResult(
                year=year,
                bau=float(base_acc),
                scenario=float(acc),
                pathway=None if pathway is None else pathway.at(year),
                scope1=float(cl[S1]),
                scope2_location=float(cl[S2L]),
                scope2_market=float(cl[S2M]),
                scope3_upstream=float(cl[S3]),
                captured=captured,
            )
        )

    if plan is not None:
        by_year = {y.year: y for y in result.years}
        for t in plan.targets:
            level = t.level(plan.baseline)
            yr = by_year.get(t.year)
            if yr is None:
                result.notes.append(f"target {t.year} is outside {start}-{scenario.horizon}")
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
    return result


def scenario_from_mapping(raw: dict[str, Any]) -> Scenario:
    """Validate an already-parsed levers document (used by tests and the API)."""
    return Scenario.model_validate(raw)
