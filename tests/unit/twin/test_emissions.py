"""Emissions per carrier and scope, transfers netting and provenance, with hand-checked numbers.

Factors used (see twin/factors): IPCC 2006 natural gas 0.20216556 tCO2e/MWh in AR6 (see
test_factors); French grid 36 gCO2/kWh (RTE Bilan electrique 2021); purchased steam/heat =
gas factor / 0.80 (GHG Protocol purchased-steam default efficiency) = 0.252706950 tCO2e/MWh;
SMR hydrogen 9.35 kgCO2e/kgH2 (Cho et al. 2022); electrolysis 52 kWh/kgH2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.emissions import EmissionsBatch, EmissionsCalculator
from twin.factors import FactorError
from twin.model import Cluster, load_cluster

from .conftest import make_cluster, meter, site

GAS_AR6 = 0.20196 + 3.6e-6 * 29.8 + 3.6e-7 * 273  # 0.20216556
GAS_AR5 = 0.20196 + 3.6e-6 * 28 + 3.6e-7 * 265
STEAM_AR6 = GAS_AR6 / 0.8


def _one(
    carrier: str,
    quantity: float,
    unit: str = "MWh",
    boundary: str = "import",
    gwp: str = "AR6",
    **kw: object,
) -> dict[str, float]:
    c = make_cluster(
        [site("s", meter("m", carrier, unit, boundary, annual_quantity=quantity, **kw))]
    )
    return EmissionsCalculator(c, gwp=gwp).annual().cluster_dict()


def test_natural_gas_scope1_both_gwp_sets() -> None:
    assert _one("natural_gas", 1000)["scope1"] == pytest.approx(1000 * GAS_AR6)
    assert _one("natural_gas", 1000, gwp="AR5")["scope1"] == pytest.approx(1000 * GAS_AR5)
    assert _one("natural_gas", 3.6, unit="GJ")["scope1"] == pytest.approx(GAS_AR6)


@pytest.mark.parametrize(
    ("carrier", "unit", "qty", "expected"),
    [
        # Coal 1 t = 25.8 GJ = 7.1667 MWh; 94,600 kg CO2 + 10 kg CH4 + 1.5 kg N2O per TJ (T2.3).
        ("coal", "t", 1.0, 0.0258 * (94.6 + 0.010 * 29.8 + 0.0015 * 273)),
        ("coking_coal", "t", 1.0, 0.0282 * (94.6 + 0.010 * 29.8 + 0.0015 * 273)),
        ("coke", "t", 1.0, 0.0282 * (107.0 + 0.010 * 29.8 + 0.0015 * 273)),
        ("fuel_oil", "t", 1.0, 0.0404 * (77.4 + 0.003 * 29.8 + 0.0006 * 273)),
        ("diesel", "t", 1.0, 0.0430 * (74.1 + 0.003 * 29.8 + 0.0006 * 273)),
        ("gasoline", "t", 1.0, 0.0443 * (69.3 + 0.003 * 29.8 + 0.0006 * 273)),
        ("lpg", "t", 1.0, 0.0473 * (63.1 + 0.001 * 29.8 + 0.0001 * 273)),
        ("naphtha", "t", 1.0, 0.0445 * (73.3 + 0.003 * 29.8 + 0.0006 * 273)),
        ("petroleum_coke", "t", 1.0, 0.0325 * (97.5 + 0.003 * 29.8 + 0.0006 * 273)),
        ("refinery_gas", "t", 1.0, 0.0495 * (57.6 + 0.001 * 29.8 + 0.0001 * 273)),
        ("blast_furnace_gas", "TJ", 1.0, 260.0 + 0.001 * 29.8 + 0.0001 * 273),
        ("coke_oven_gas", "TJ", 1.0, 44.4 + 0.001 * 29.8 + 0.0001 * 273),
        ("biomass", "TJ", 1.0, 0.030 * 27.0 + 0.004 * 273),  # biogenic CO2 not in scope 1
        ("process_co2", "t", 5.0, 5.0),  # onsite_generation below
    ],
)
def test_scope1_for_every_fuel(carrier: str, unit: str, qty: float, expected: float) -> None:
    boundary = "onsite_generation" if carrier == "process_co2" else "import"
    got = _one(carrier, qty, unit=unit, boundary=boundary)
    assert got["scope1"] == pytest.approx(expected, rel=1e-9)
    assert got["scope2_location"] == got["scope2_market"] == 0.0


@pytest.mark.parametrize(
    ("carrier", "qty", "loc", "kw"),
    [
        ("electricity", 1000, 36.0, {}),
        ("shore_power", 500, 18.0, {}),
        ("steam", 100, 100 * STEAM_AR6, {}),
        ("heat", 100, 100 * STEAM_AR6, {}),
    ],
)
def test_scope2_location_and_market(
    carrier: str, qty: float, loc: float, kw: dict[str, Any]
) -> None:
    got = _one(carrier, qty, **kw)
    assert got["scope1"] == 0.0
    assert got["scope2_location"] == pytest.approx(loc)
    assert got["scope2_market"] == pytest.approx(loc)  # no supplier factor: location fallback


def test_market_based_supplier_factor() -> None:
    got = _one("electricity", 1000, supplier_factor_id="supplier:renewable-eac")
    assert got["scope2_location"] == pytest.approx(36.0)
    assert got["scope2_market"] == 0.0
    cluster_factor = {
        "id": "contract:x",
        "carrier": "electricity",
        "tco2e_per_unit": 0.1,
        "year": 2021,
        "source": "supplier disclosure",
    }
    c = make_cluster(
        [
            site(
                "s",
                meter("m", "electricity", annual_quantity=1000, supplier_factor_id="contract:x"),
            )
        ],
        factors=[cluster_factor],
    )
    assert EmissionsCalculator(c).annual().cluster_dict()["scope2_market"] == pytest.approx(100.0)


def test_hydrogen_by_route_is_upstream_scope3() -> None:
    smr = _one("hydrogen", 1.0, unit="t", route="smr")
    assert smr["scope1"] == 0.0
    assert smr["scope3_upstream"] == pytest.approx(9.35)
    # Electrolysis on the French grid: 1,000 kg x 52 kWh/kg x 36 g/kWh = 1.872 t.
    assert _one("hydrogen", 1.0, unit="t", route="electrolysis_grid")["scope3_upstream"] == (
        pytest.approx(1.872)
    )
    assert _one("hydrogen", 1.0, unit="t", route="electrolysis_renewable")["scope3_upstream"] == 0


def test_generation_export_and_receipts_carry_nothing_or_credit() -> None:
    assert _one("electricity", 1000, boundary="onsite_generation")["scope2_location"] == 0.0
    assert _one("electricity", 1000, boundary="export")["scope1"] == 0.0
    assert _one("natural_gas", 1000, boundary="onsite_generation")["scope1"] == 0.0
    assert _one("process_co2", 7.0, unit="t", boundary="import")["scope1"] == 0.0
    assert _one("process_co2", 7.0, unit="t", boundary="export")["scope1"] == -7.0


def _transfer_cluster() -> Cluster:
    return make_cluster(
        [
            site(
                "power",
                meter("p-gas", "natural_gas", annual_quantity=1000),
                meter(
                    "p-el", "electricity", boundary="transfer", to_site="steel", annual_quantity=400
                ),
                meter(
                    "p-steam", "steam", boundary="transfer", to_site="steel", annual_quantity=100
                ),
            ),
            site(
                "steel",
                meter("s-coal", "coal", unit="t", annual_quantity=100),
                meter(
                    "s-bfg",
                    "blast_furnace_gas",
                    unit="TJ",
                    boundary="transfer",
                    to_site="power",
                    annual_quantity=1,
                ),
                meter(
                    "s-co2",
                    "process_co2",
                    unit="t",
                    boundary="transfer",
                    to_site="ccs",
                    annual_quantity=50,
                ),
            ),
            site(
                "ccs",
                meter("c-store", "process_co2", unit="t", boundary="export", annual_quantity=45),
            ),
        ]
    )


def test_transfers_are_netted_at_cluster_level_and_views_reconcile() -> None:
    calc = EmissionsCalculator(_transfer_cluster())
    t = calc.annual()
    coal = 0.0258 * (94.6 + 0.010 * 29.8 + 0.0015 * 273) * 100
    bfg = 260.0 + 0.001 * 29.8 + 0.0001 * 273
    gas = 1000 * GAS_AR6
    # Cluster: everything burned once, minus the 45 t shipped to storage; the 5 t not
    # stored stays on the CCS site's books.
    assert t.cluster_dict()["scope1"] == pytest.approx(gas + coal - 45)
    # Internal electricity (400 MWh x 36 g) and steam are eliminated at cluster level...
    assert t.cluster_dict()["scope2_location"] == 0.0
    assert t.eliminations[1] == pytest.approx(400 * 0.036 + 100 * STEAM_AR6)
    # ... but are scope 2 in the steelworks' own view.
    steel, power, ccs = t.site("steel"), t.site("power"), t.site("ccs")
    assert steel["scope2_location"] == pytest.approx(400 * 0.036 + 100 * STEAM_AR6)
    # Blast furnace gas burned by the power plant moves from steel to power.
    assert steel["scope1"] == pytest.approx(coal - bfg - 50)
    assert power["scope1"] == pytest.approx(gas + bfg)
    assert ccs["scope1"] == pytest.approx(50 - 45)
    # Site views minus eliminations equal the cluster view, scope by scope.
    np.testing.assert_allclose(t.sites.sum(axis=1) - t.eliminations, t.cluster, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["dunkirk", "teda", "rotterdam"]), st.integers(0, 2**32 - 1))
def test_reconciliation_identity_holds_for_any_activity(cluster_id: str, seed: int) -> None:
    calc = EmissionsCalculator(load_cluster(cluster_id))
    q = np.random.default_rng(seed).uniform(0, 1e6, calc.n_meters)
    t = calc.annual(q)
    np.testing.assert_allclose(
        t.sites.sum(axis=1) - t.eliminations, t.cluster, rtol=1e-12, atol=1e-6
    )


def test_batch_equals_per_reading_computation() -> None:
    calc = EmissionsCalculator(load_cluster("dunkirk"))
    rng = np.random.default_rng(7)
    idx = rng.integers(0, calc.n_meters, 10_000)
    qty = rng.uniform(0, 100, 10_000)
    batch = calc.compute(idx, qty)
    for k in (0, 17, 9_999):
        for s in range(4):
            assert batch.matrix[s, k] == calc.coef[s, idx[k]] * qty[k]
    # Aggregating a batch equals aggregating the per-meter sums.
    per_meter = np.bincount(idx, weights=qty, minlength=calc.n_meters)
    a = calc.aggregate(idx, batch)
    b = calc.aggregate(np.arange(calc.n_meters), calc.compute(np.arange(calc.n_meters), per_meter))
    np.testing.assert_allclose(a.sites, b.sites)
    np.testing.assert_allclose(a.cluster, b.cluster)


def test_compute_in_meter_units_converts() -> None:
    c = make_cluster([site("s", meter("m", "electricity", unit="kWh"))])
    calc = EmissionsCalculator(c)
    assert calc.compute_in_meter_units([0], [1_000_000.0]).scope2_location[0] == pytest.approx(36)


def test_provenance_names_factor_version_gwp_and_scope() -> None:
    calc = EmissionsCalculator(load_cluster("dunkirk"), gwp="AR5")
    (p,) = calc.provenance("sw-natgas")
    assert (p.scope, p.factor_id, p.factor_version, p.gwp) == (
        "scope1",
        "ipcc2006:manufacturing:natural_gas",
        "2006",
        "AR5",
    )
    assert "Table 2.3" in p.factor_source
    loc, mkt = calc.provenance("h2-asu-power")
    assert (loc.scope, loc.factor_id) == ("scope2_location", "grid:FR:2021")
    assert (mkt.scope, mkt.factor_id, mkt.tco2e_per_unit) == (
        "scope2_market",
        "supplier:renewable-eac",
        0.0,
    )
    (internal,) = calc.provenance("h2-to-steel")
    assert internal.attributed_site == "steelworks" and "eliminated" in internal.note
    assert calc.provenance("pw-power-export") == []
    assert calc.factor_ids()[calc.position("sw-natgas")] == p.factor_id
    refs = calc.factor_refs()
    assert refs["scope1"][calc.position("sw-natgas")] == "ipcc2006:manufacturing:natural_gas@2006"
    assert refs["scope2_market"][calc.position("h2-asu-power")] == "supplier:renewable-eac@1"
    assert refs["scope2_location"][calc.position("sw-natgas")] == ""


def test_grid_override_and_year_selection() -> None:
    c = make_cluster(
        [site("s", meter("m", "electricity", annual_quantity=1000))],
        grid_zone="CN",
        reference_year=2023,
    )
    assert EmissionsCalculator(c).annual().cluster_dict()["scope2_location"] == pytest.approx(570.3)
    assert EmissionsCalculator(c, year=2021).annual().cluster[1] == pytest.approx(581.0)
    over = EmissionsCalculator(c, grid_overrides={"CN": 0.1}).annual()
    assert over.cluster[1] == pytest.approx(100.0)


def test_errors_name_the_meter() -> None:
    c = make_cluster([site("s", meter("m", "electricity"))], grid_zone="XX")
    with pytest.raises(FactorError, match=r"meter 'm' \(site 's'\): no grid factor for zone 'XX'"):
        EmissionsCalculator(c)
    with pytest.raises(FactorError, match="unknown GWP set"):
        EmissionsCalculator(load_cluster("dunkirk"), gwp="AR9")
    bad = make_cluster([site("s", meter("m", "electricity", factor_id="steam:natural_gas_boiler"))])
    with pytest.raises(FactorError, match="is for steam, meter measures electricity"):
        EmissionsCalculator(bad)


def test_transferred_fuel_takes_the_combusting_sites_table() -> None:
    """Defect 3 (issue 16): coal a steelworks (Table 2.3, manufacturing) sends to a power
    plant (Table 2.2, energy industries) is burned by the plant: 1 CH4 kg/TJ, not 10."""
    c = make_cluster(
        [
            site(
                "steel",
                meter("s-coal", "coal", unit="TJ", boundary="transfer", to_site="power"),
                combustion_category="manufacturing",
            ),
            site("power", meter("p-gas", "natural_gas"), combustion_category="energy_industries"),
        ]
    )
    calc = EmissionsCalculator(c)
    (prov,) = calc.provenance("s-coal")
    assert prov.factor_id == "ipcc2006:energy_industries:coal"
    t = calc.annual(np.array([1.0, 0.0]))
    # 1 TJ: 94.6 t CO2 + 0.001 t CH4 + 0.0015 t N2O (Table 2.2), AR6 GWPs
    assert t.site("power")["scope1"] == pytest.approx(94.6 + 0.001 * 29.8 + 0.0015 * 273, rel=1e-9)
    assert t.site("steel")["scope1"] == pytest.approx(-t.site("power")["scope1"], rel=1e-12)


# ---- per gas (issue 16, "what to build" 1): IPCC 2006 Vol. 2 Tables 2.2/2.3 by hand -------

GWP = {
    "AR5": {"ch4": 28.0, "ch4_bio": 28.0, "n2o": 265.0},
    "AR6": {"ch4": 29.8, "ch4_bio": 27.0, "n2o": 273.0},
}


def _gases(
    carrier: str, category: str, gwp: str, tj: float = 1.0
) -> tuple[dict[str, float], float]:
    c = make_cluster(
        [
            site(
                "s",
                meter("m", carrier, unit="TJ", annual_quantity=tj),
                combustion_category=category,
            )
        ]
    )
    t = EmissionsCalculator(c, gwp=gwp).annual()
    return t.site_gases("s"), t.site("s")["scope1"]


@pytest.mark.parametrize("gwp", ["AR5", "AR6"])
@pytest.mark.parametrize(
    ("carrier", "category", "co2", "ch4", "n2o", "bio"),
    [
        # Table 2.2, natural gas: 56,100 kg CO2, 1 kg CH4, 0.1 kg N2O per TJ
        ("natural_gas", "energy_industries", 56.1, 0.001, 0.0001, 0.0),
        # Table 2.3, other bituminous coal in manufacturing: CH4 10 kg/TJ (2.2: 1 kg/TJ)
        ("coal", "manufacturing", 94.6, 0.010, 0.0015, 0.0),
        ("coal", "energy_industries", 94.6, 0.001, 0.0015, 0.0),
        # Table 2.2, wood: 112,000 kg CO2 (biogenic: memo only), 30 kg CH4, 4 kg N2O per TJ
        ("biomass", "energy_industries", 0.0, 0.030, 0.004, 112.0),
    ],
)
def test_scope1_by_gas_is_the_ipcc_table_and_co2e_is_their_gwp_sum(
    gwp: str, carrier: str, category: str, co2: float, ch4: float, n2o: float, bio: float
) -> None:
    gases, scope1 = _gases(carrier, category, gwp, tj=2.0)
    assert gases["co2"] == pytest.approx(2 * co2, rel=1e-9, abs=0)
    assert gases["ch4"] == pytest.approx(2 * ch4, rel=1e-9)
    assert gases["n2o"] == pytest.approx(2 * n2o, rel=1e-9)
    assert gases["co2_biogenic"] == pytest.approx(2 * bio, rel=1e-9, abs=0)
    assert gases["co2_captured"] == 0.0 and gases["co2e_other"] == 0.0
    g = GWP[gwp]
    ch4_gwp = g["ch4_bio"] if bio else g["ch4"]
    # biogenic CO2 is never in scope 1: CO2e is fossil CO2 + CH4 x GWP + N2O x GWP
    assert scope1 == pytest.approx(2 * (co2 + ch4 * ch4_gwp + n2o * g["n2o"]), rel=1e-9)


def test_co2_sent_to_storage_is_a_line_apart_from_gross_scope1() -> None:
    t = EmissionsCalculator(_transfer_cluster()).annual()
    ccs, steel = t.site_gases("ccs"), t.site_gases("steel")
    # the CCS site receives 50 t of process CO2 and sends 45 t to the store
    assert ccs["co2"] == pytest.approx(50.0) and ccs["co2_captured"] == pytest.approx(45.0)
    net = t.site("ccs")["scope1"]
    assert net == pytest.approx(ccs["co2"] - ccs["co2_captured"])  # gross - captured
    assert steel["co2"] == pytest.approx(0.0258 * 94.6 * 100 - 260.0 - 50.0)
    assert t.cluster_gases()["co2_captured"] == pytest.approx(45.0)
    # the gas lines make scope 1 at every site and for the cluster (AR6 weights)
    for sid in t.site_ids:
        g = t.site_gases(sid)
        want = g["co2"] + g["ch4"] * 29.8 + g["n2o"] * 273 + g["co2e_other"] - g["co2_captured"]
        assert t.site(sid)["scope1"] == pytest.approx(want, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("gwp", ["AR5", "AR6"])
@pytest.mark.parametrize("cluster_id", ["dunkirk", "teda", "rotterdam"])
def test_scope1_is_the_gwp_weighted_sum_of_its_gases_for_every_meter(
    cluster_id: str, gwp: str
) -> None:
    calc = EmissionsCalculator(load_cluster(cluster_id), gwp=gwp)
    np.testing.assert_allclose(
        (calc.gas_coef * calc.gas_gwp).sum(axis=0), calc.coef[0], rtol=1e-12, atol=1e-15
    )


def test_gases_batch_equals_per_reading_and_per_meter_sums() -> None:
    calc = EmissionsCalculator(load_cluster("dunkirk"))
    rng = np.random.default_rng(11)
    idx = rng.integers(0, calc.n_meters, 5_000)
    qty = rng.uniform(0, 100, 5_000)
    m = calc.compute_figures(idx, qty)
    for k in (0, 123, 4_999):  # the scalar path: one meter's coefficients times its reading
        i = int(idx[k])
        scalar = [calc.coef[s, i] * qty[k] for s in range(4)]
        scalar += [calc.gas_coef[g, i] * qty[k] for g in range(calc.gas_coef.shape[0])]
        assert m[:, k].tolist() == scalar
    per_meter = np.bincount(idx, weights=qty, minlength=calc.n_meters)
    a = calc.aggregate(idx, EmissionsBatch(m[:4]), m[4:])
    all_m = np.arange(calc.n_meters)
    b = calc.aggregate(
        all_m, calc.compute(all_m, per_meter), calc.compute_figures(all_m, per_meter)[4:]
    )
    np.testing.assert_allclose(a.gas_sites, b.gas_sites, rtol=1e-9)
    np.testing.assert_allclose(a.gas_cluster, b.gas_cluster, rtol=1e-9)
