"""The emission-factor library: factors are data (YAML next to this file), this is the reader.

Every factor has an id, source, year, version and region so that any computed tonne can be
traced to the number that produced it and restated when a factor is revised. Gas amounts are
kept per gas (CO2, CH4, N2O) where the source gives them, so the GWP set is a choice made at
calculation time (AR5 or AR6), not baked into the data.

Quantities are normalised at load time to tonnes of gas per canonical unit of the carrier
(MWh, or t for process CO2) with pint; nothing downstream converts units again.

A factor is the tonnes a unit emits, so no gas amount may be negative: carbon that leaves a
site (exports, capture) is a boundary of the meter, not a negative factor. A bad library file
lists every problem of every entry, each as ``<file>: factors[i](id): <field>: <why>``.

Revisions: several versions of one id may coexist, each valid from its ``valid_from`` (a
date; none: from the beginning) until the next version's ``valid_from`` or its own
``valid_to`` (exclusive). ``FactorLibrary.at`` is the one rule that picks the version valid
on a date; every other lookup (and so the live calculator) sees the newest version.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from importlib import resources
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from twin.carriers import (
    Carrier,
    HydrogenRoute,
    UnitError,
    carrier_properties,
    scale_to_canonical,
    ureg,
)
from twin.uncertainty import Uncertain, total
from twin.validation import Problems, error_lines
from twin.yaml_loader import load_yaml

__all__ = [
    "Factor",
    "FactorError",
    "FactorLibrary",
    "GwpSet",
    "default_library",
    "load_gwp_sets",
    "period_problem",
    "revision_problem",
]

FactorKind = Literal[
    "combustion", "grid", "supplier", "steam_heat", "hydrogen", "process", "transfer"
]


class FactorError(ValueError):
    """A factor file or reference that cannot be used; names the file/id and why."""


class GwpSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    values: dict[str, float]

    def co2e(self, gases: Mapping[str, float], biogenic: bool) -> float:
        """tCO2e for tonnes of each gas. Biogenic CO2 is a memo item (not counted) and its
        methane takes the non-fossil GWP."""
        total = 0.0
        for gas, amount in gases.items():
            if gas == "CO2":
                total += 0.0 if biogenic else amount
            elif gas == "CO2e":
                total += amount
            elif gas == "CH4":
                total += amount * self.values["CH4_non_fossil" if biogenic else "CH4_fossil"]
            else:
                try:
                    total += amount * self.values[gas]
                except KeyError:
                    raise FactorError(f"GWP set {self.name} has no value for {gas}") from None
        return total


class Factor(BaseModel):
    """One emission factor, normalised to tonnes of gas per canonical unit of ``carrier``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: FactorKind
    carrier: Carrier
    region: str
    year: int
    version: str
    source: str
    gases: dict[str, float] = Field(default_factory=dict)  # t gas / canonical unit
    # For routes powered by electricity (electrolysis): MWh of electricity per canonical unit,
    # valued at the local grid factor when the calculator resolves it.
    electricity_per_unit: float = Field(default=0.0, ge=0)
    biogenic: bool = False
    route: HydrogenRoute | None = None
    category: str | None = None  # combustion: energy_industries | manufacturing
    note: str = ""
    # per gas, the half-width of the 95 % interval in percent of the value (IPCC tables,
    # Open Emission Factors DB); a gas left out has an undeclared uncertainty (twin.uncertainty)
    uncertainty_pct: dict[str, float] = Field(default_factory=dict)
    # a revision's validity (module docstring): from this date, until valid_to (exclusive)
    valid_from: date | None = None
    valid_to: date | None = None

    @model_validator(mode="after")
    def _period_ordered(self) -> Factor:
        problem = period_problem(self.valid_from, self.valid_to)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("uncertainty_pct")
    @classmethod
    def _uncertainty_of_known_gases(cls, u: dict[str, float]) -> dict[str, float]:
        bad = [(g, "must be a percentage >= 0") for g, v in u.items() if not v >= 0]
        if bad:
            raise Problems([((g,), why) for g, why in bad])
        return u

    @model_validator(mode="after")
    def _uncertainty_gases_are_factor_gases(self) -> Factor:
        extra = sorted(set(self.uncertainty_pct) - set(self.gases))
        if extra:
            raise ValueError(
                f"uncertainty_pct: {', '.join(extra)} not among the factor's gases "
                f"({', '.join(sorted(self.gases)) or 'none'})"
            )
        return self

    def co2e_uncertain(self, gwp: GwpSet) -> Uncertain:
        """tCO2e per unit with its uncertainty: each gas's tonnes x its GWP, summed by
        IPCC Approach 1. GWPs are conventions of the reporting rules, taken as exact."""
        terms = [
            Uncertain(
                gwp.co2e({gas: amount}, self.biogenic),
                self.uncertainty_pct.get(gas),
            )
            for gas, amount in self.gases.items()
        ]
        return total(terms)

    @field_validator("gases")
    @classmethod
    def _not_negative(cls, gases: dict[str, float]) -> dict[str, float]:
        bad = [g for g, v in gases.items() if v < 0]
        if bad:
            raise Problems(
                [
                    (
                        (g,),
                        "must not be negative: a factor is what a unit "
                        "emits; carbon leaving a site is the meter's boundary (export), not a "
                        "negative factor",
                    )
                    for g in bad
                ]
            )
        return gases

    def co2e(self, gwp: GwpSet) -> float:
        return gwp.co2e(self.gases, self.biogenic)


def period_problem(valid_from: date | None, valid_to: date | None) -> str | None:
    """Why a version's validity period is void (None: it is not): it must end after it
    starts. The rule for library and cluster-file factors alike."""
    if valid_from and valid_to and valid_to <= valid_from:
        return f"valid_to: {valid_to} must be after valid_from {valid_from}"
    return None


def revision_problem(
    known: Iterable[tuple[str, date | None]], version: str, valid_from: date | None
) -> str | None:
    """Why a version cannot join the (version, valid_from) of its id's other versions (None:
    it can): a revision needs a new version and its own ``valid_from``, or two versions would
    claim one day. The rule for library and cluster-file factors alike."""
    for v, start in known:
        if v == version or start == valid_from:
            clash = f"version {v!r}" if v == version else f"valid_from {start} of version {v!r}"
            return f"a revision needs a new version and its own valid_from (same {clash})"
    return None


def _per_unit(value: float, unit: str, carrier: Carrier) -> float:
    """A factor ``value`` in ``unit`` (e.g. kg/TJ, g/kWh, kg/kg) -> t per canonical unit."""
    num, _, den = unit.partition("/")
    if not den:
        raise FactorError(f"factor unit {unit!r} must be '<mass>/<activity>'")
    mass_t = float(ureg.Quantity(value, num).to("t").magnitude)
    try:
        per = scale_to_canonical(carrier, den)
    except UnitError as e:
        raise FactorError(f"factor unit {unit!r}: {e}") from e
    return mass_t / per


@functools.cache
def load_gwp_sets() -> dict[str, GwpSet]:
    raw = load_yaml(resources.files("twin.factors").joinpath("gwp.yaml").read_text())
    return {
        name: GwpSet(name=name, source=body["source"], values=body["values"])
        for name, body in raw["sets"].items()
    }


class FactorLibrary:
    """All factors by id, plus the lookups the calculator needs (grid by zone and year,
    combustion by carrier and category, hydrogen by route)."""

    def __init__(self, factors: Iterable[Factor]) -> None:
        self._by_id: dict[str, Factor] = {}  # the newest version of each id
        self._versions: dict[str, list[Factor]] = {}  # every version, oldest first
        self._pinned: frozenset[str] = frozenset()  # ids held at one version (``pinned``)
        for f in factors:
            self._add(f)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_documents(cls, docs: Iterable[tuple[str, Any]]) -> FactorLibrary:
        """Build from (origin, parsed YAML) pairs; see the files in this folder for the shape."""
        factors: list[Factor] = []
        pending_derived: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        problems: list[str] = []
        first_at: dict[str, str] = {}
        docs_seen = list(docs)
        for origin, doc in docs_seen:
            defaults = {k: v for k, v in doc.items() if k != "factors"}
            for i, entry in enumerate(doc.get("factors", [])):
                merged = {**defaults, **entry}
                fid = merged.get("id")
                where = f"{origin}: factors[{i}]" + (f"({fid})" if isinstance(fid, str) else "")
                # a revision is the same id with another version (and its validity)
                key = f"{fid}@{merged.get('version')}"
                if isinstance(fid, str) and key in first_at:
                    problems.append(
                        f"{where}: id: duplicate factor id {fid!r} (first at {first_at[key]})"
                    )
                    continue
                if isinstance(fid, str):
                    first_at[key] = where
                if "derived_from" in merged:
                    pending_derived.append((where, merged, {}))
                    continue
                try:
                    factors.append(_build(where, merged))
                except FactorError as e:
                    problems.extend(str(e).splitlines())
        if problems:
            raise FactorError("\n".join(problems))
        try:
            lib = cls(factors)
        except FactorError as e:
            raise FactorError(f"{', '.join(o for o, _ in docs_seen)}: {e}") from None
        for where, merged, _ in pending_derived:
            base = lib._by_id.get(merged["derived_from"])
            if base is None:
                raise FactorError(
                    f"{where}: derived_from: unknown factor {merged['derived_from']!r}"
                )
            eff = float(merged["efficiency"])
            if not 0 < eff <= 1:
                raise FactorError(f"{where}: efficiency: must be in (0, 1], got {eff}")
            body = {
                k: v
                for k, v in merged.items()
                if k not in ("derived_from", "efficiency", "unit", "values")
            }
            body["gases"] = {g: a / eff for g, a in base.gases.items()}
            body.setdefault("biogenic", base.biogenic)
            body["note"] = (
                f"{body.get('note', '')} derived: {base.id} (v{base.version}) / efficiency {eff}"
            ).strip()
            lib._add(_build(where, body, normalised=True))
        return lib

    def _add(self, f: Factor) -> None:
        known = self._versions.setdefault(f.id, [])
        problem = revision_problem(
            ((k.version, k.valid_from) for k in known), f.version, f.valid_from
        )
        if problem:
            raise FactorError(f"duplicate factor id {f.id!r}: {problem}")
        known.append(f)
        known.sort(key=_start)
        self._by_id[f.id] = known[-1]

    def versions(self, factor_id: str) -> list[Factor]:
        """Every version of ``factor_id``, oldest validity first."""
        self.get(factor_id)
        return list(self._versions[factor_id])

    def at(self, factor_id: str, when: date) -> Factor:
        """The version of ``factor_id`` valid on ``when``: the latest whose ``valid_from`` is
        not after it (none: valid from the beginning), unless its ``valid_to`` has passed."""
        valid = [f for f in self.versions(factor_id) if _start(f) <= when]
        if not valid or (valid[-1].valid_to is not None and when >= valid[-1].valid_to):
            raise FactorError(f"factor {factor_id!r}: no version valid on {when.isoformat()}")
        return valid[-1]

    def pinned(self, factor: Factor) -> FactorLibrary:
        """A copy in which ``factor`` (one of its id's versions) is the one every lookup sees:
        what figures at that version are computed with."""
        lib = FactorLibrary(f for fs in self._versions.values() for f in fs if f.id != factor.id)
        lib._add(factor)
        lib._pinned = self._pinned | {factor.id}
        return lib

    def with_factors(self, extra: Iterable[Factor]) -> FactorLibrary:
        """A copy with cluster-specific factors added (supplier contracts, transfers) or
        revisions of its own (new versions with a validity period). A factor it already holds
        (equal in every field) is not added twice, and a pinned id keeps its one version: so
        a library that already has a cluster's factors (``twin.emissions.library_for``, a
        revision's pinned copies) may be given them again."""
        lib = FactorLibrary(f for fs in self._versions.values() for f in fs)
        lib._pinned = self._pinned
        for f in extra:
            if f.id in lib._pinned or f in lib._versions.get(f.id, ()):
                continue
            lib._add(f)
        return lib

    # ---- lookups ------------------------------------------------------------------------

    def __contains__(self, factor_id: object) -> bool:
        return factor_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Factor]:
        return iter(self._by_id.values())

    def get(self, factor_id: str) -> Factor:
        try:
            return self._by_id[factor_id]
        except KeyError:
            raise FactorError(f"unknown factor id {factor_id!r}") from None

    def combustion(self, carrier: Carrier, category: str) -> Factor:
        for f in self._by_id.values():
            if f.kind == "combustion" and f.carrier is carrier and f.category == category:
                return f
        raise FactorError(f"no combustion factor for {carrier.value} ({category})")

    def grid(self, zone: str, year: int | None = None) -> Factor:
        """The location-based grid factor of ``zone`` for ``year``: that year's if published,
        else the latest earlier one, else the earliest later one."""
        cands = [f for f in self._by_id.values() if f.kind == "grid" and f.region == zone]
        if not cands:
            raise FactorError(f"no grid factor for zone {zone!r}")
        if year is None:
            return max(cands, key=lambda f: f.year)
        earlier = [f for f in cands if f.year <= year]
        if earlier:
            return max(earlier, key=lambda f: f.year)
        return min(cands, key=lambda f: f.year)

    def by_kind(self, kind: str, carrier: Carrier | None = None) -> list[Factor]:
        return [
            f
            for f in self._by_id.values()
            if f.kind == kind and (carrier is None or f.carrier is carrier)
        ]

    def hydrogen(self, route: HydrogenRoute) -> Factor:
        for f in self._by_id.values():
            if f.kind == "hydrogen" and f.route is route:
                return f
        raise FactorError(f"no hydrogen factor for route {route.value}")


def _start(f: Factor) -> date:
    return f.valid_from or date.min


def _build(where: str, body: dict[str, Any], normalised: bool = False) -> Factor:
    body = dict(body)
    raw_keys = set(body)
    body.pop("file_version", None)
    try:
        carrier = Carrier(body["carrier"])
    except (KeyError, ValueError):
        raise FactorError(f"{where}: carrier: missing or unknown {body.get('carrier')!r}") from None
    if not normalised:
        unit = body.pop("unit", None)
        values = body.pop("values", None)
        if values is not None:
            if unit is None:
                raise FactorError(f"{where}: unit: required with values")
            try:
                body["gases"] = {g: _per_unit(float(v), unit, carrier) for g, v in values.items()}
            except FactorError as e:
                raise FactorError(f"{where}: {e}") from None
        elec = body.pop("electricity_mwh_per_kg", None)
        if elec is not None:
            body["electricity_per_unit"] = float(elec) / scale_to_canonical(carrier, "kg")
    try:
        return Factor.model_validate(body)
    except ValidationError as e:
        # Errors in the amounts point at ``values`` when that is what the file wrote.
        shown = {**body, "values": body["gases"]} if "values" in raw_keys else body
        lines = error_lines(e, shown, where)
        if "values" in raw_keys:
            lines = [li.replace(f"{where}: gases", f"{where}: values", 1) for li in lines]
        raise FactorError("\n".join(lines)) from None


_FILES = (
    "combustion_ipcc2006.yaml",
    "grid.yaml",
    "steam_heat.yaml",
    "hydrogen.yaml",
    "supplier.yaml",
    "process.yaml",
)


@functools.cache
def default_library() -> FactorLibrary:
    """The shipped library (cached: factors are immutable)."""
    base = resources.files("twin.factors")
    docs = []
    for name in _FILES:
        docs.append((name, load_yaml(base.joinpath(name).read_text())))
    # Sanity: properties used for per-mass factors must exist.
    carrier_properties()
    return FactorLibrary.from_documents(docs)
