"""Energy carriers, their canonical units and unit conversion.

Every quantity entering the twin is converted once, at the edge, to its carrier's canonical
unit (MWh net calorific value for energy carriers, tonnes for process CO2), so emission factors
only ever need one unit per carrier and a batch is a single numpy multiply.

Conversions go through pint; the pint work is done once per distinct unit string (cached) and
the resulting scale factor is applied to the whole array. Fuels metered by mass or volume are
converted to energy with the net calorific values and densities of
``twin/factors/carrier_properties.yaml`` (data, with sources), never with numbers in code.
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
import yaml

__all__ = [
    "CANONICAL_UNIT",
    "Carrier",
    "CarrierProperties",
    "Dimension",
    "HydrogenRoute",
    "UnitError",
    "carrier_properties",
    "rate_quantity_unit",
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
    reg.define("million_btu = 1e6 * Btu = MMBtu")
    return reg


ureg: pint.UnitRegistry = _make_registry()

# Spellings that pint parses into something else (``kt`` is the knot) or not at all. Mapped
# before parsing; the CO2 suffixes only say what the mass is of.
_ALIASES: dict[str, str] = {
    "kt": "kilotonne",
    "Mt": "megatonne",
    "Gt": "gigatonne",
    "m3": "meter ** 3",
    "tCO2": "t",
    "tCO2e": "t",
    "kgCO2": "kg",
    "kgCO2e": "kg",
    "ktCO2": "kilotonne",
    "MtCO2": "megatonne",
}

_BASE = {Dimension.ENERGY: "MWh", Dimension.MASS: "t", Dimension.VOLUME: "m**3"}


@functools.lru_cache(maxsize=1024)
def _parse(unit: str) -> tuple[Dimension, float]:
    """(dimension, factor to the dimension's base unit: MWh, t or m3) for a unit string."""
    text = _ALIASES.get(unit.strip(), unit.strip())
    try:
        quantity = ureg.Quantity(1.0, text)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError) as e:
        raise UnitError(f"unknown unit {unit!r}") from e
    except Exception as e:  # pint raises assorted parser errors on junk input
        raise UnitError(f"unknown unit {unit!r}: {e}") from e
    for dim, base in _BASE.items():
        try:
            return dim, float(quantity.to(base).magnitude)
        except pint.errors.DimensionalityError:
            continue
    raise UnitError(
        f"unit {unit!r} has dimension {quantity.dimensionality}; "
        "expected an energy, a mass or a volume"
    )


#: the spelling of each dimension's base unit in readings (``_parse`` reads all three)
_BASE_SPELLING = {Dimension.ENERGY: "MWh", Dimension.MASS: "t", Dimension.VOLUME: "m3"}


@functools.lru_cache(maxsize=256)
def rate_quantity_unit(rate_unit: str) -> tuple[str, float]:
    """(quantity unit, quantity per hour at a rate of 1 ``rate_unit``) for a rate unit.

    ``kW`` -> ("MWh", 0.001), ``t/h`` -> ("t", 1.0), ``Nm3/h`` -> ("m3", 1.0): what a meter
    reporting a power or a flow delivers over time, in the dimension's base unit so the result
    goes through ``scale_to_canonical`` like any quantity. UnitError when it is not a rate of
    an energy, a mass or a volume.
    """
    text = rate_unit.strip()
    if "/" in text:
        num, den = (p.strip() for p in text.split("/", 1))
        text = f"({_ALIASES.get(num, num)}) / ({den})"
    try:
        per_hour = ureg.Quantity(1.0, text) * ureg.Quantity(1.0, "hour")
    except Exception as e:  # pint raises assorted parser errors on junk input
        raise UnitError(f"unknown rate unit {rate_unit!r}: {e}") from e
    for dim, base in _BASE.items():
        try:
            return _BASE_SPELLING[dim], float(per_hour.to(base).magnitude)
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
    density_t_per_m3: float | None  # at the reference conditions of its volume unit
    source: str


@functools.cache
def carrier_properties() -> dict[Carrier, CarrierProperties]:
    """Net calorific values and densities, loaded once from the factor library."""
    text = resources.files("twin.factors").joinpath("carrier_properties.yaml").read_text()
    raw: dict[str, Any] = yaml.safe_load(text)
    gj_per_mwh = float(ureg.Quantity(1.0, "MWh").to("GJ").magnitude)
    out: dict[Carrier, CarrierProperties] = {}
    for name, props in raw["carriers"].items():
        ncv = props.get("ncv_gj_per_t")
        out[Carrier(name)] = CarrierProperties(
            ncv_mwh_per_t=None if ncv is None else float(ncv) / gj_per_mwh,
            density_t_per_m3=props.get("density_t_per_m3"),
            source=str(props.get("source", "")),
        )
    return out


@functools.lru_cache(maxsize=4096)
def scale_to_canonical(carrier: Carrier | str, unit: str) -> float:
    """Multiplier taking a quantity in ``unit`` to ``carrier``'s canonical unit.

    Raises UnitError when the unit cannot measure the carrier. Cached, so callers may call it
    per batch or per reading at dictionary-lookup cost.
    """
    carrier = Carrier(carrier)  # also validates a plain string
    dim, to_base = _parse(unit)
    if carrier is Carrier.PROCESS_CO2:
        if dim is Dimension.MASS:
            return to_base
        raise UnitError(f"unit {unit!r} is a {dim.value}; process_co2 is metered as a mass")
    if dim is Dimension.ENERGY:
        return to_base
    props = carrier_properties().get(carrier)
    if props is None or props.ncv_mwh_per_t is None:
        raise UnitError(
            f"unit {unit!r} is a {dim.value}; {carrier.value} must be metered in energy units"
        )
    if dim is Dimension.MASS:
        return to_base * props.ncv_mwh_per_t
    if props.density_t_per_m3 is None:
        raise UnitError(f"unit {unit!r} is a volume; no density is defined for {carrier.value}")
    return to_base * props.density_t_per_m3 * props.ncv_mwh_per_t


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
