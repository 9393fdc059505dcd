"""The emission-factor library: factors are data (YAML next to this file), this is the reader.

Every factor has an id, source, year, version and region so that any computed tonne can be
traced to the number that produced it and restated when a factor is revised. Gas amounts are
kept per gas (CO2, CH4, N2O) where the source gives them, so the GWP set is a choice made at
calculation time (AR5 or AR6), not baked into the data.

Quantities are normalised at load time to tonnes of gas per canonical unit of the carrier
(MWh, or t for process CO2) with pint; nothing downstream converts units again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin.carriers import (
    Carrier,
    HydrogenRoute,
    UnitError,
    carrier_properties,
    scale_to_canonical,
    ureg,
)
from twin.yaml_loader import load_yaml

__all__ = [
    "Factor",
    "FactorError",
    "FactorLibrary",
    "GwpSet",
    "default_library",
    "load_gwp_sets",
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
    electricity_per_unit: float = 0.0
    biogenic: bool = False
    route: HydrogenRoute | None = None
    category: str | None = None  # combustion: energy_industries | manufacturing
    note: str = ""

    def co2e(self, gwp: GwpSet) -> float:
        return gwp.co2e(self.gases, self.biogenic)


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
        self._by_id: dict[str, Factor] = {}
        for f in factors:
            if f.id in self._by_id:
                raise FactorError(f"duplicate factor id {f.id!r}")
            self._by_id[f.id] = f

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_documents(cls, docs: Iterable[tuple[str, Any]]) -> FactorLibrary:
        """Build from (origin, parsed YAML) pairs; see the files in this folder for the shape."""
        factors: list[Factor] = []
        pending_derived: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for origin, doc in docs:
            defaults = {k: v for k, v in doc.items() if k != "factors"}
            for i, entry in enumerate(doc.get("factors", [])):
                merged = {**defaults, **entry}
                if "derived_from" in merged:
                    pending_derived.append((f"{origin}: factors[{i}]", merged, {}))
                    continue
                factors.append(_build(f"{origin}: factors[{i}]", merged))
        lib = cls(factors)
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
        if f.id in self._by_id:
            raise FactorError(f"duplicate factor id {f.id!r}")
        self._by_id[f.id] = f

    def with_factors(self, extra: Iterable[Factor]) -> FactorLibrary:
        """A copy with cluster-specific factors added (supplier contracts, transfers)."""
        lib = FactorLibrary(self._by_id.values())
        for f in extra:
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


def _build(where: str, body: dict[str, Any], normalised: bool = False) -> Factor:
    body = dict(body)
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
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise FactorError(f"{where}: {loc}: {first['msg']}") from None


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
