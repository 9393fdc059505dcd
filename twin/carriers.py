"""Energy carriers, their canonical units and unit conversion.

Every quantity entering the twin is converted once, at the edge, to its carrier's canonical
unit (MWh net calorific value for energy carriers, tonnes for process CO2), so emission factors
only ever need one unit per carrier and a batch is a single numpy multiply.

Conversions go through pint; the pint work is done once per distinct unit string (cached) and
the resulting scale factor is applied to the whole array. Fuels metered by mass or volume are
converted to energy with the net calorific values and densities of
``twin/factors/carrier_properties.yaml`` (data, with sources), never with numbers in code.

The unit rules (each stated once, here):

* **A CO2 mass is an emission, not a fuel quantity** (``CO2_UNIT_RULE``): ``tCO2``, ``tCO2e``,
  ``kgCO2`` ... are accepted only on ``process_co2``, the carrier of measured CO2 (process,
  exported, captured), and refused on every fuel and energy carrier.
* **A gas volume states its reference conditions** (``GAS_VOLUME_RULE``): ``Nm3`` is at
  0 degC / 101.325 kPa, ``Sm3`` at 15 degC / 101.325 kPa (ISO 13443); a plain ``m3`` of a gas is
  refused, and ``Nm3``/``Sm3`` of a liquid or solid too (their ``m3`` is at 15 degC).
* **Energy is net calorific value unless the meter says gross** (``CalorificBasis``): the
  canonical MWh and the IPCC factors are NCV; a meter declaring ``calorific_basis: gross``
  (gas billed in kWh GCV) is converted with the carrier's ``ncv_over_gcv``.
* **A rate is integrated over the reading's interval** (``twin.contract.is_rate_unit``):
  ``kW``, ``Nm3/h``, ``t/h`` scale to the quantity delivered in one hour at that rate, and the
  reading's value is multiplied by its interval in hours (a rate without one is refused).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
import pint

from twin.contract import is_rate_unit
from twin.yaml_loader import load_yaml

__all__ = [
    "CANONICAL_UNIT",
    "CO2_UNITS",
    "CO2_UNIT_RULE",
    "GAS_VOLUME_RULE",
    "CalorificBasis",
    "Carrier",
    "CarrierProperties",
    "Dimension",
    "HydrogenRoute",
    "Phase",
    "ReferenceConditions",
    "UnitError",
    "carrier_properties",
    "rate_quantity_unit",
    "reference_conditions",
    "scale_to_canonical",
    "to_canonical",
    "unit_dimension",
    "unit_is_compatible",
    "ureg",
]


class Carrier(StrEnum):
    """What a meter measures. Values are the spelling used in YAML and on the wire."""

    ELECTRICITY = "electricity"
    NATURAL_GAS = "natural_gas"
    COAL = "coal"  # other bituminous / steam coal
    COKING_COAL = "coking_coal"
    COKE = "coke"  # coke oven coke
    FUEL_OIL = "fuel_oil"  # residual fuel oil (HFO)
    DIESEL = "diesel"  # gas/diesel oil, incl. marine gas oil
    GASOLINE = "gasoline"
    LPG = "lpg"
    NAPHTHA = "naphtha"
    PETROLEUM_COKE = "petroleum_coke"
    REFINERY_GAS = "refinery_gas"
    BLAST_FURNACE_GAS = "blast_furnace_gas"
    COKE_OVEN_GAS = "coke_oven_gas"
    BIOMASS = "biomass"  # solid wood/biomass; CO2 is biogenic (memo item)
    HYDROGEN = "hydrogen"
    STEAM = "steam"
    HEAT = "heat"  # hot water / district heat
    SHORE_POWER = "shore_power"  # electricity supplied to ships at berth
    PROCESS_CO2 = "process_co2"  # non-combustion CO2 (calcination, anodes, SMR, captured CO2)


class HydrogenRoute(StrEnum):
    """How hydrogen brought into a site was produced; selects its upstream factor."""

    SMR = "smr"  # steam methane reforming, unabated ("grey")
    SMR_CCS = "smr_ccs"  # steam methane reforming with carbon capture ("blue")
    ELECTROLYSIS_GRID = "electrolysis_grid"  # electrolysis on the local grid mix
    ELECTROLYSIS_RENEWABLE = "electrolysis_renewable"


class Dimension(StrEnum):
    ENERGY = "energy"
    MASS = "mass"
    VOLUME = "volume"


class Phase(StrEnum):
    """How a carrier is metered by volume: a gas only at stated reference conditions."""

    GAS = "gas"
    LIQUID = "liquid"
    SOLID = "solid"


class CalorificBasis(StrEnum):
    """Which calorific value a meter's energy units count: net (LHV, the twin's canonical
    basis and the IPCC's) or gross (HHV, what gas suppliers usually bill in kWh)."""

    NET = "net"
    GROSS = "gross"


# Canonical unit per carrier. Energy carriers are on a net-calorific-value (LHV) basis in MWh,
# matching IPCC 2006 default factors which are per TJ NCV.
CANONICAL_UNIT: dict[Carrier, str] = {c: "MWh" for c in Carrier}
CANONICAL_UNIT[Carrier.PROCESS_CO2] = "t"


class UnitError(ValueError):
    """A unit that pint does not know or that cannot measure the carrier."""


def _make_registry() -> pint.UnitRegistry:
    reg: pint.UnitRegistry = pint.UnitRegistry()
    # Units common in energy metering that pint lacks. Normal/standard cubic metres are
    # volumes at reference conditions; the density in carrier_properties.yaml says which.
    reg.define("normal_cubic_meter = meter ** 3 = Nm3")
    reg.define("standard_cubic_meter = meter ** 3 = Sm3")
    # a mass of CO2: an emission, never a quantity of fuel (CO2_UNIT_RULE)
    reg.define("tonne_co2 = tonne = tCO2")
    reg.define("kilogram_co2 = 1e-3 * tonne_co2 = kgCO2")
    reg.define("million_btu = 1e6 * Btu = MMBtu")
    return reg


ureg: pint.UnitRegistry = _make_registry()

#: Masses of CO2 (or CO2e), by spelling, in tonnes of CO2: emissions, not fuel quantities.
CO2_UNITS: dict[str, float] = {
    "tCO2": 1.0,
    "tCO2e": 1.0,
    "kgCO2": 1e-3,
    "kgCO2e": 1e-3,
    "ktCO2": 1e3,
    "ktCO2e": 1e3,
    "MtCO2": 1e6,
    "MtCO2e": 1e6,
}
CO2_UNIT_RULE = (
    "a CO2 mass unit (tCO2, tCO2e, kgCO2 ...) is an emission, not a quantity of fuel or "
    "energy: it is accepted only on carrier process_co2 (measured process, exported or "
    "captured CO2) [rule units.co2_is_an_emission]"
)
GAS_VOLUME_RULE = (
    "a gas volume must state its reference conditions: Nm3 (0 degC, 101.325 kPa) or Sm3 "
    "(15 degC, 101.325 kPa, ISO 13443), never a plain m3; liquids and solids are metered in "
    "m3 or L at 15 degC, never Nm3/Sm3 [rule units.gas_reference_conditions]"
)

# Spellings that pint parses into something else (``kt`` is the knot) or not at all. Mapped
# before parsing. CO2 masses become ``tCO2`` (a tonne, recognisable as CO2 after parsing).
_ALIASES: dict[str, str] = {
    "kt": "kilotonne",
    "Mt": "megatonne",
    "Gt": "gigatonne",
    "m3": "meter ** 3",
    "tCO2e": "tCO2",
    "kgCO2e": "kgCO2",
    "ktCO2": "kilotonne_co2",
    "ktCO2e": "kilotonne_co2",
    "MtCO2": "megatonne_co2",
    "MtCO2e": "megatonne_co2",
}

#: What a parsed unit is a quantity of, beyond its dimension: a CO2 mass, a gas volume at
#: normal (Nm3) or standard (Sm3) conditions, or nothing more ("").
_KIND_OF_UNIT = {"_co2": "co2", "normal_cubic_meter": "normal", "standard_cubic_meter": "standard"}

_BASE = {Dimension.ENERGY: "MWh", Dimension.MASS: "t", Dimension.VOLUME: "m**3"}


def _kind(quantity: pint.Quantity) -> str:
    """ "co2", "normal", "standard" or "" (see ``_KIND_OF_UNIT``), prefixes included."""
    for name in quantity.unit_items():
        for suffix, kind in _KIND_OF_UNIT.items():
            if name[0].endswith(suffix):
                return kind
    return ""


@functools.lru_cache(maxsize=1024)
def _parse(unit: str) -> tuple[Dimension, float, str]:
    """(dimension, factor to the dimension's base unit: MWh, t or m3, kind) for a unit
    string; the kind is ``_kind``'s."""
    text = _ALIASES.get(unit.strip(), unit.strip())
    try:
        quantity = ureg.Quantity(1.0, text)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError) as e:
        raise UnitError(f"unknown unit {unit!r}") from e
    except Exception as e:  # pint raises assorted parser errors on junk input
        raise UnitError(f"unknown unit {unit!r}: {e}") from e
    for dim, base in _BASE.items():
        try:
            return dim, float(quantity.to(base).magnitude), _kind(quantity)
        except pint.errors.DimensionalityError:
            continue
    raise UnitError(
        f"unit {unit!r} has dimension {quantity.dimensionality}; "
        "expected an energy, a mass or a volume (or a rate of one: kW, Nm3/h, t/h)"
    )


#: the spelling of each dimension's base unit in readings (``_parse`` reads all three)
_BASE_SPELLING = {Dimension.ENERGY: "MWh", Dimension.MASS: "t", Dimension.VOLUME: "m3"}
#: ... and of the base unit of a kind: a rate of Nm3 integrates to Nm3, of tCO2 to tCO2
_KIND_SPELLING = {"co2": "tCO2", "normal": "Nm3", "standard": "Sm3"}


@functools.lru_cache(maxsize=256)
def rate_quantity_unit(rate_unit: str) -> tuple[str, float]:
    """(quantity unit, quantity per hour at a rate of 1 ``rate_unit``) for a rate unit.

    ``kW`` -> ("MWh", 0.001), ``t/h`` -> ("t", 1.0), ``Nm3/h`` -> ("Nm3", 1.0): what a meter
    reporting a power or a flow delivers over time, in the dimension's base unit (of the same
    reference conditions, or CO2) so the result goes through ``scale_to_canonical`` like any
    quantity. UnitError when it is not a rate of an energy, a mass or a volume.
    """
    text = rate_unit.strip()
    kind = ""
    if "/" in text:
        num, den = (p.strip() for p in text.split("/", 1))
        kind = _parse(num)[2] if num else ""
        text = f"({_ALIASES.get(num, num)}) / ({den})"
    try:
        per_hour = ureg.Quantity(1.0, text) * ureg.Quantity(1.0, "hour")
    except Exception as e:  # pint raises assorted parser errors on junk input
        raise UnitError(f"unknown rate unit {rate_unit!r}: {e}") from e
    for dim, base in _BASE.items():
        try:
            return _KIND_SPELLING.get(kind, _BASE_SPELLING[dim]), float(per_hour.to(base).magnitude)
        except pint.errors.DimensionalityError:
            continue
    raise UnitError(
        f"unit {rate_unit!r} is not a rate of an energy, a mass or a volume (kW, t/h, Nm3/h)"
    )


def unit_dimension(unit: str) -> Dimension:
    """What ``unit`` measures (energy, mass or volume); UnitError for anything else. A
    meter declared in one dimension fed in another is a mis-mapping, even where the twin
    could convert (kWh onto a coal weighbridge is the wrong meter, not a unit choice)."""
    return _parse(unit)[0]


@dataclass(frozen=True)
class CarrierProperties:
    """Physical properties needed to turn mass/volume into energy (NCV basis)."""

    ncv_mwh_per_t: float | None  # net calorific value
    #: a gas's at the normal reference conditions (per Nm3); a liquid's at 15 degC
    density_t_per_m3: float | None
    source: str
    phase: Phase | None = None
    #: net / gross calorific value; None: the carrier cannot declare a gross basis
    ncv_over_gcv: float | None = None


@dataclass(frozen=True)
class ReferenceConditions:
    """The temperature and pressure a gas volume unit (Nm3, Sm3) is stated at."""

    unit: str
    temperature_k: float
    pressure_kpa: float
    source: str


def _properties_file() -> dict[str, Any]:
    text = resources.files("twin.factors").joinpath("carrier_properties.yaml").read_text()
    raw: dict[str, Any] = load_yaml(text)
    return raw


@functools.cache
def carrier_properties() -> dict[Carrier, CarrierProperties]:
    """Net calorific values, densities, phases and NCV/GCV ratios, loaded once from the
    factor library."""
    raw = _properties_file()
    gj_per_mwh = float(ureg.Quantity(1.0, "MWh").to("GJ").magnitude)
    out: dict[Carrier, CarrierProperties] = {}
    for name, props in raw["carriers"].items():
        ncv = props.get("ncv_gj_per_t")
        ratio = props.get("ncv_over_gcv")
        out[Carrier(name)] = CarrierProperties(
            ncv_mwh_per_t=None if ncv is None else float(ncv) / gj_per_mwh,
            density_t_per_m3=props.get("density_t_per_m3"),
            source=str(props.get("source", "")),
            phase=None if props.get("phase") is None else Phase(props["phase"]),
            ncv_over_gcv=None if ratio is None else float(ratio),
        )
    return out


@functools.cache
def reference_conditions() -> dict[str, ReferenceConditions]:
    """The reference conditions of gas volumes by kind ("normal": Nm3, "standard": Sm3)."""
    return {
        kind: ReferenceConditions(
            unit=str(c["unit"]),
            temperature_k=float(c["temperature_k"]),
            pressure_kpa=float(c["pressure_kpa"]),
            source=str(c["source"]),
        )
        for kind, c in _properties_file()["reference_conditions"].items()
    }


def _gas_volume_ratio(kind: str) -> float:
    """Volume at normal conditions of one volume at ``kind``'s (ideal gas: n = pV/RT)."""
    normal, this = reference_conditions()["normal"], reference_conditions()[kind]
    return (this.pressure_kpa / normal.pressure_kpa) * (normal.temperature_k / this.temperature_k)


def _volume_scale(carrier: Carrier, unit: str, kind: str, props: CarrierProperties) -> float:
    """Tonnes of ``carrier`` per base volume of ``unit`` (m3 at its reference conditions)."""
    if props.density_t_per_m3 is None:
        raise UnitError(f"unit {unit!r} is a volume; no density is defined for {carrier.value}")
    if props.phase is Phase.GAS:
        if kind not in ("normal", "standard"):
            raise UnitError(f"unit {unit!r} on {carrier.value} (a gas): {GAS_VOLUME_RULE}")
        return props.density_t_per_m3 * _gas_volume_ratio(kind)
    if kind:
        raise UnitError(
            f"unit {unit!r} on {carrier.value} (a {props.phase or 'non-gas'}): {GAS_VOLUME_RULE}"
        )
    return props.density_t_per_m3


def _gross_to_net(carrier: Carrier, basis: CalorificBasis) -> float:
    if basis is CalorificBasis.NET:
        return 1.0
    props = carrier_properties().get(carrier)
    if props is None or props.ncv_over_gcv is None:
        raise UnitError(
            f"calorific_basis gross: no NCV/GCV ratio is defined for {carrier.value} "
            "(meter it on a net basis)"
        )
    return props.ncv_over_gcv


@functools.lru_cache(maxsize=4096)
def scale_to_canonical(
    carrier: Carrier | str, unit: str, basis: CalorificBasis | str = CalorificBasis.NET
) -> float:
    """Multiplier taking a quantity in ``unit`` to ``carrier``'s canonical unit.

    ``basis``: the calorific basis of the meter's energy units (mass and volume units are
    converted with the NCV whatever it says). A rate unit (``twin.contract.is_rate_unit``)
    gives the canonical quantity of one hour at that rate; the reading's value is multiplied
    by its interval in hours. Raises UnitError when the unit cannot measure the carrier.
    Cached, so callers may call it per batch or per reading at dictionary-lookup cost.
    """
    carrier = Carrier(carrier)  # also validates a plain string
    basis = CalorificBasis(basis)
    if is_rate_unit(unit):
        quantity_unit, per_hour = rate_quantity_unit(unit)
        return per_hour * scale_to_canonical(carrier, quantity_unit, basis)
    dim, to_base, kind = _parse(unit)
    if carrier is Carrier.PROCESS_CO2:
        if dim is Dimension.MASS:
            return to_base
        raise UnitError(f"unit {unit!r} is a {dim.value}; process_co2 is metered as a mass")
    if kind == "co2":
        raise UnitError(f"unit {unit!r} on {carrier.value}: {CO2_UNIT_RULE}")
    if dim is Dimension.ENERGY:
        return to_base * _gross_to_net(carrier, basis)
    props = carrier_properties().get(carrier)
    if props is None or props.ncv_mwh_per_t is None:
        raise UnitError(
            f"unit {unit!r} is a {dim.value}; {carrier.value} must be metered in energy units"
        )
    if dim is Dimension.MASS:
        return to_base * props.ncv_mwh_per_t
    return to_base * _volume_scale(carrier, unit, kind, props) * props.ncv_mwh_per_t


def unit_is_compatible(carrier: Carrier | str, unit: str) -> bool:
    """True when ``unit`` can measure ``carrier`` (and convert to its canonical unit)."""
    try:
        scale_to_canonical(Carrier(carrier), unit)
    except (UnitError, ValueError):
        return False
    return True


def to_canonical(
    carrier: Carrier | str, values: npt.ArrayLike, unit: str
) -> npt.NDArray[np.float64]:
    """Convert an array of quantities in ``unit`` to ``carrier``'s canonical unit."""
    return np.asarray(values, dtype=np.float64) * scale_to_canonical(Carrier(carrier), unit)
