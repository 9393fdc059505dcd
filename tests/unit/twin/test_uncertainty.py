"""IPCC Approach 1 propagation (twin.uncertainty), worked by hand, and the factors' own."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twin.factors import FactorError, FactorLibrary, default_library, load_gwp_sets
from twin.uncertainty import Uncertain, product, total


def test_a_product_adds_relative_uncertainties_in_quadrature() -> None:
    # 1,000 TJ of gas metered at +-2 % (an MRR tier) times 56.1 t/TJ at +-3.9 %
    e = product(Uncertain(1000.0, 2.0), Uncertain(56.1, 3.9))
    assert e.value == pytest.approx(56_100.0)
    assert e.pct == pytest.approx(math.sqrt(2.0**2 + 3.9**2))  # 4.3829 %
    assert e.pct == pytest.approx(4.38292, abs=1e-5)
    assert not e.approximate


def test_a_sum_adds_absolute_uncertainties_in_quadrature() -> None:
    # worked by hand: 56,100 t +-4.3829 % (2,458.8 t) and 94,600 t +-5.7689 % (5,457.4 t)
    gas = Uncertain(56_100.0, 4.382921)
    coal = Uncertain(94_600.0, 5.768882)
    s = total([gas, coal])
    assert s.value == pytest.approx(150_700.0)
    expected_half = math.hypot(56_100 * 0.04382921, 94_600 * 0.05768882)  # 5,985.7 t
    assert s.absolute == pytest.approx(expected_half)
    assert s.pct == pytest.approx(100 * expected_half / 150_700)  # 3.972 %
    assert s.pct == pytest.approx(3.972, abs=1e-3)
    assert s.interval() == pytest.approx((150_700 - expected_half, 150_700 + expected_half))


def test_unknown_is_never_taken_for_exact() -> None:
    assert product(Uncertain(10.0, 2.0), Uncertain(3.0, None)).pct is None
    assert total([Uncertain(10.0, 2.0), Uncertain(3.0, None)]).pct is None
    # a term of zero contributes nothing, declared or not
    assert total([Uncertain(10.0, 2.0), Uncertain(0.0, None)]).pct == pytest.approx(2.0)


def test_outside_approach_1_the_result_says_so() -> None:
    assert product(Uncertain(1.0, 200.0), Uncertain(2.0, 1.0)).approximate  # CH4 factors
    assert total([Uncertain(10.0, 5.0), Uncertain(-9.0, 5.0)]).approximate  # a credit
    assert not total([Uncertain(10.0, 5.0), Uncertain(9.0, 5.0)]).approximate
    with pytest.raises(ValueError, match="percentage"):
        Uncertain(1.0, -1.0)


@given(st.lists(st.tuples(st.floats(1e-3, 1e9), st.floats(0, 50)), min_size=1, max_size=20))
def test_a_sum_of_like_terms_is_never_less_certain_than_its_worst_term(
    terms: list[tuple[float, float]],
) -> None:
    s = total(Uncertain(v, p) for v, p in terms)
    assert s.pct is not None
    assert s.pct <= max(p for _, p in terms) + 1e-9
    # and never below what the biggest term alone contributes
    assert s.absolute is not None
    assert s.absolute >= max(v * p / 100 for v, p in terms) - 1e-6 * s.value


def test_the_shipped_ipcc_factors_carry_their_table_ranges() -> None:
    lib = default_library()
    gwp = load_gwp_sets()["AR5"]
    gas = lib.get("ipcc2006:energy_industries:natural_gas")
    assert gas.uncertainty_pct == {"CO2": 3.9, "CH4": 200.0, "N2O": 200.0}
    u = gas.co2e_uncertain(gwp)
    assert u.value == pytest.approx(gas.co2e(gwp))
    # by hand per TJ: CO2 56.1 t +-3.9 %; CH4 0.001 t x 28 (AR5) +-200 %; N2O 0.0001 t
    # x 265 +-200 %
    parts = [(56.1, 3.9), (0.001 * 28, 200), (0.0001 * 265, 200)]
    half = math.sqrt(sum((v * p / 100) ** 2 for v, p in parts))
    tj = u.value / sum(v for v, _ in parts)  # the factor is per canonical unit, not per TJ
    assert u.absolute == pytest.approx(half * tj, rel=1e-9)
    assert u.approximate  # CH4 and N2O are beyond Approach 1's range
    # a factor without declared ranges is unknown, not exact
    assert lib.get("ipcc2006:energy_industries:fuel_oil").co2e_uncertain(gwp).pct is None


def test_a_library_uncertainty_for_a_gas_the_factor_lacks_is_refused_by_name() -> None:
    doc = {
        "kind": "combustion",
        "region": "GLOBAL",
        "year": 2006,
        "version": "x",
        "unit": "kg/TJ",
        "factors": [
            {
                "id": "t:gas",
                "carrier": "natural_gas",
                "category": "energy_industries",
                "source": "test",
                "values": {"CO2": 56100},
                "uncertainty_pct": {"CO2": -1, "SF6": 5},
            }
        ],
    }
    with pytest.raises(FactorError) as err:
        FactorLibrary.from_documents([("lib.yaml", doc)])
    assert "t:gas" in str(err.value) and "uncertainty_pct" in str(err.value)
