"""Unit conversion. Reference values: SI/pint definitions (1 MWh = 3.6 GJ, 1 therm =
105.5056 MJ, 1 Btu = 1055.056 J) and IPCC 2006 Vol. 2 Table 1.2 net calorific values
(natural gas 48.0 GJ/t, other bituminous coal 25.8 GJ/t, gas/diesel oil 43.0 GJ/t),
hydrogen LHV 119.96 MJ/kg (US DOE)."""

from __future__ import annotations

import numpy as np
import pytest

from twin.carriers import (
    CANONICAL_UNIT,
    Carrier,
    UnitError,
    scale_to_canonical,
    to_canonical,
    unit_is_compatible,
)


@pytest.mark.parametrize("carrier", [c for c in Carrier if c is not Carrier.PROCESS_CO2])
def test_every_energy_carrier_takes_energy_units(carrier: Carrier) -> None:
    assert CANONICAL_UNIT[carrier] == "MWh"
    assert unit_is_compatible(carrier, "kWh")
    np.testing.assert_allclose(to_canonical(carrier, [3.6, 7.2], "GJ"), [1.0, 2.0])
    assert not unit_is_compatible(carrier, "s")  # a time is never a quantity of a carrier


@pytest.mark.parametrize(
    ("unit", "mwh"),
    [
        ("MWh", 1.0),
        ("kWh", 1e-3),
        ("GWh", 1e3),
        ("TJ", 1e6 / 3600),
        ("therm", 0.0293071),
        ("MMBtu", 0.2930711),
        ("toe", 11.63),
    ],
)
def test_energy_units(unit: str, mwh: float) -> None:
    assert scale_to_canonical(Carrier.NATURAL_GAS, unit) == pytest.approx(mwh, rel=1e-6)


@pytest.mark.parametrize(
    ("carrier", "unit", "mwh"),
    [
        (Carrier.NATURAL_GAS, "t", 48.0 / 3.6),
        (Carrier.COAL, "t", 25.8 / 3.6),
        (Carrier.DIESEL, "L", 0.84e-3 * 43.0 / 3.6),  # density 0.84 kg/L
        (Carrier.DIESEL, "m3", 0.84 * 43.0 / 3.6),
        (Carrier.HYDROGEN, "kg", 0.11996 / 3.6),
        (Carrier.NATURAL_GAS, "Nm3", 0.75e-3 * 48.0 / 3.6),  # 36 MJ/Nm3
    ],
)
def test_mass_and_volume_use_ncv_and_density(carrier: Carrier, unit: str, mwh: float) -> None:
    assert scale_to_canonical(carrier, unit) == pytest.approx(mwh, rel=1e-9)


def test_process_co2_is_mass_and_kt_is_kilotonne_not_knot() -> None:
    assert CANONICAL_UNIT[Carrier.PROCESS_CO2] == "t"
    np.testing.assert_allclose(to_canonical(Carrier.PROCESS_CO2, [1.5], "kt"), [1500.0])
    np.testing.assert_allclose(to_canonical("process_co2", [2.0], "Mt"), [2e6])
    np.testing.assert_allclose(to_canonical("process_co2", [250.0], "kg"), [0.25])
    assert not unit_is_compatible(Carrier.PROCESS_CO2, "MWh")


@pytest.mark.parametrize(
    ("carrier", "unit"),
    [
        (Carrier.STEAM, "t"),  # steam enthalpy depends on conditions: meter it in energy
        (Carrier.ELECTRICITY, "t"),
        (Carrier.COAL, "m3"),  # no bulk density on file
        (Carrier.NATURAL_GAS, "parsec"),
        (Carrier.NATURAL_GAS, "no-such-unit"),
        (Carrier.NATURAL_GAS, ""),
    ],
)
def test_incompatible_units(carrier: Carrier, unit: str) -> None:
    assert not unit_is_compatible(carrier, unit)
    with pytest.raises(UnitError):
        scale_to_canonical(carrier, unit)


def test_to_canonical_is_vectorised_and_float64() -> None:
    values = np.arange(100_000, dtype=np.int64)
    out = to_canonical(Carrier.ELECTRICITY, values, "kWh")
    assert out.dtype == np.float64
    assert out.shape == values.shape
    assert out[12_345] == pytest.approx(12.345)
