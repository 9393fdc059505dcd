"""The factor library. Hand checks (AR6 GWP100: CH4 fossil 29.8, non-fossil 27.0, N2O 273;
AR5: CH4 28, N2O 265 -- IPCC AR6 WG1 Table 7.15, AR5 WG1 Table 8.A.1):

natural gas, IPCC 2006 Vol. 2 Table 2.2: 56,100 kg CO2, 1 kg CH4, 0.1 kg N2O per TJ.
1 MWh = 0.0036 TJ -> 0.20196 t CO2 + 3.6e-6 t CH4 + 3.6e-7 t N2O per MWh.
AR6: 0.20196 + 3.6e-6 * 29.8 + 3.6e-7 * 273 = 0.20216556 tCO2e/MWh.
AR5: 0.20196 + 3.6e-6 * 28 + 3.6e-7 * 265 = 0.2021562 tCO2e/MWh.
"""

from __future__ import annotations

import pytest

from twin.carriers import Carrier, HydrogenRoute
from twin.factors import FactorError, FactorLibrary, default_library, load_gwp_sets


def test_natural_gas_ipcc_default_in_both_gwp_sets() -> None:
    gwp = load_gwp_sets()
    f = default_library().combustion(Carrier.NATURAL_GAS, "energy_industries")
    assert f.gases["CO2"] == pytest.approx(0.20196)
    assert f.co2e(gwp["AR6"]) == pytest.approx(0.20216556, rel=1e-9)
    assert f.co2e(gwp["AR5"]) == pytest.approx(0.2021562, rel=1e-9)


def test_coal_ch4_differs_between_energy_and_manufacturing_tables() -> None:
    lib, ar6 = default_library(), load_gwp_sets()["AR6"]
    # CH4 1 kg/TJ (Table 2.2) vs 10 kg/TJ (Table 2.3); N2O 1.5 kg/TJ; CO2 94,600 kg/TJ.
    energy = lib.combustion(Carrier.COAL, "energy_industries").co2e(ar6)
    manuf = lib.combustion(Carrier.COAL, "manufacturing").co2e(ar6)
    assert energy == pytest.approx(0.34056 + 3.6e-6 * 29.8 + 5.4e-6 * 273)
    assert manuf == pytest.approx(0.34056 + 3.6e-5 * 29.8 + 5.4e-6 * 273)


def test_biomass_co2_is_biogenic_and_its_methane_non_fossil() -> None:
    f = default_library().combustion(Carrier.BIOMASS, "manufacturing")
    # 112,000 kg CO2 (memo), 30 kg CH4, 4 kg N2O per TJ.
    assert f.co2e(load_gwp_sets()["AR6"]) == pytest.approx(0.000108 * 27.0 + 0.0000144 * 273)


def test_every_factor_carries_provenance_fields() -> None:
    lib = default_library()
    assert len(lib) > 30
    for f in lib:
        assert f.id and f.source and f.version and f.region and f.year > 1990, f.id


def test_every_fuel_has_combustion_factors_in_both_tables() -> None:
    from twin.model import FUELS

    for c in FUELS:
        for cat in ("energy_industries", "manufacturing"):
            assert default_library().combustion(c, cat).carrier is c


def test_grid_factor_selection_by_year() -> None:
    lib = default_library()
    assert lib.grid("CN", 2022).id == "grid:CN:2022"
    assert lib.grid("CN", 2030).id == "grid:CN:2022"  # latest earlier
    assert lib.grid("CN", 2020).id == "grid:CN:2021"  # none earlier: earliest later
    assert lib.grid("FR", 2021).co2e(load_gwp_sets()["AR6"]) == pytest.approx(0.036)
    with pytest.raises(FactorError, match="no grid factor for zone 'XX'"):
        lib.grid("XX", 2021)


def test_purchased_steam_is_derived_from_gas_at_80pct_boiler_efficiency() -> None:
    steam = default_library().get("steam:natural_gas_boiler")
    assert steam.gases["CO2"] == pytest.approx(0.20196 / 0.8)
    assert "ipcc2006:energy_industries:natural_gas" in steam.note


def test_hydrogen_routes() -> None:
    lib, ar6 = default_library(), load_gwp_sets()["AR6"]
    mwh_per_kg = 0.11996 / 3.6
    # 9.35 kgCO2e/kgH2 -> per MWh H2 (LHV).
    assert lib.hydrogen(HydrogenRoute.SMR).co2e(ar6) == pytest.approx(9.35e-3 / mwh_per_kg)
    assert lib.hydrogen(HydrogenRoute.SMR_CCS).co2e(ar6) == pytest.approx(0.935e-3 / mwh_per_kg)
    el = lib.hydrogen(HydrogenRoute.ELECTROLYSIS_GRID)
    assert el.electricity_per_unit == pytest.approx(0.052 / mwh_per_kg)
    assert lib.hydrogen(HydrogenRoute.ELECTROLYSIS_RENEWABLE).co2e(ar6) == 0.0


def test_gwp_sets() -> None:
    sets = load_gwp_sets()
    assert {"AR4", "AR5", "AR6"} <= set(sets)
    assert sets["AR6"].values["N2O"] == 273
    assert sets["AR5"].values["CH4_fossil"] == 28
    assert sets["AR4"].values["CH4_fossil"] == 25


def _doc(**entry: object) -> list[tuple[str, dict[str, object]]]:
    return [("x.yaml", {"factors": [entry]})]


def test_library_rejects_bad_factor_documents() -> None:
    base = {
        "id": "f",
        "kind": "grid",
        "carrier": "electricity",
        "region": "ZZ",
        "year": 2020,
        "version": "1",
        "source": "s",
    }
    FactorLibrary.from_documents(_doc(**base, unit="g/kWh", values={"CO2": 100}))
    with pytest.raises(FactorError, match=r"x.yaml: factors\[0\]\(f\): carrier"):
        FactorLibrary.from_documents(_doc(**{**base, "carrier": "plutonium"}))
    with pytest.raises(FactorError, match="unit"):
        FactorLibrary.from_documents(_doc(**base, unit="g/s", values={"CO2": 1}))
    with pytest.raises(FactorError, match="unknown factor 'nope'"):
        FactorLibrary.from_documents(_doc(**base, derived_from="nope", efficiency=0.8))
    with pytest.raises(FactorError, match="duplicate factor id"):
        FactorLibrary.from_documents(
            [("a", {"factors": [{**base, "unit": "t/MWh", "values": {"CO2": 1}}] * 2})]
        )
