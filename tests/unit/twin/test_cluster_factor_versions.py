"""A cluster file's own factors have versions and validity periods, under the library's rules.

Worked by hand: a supplier contract of 10 kgCO2e/MWh is renegotiated to 20 kgCO2e/MWh from
1 July 2026. A grid meter with that supplier factor reads
    30 June 23:45 UTC   1.5 MWh   market 0.015 t, stays (before the new version)
     1 July 00:00 UTC   2 MWh     market 0.020 t -> 0.040 t
so the market-based scope 2 gains 0.020 t; the location-based one (the grid factor) is
untouched.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from tests.unit.twin.conftest import make_cluster, meter, site
from twin.emissions import EmissionsCalculator, library_for
from twin.factors import FactorError
from twin.model import Cluster, ClusterFileError
from twin.revision import affected_meters, restate_readings, revision_of

PPA = "supplier:test-ppa"


def _ppa(version: str, t_per_mwh: float, **kw: Any) -> dict[str, Any]:
    return {
        "id": PPA,
        "carrier": "electricity",
        "kind": "supplier",
        "tco2e_per_unit": t_per_mwh,
        "source": f"test contract v{version}",
        "year": 2026,
        "version": version,
        **kw,
    }


def _cluster(*factors: dict[str, Any]) -> Cluster:
    return make_cluster(
        [site("steel", meter("grid", "electricity", supplier_factor_id=PPA))],
        factors=list(factors),
    )


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_a_cluster_factor_may_have_a_second_version_picked_by_date() -> None:
    cluster = _cluster(_ppa("1", 0.010), _ppa("2", 0.020, valid_from="2026-07-01"))
    lib = library_for(cluster)
    assert [f.version for f in lib.versions(PPA)] == ["1", "2"]
    assert lib.at(PPA, date(2026, 6, 30)).co2e(EmissionsCalculator(cluster).gwp_set) == 0.010
    assert lib.at(PPA, date(2026, 7, 1)).version == "2"
    # the live pricing sees the newest version, as for library factors
    calc = EmissionsCalculator(cluster)
    [market] = [p for p in calc.provenance("grid") if p.scope == "scope2_market"]
    assert (market.factor_version, market.tco2e_per_unit) == ("2", 0.020)
    # giving the calculator a library that already holds the cluster's factors is harmless
    again = EmissionsCalculator(cluster, lib)
    assert again.coef.tolist() == calc.coef.tolist()


def test_a_cluster_factor_revision_restates_its_period_by_hand() -> None:
    cluster = _cluster(_ppa("1", 0.010), _ppa("2", 0.020, valid_from="2026-07-01"))
    lib = library_for(cluster)
    rev = revision_of(lib, PPA)
    assert (rev.old.version, rev.new.version, rev.start, rev.stop) == (
        "1",
        "2",
        date(2026, 7, 1),
        None,
    )
    meters = affected_meters(cluster, lib, rev)
    assert set(meters) == {"grid"}
    m = meters["grid"]
    assert (m.old[2], m.new[2]) == (0.010, 0.020) and m.old[1] == m.new[1]  # market only
    loc = round(1_500_000_000 * m.old[1]), round(2_000_000_000 * m.old[1])
    readings = [
        ("grid", _ms(2026, 6, 30, 23, 45), (1_500_000_000, 0, loc[0], 15_000_000) + (0,) * 7),
        ("grid", _ms(2026, 7, 1), (2_000_000_000, 0, loc[1], 20_000_000) + (0,) * 7),
    ]
    [row] = restate_readings(readings, meters, rev)
    assert row.readings == 1
    assert (row.old[3], row.new[3]) == (20_000_000, 40_000_000)
    assert row.new[2] == row.old[2] == loc[1]  # the location-based figure is not restated
    assert row.delta[3] == 20_000_000


def test_a_bounded_cluster_version_ends_at_its_valid_to() -> None:
    cluster = _cluster(
        _ppa("1", 0.010), _ppa("2", 0.020, valid_from="2026-07-01", valid_to="2026-08-01")
    )
    lib = library_for(cluster)
    assert revision_of(lib, PPA).stop == date(2026, 8, 1)
    with pytest.raises(FactorError, match="no version valid on 2026-08-01"):
        lib.at(PPA, date(2026, 8, 1))


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (_ppa("1", 0.020, valid_from="2026-07-01"), "same version '1'"),
        (_ppa("2", 0.020), "same valid_from None of version '1'"),
        (
            _ppa("2", 0.020, valid_from="2026-07-01", valid_to="2026-07-01"),
            "valid_to: 2026-07-01 must be after valid_from 2026-07-01",
        ),
    ],
)
def test_a_bad_cluster_version_is_refused_naming_cluster_factor_and_version(
    second: dict[str, Any], why: str
) -> None:
    with pytest.raises(ClusterFileError) as e:
        _cluster(_ppa("1", 0.010), second)
    message = str(e.value)
    assert f"factors[1]({PPA})" in message
    assert f"factor {PPA!r} version {second['version']!r} in cluster 't'" in message
    assert why in message


def test_a_cluster_version_of_a_library_factor_follows_the_same_rule() -> None:
    fr = {"id": "grid:FR:2021", "carrier": "electricity", "kind": "grid", "region": "FR",
          "tco2e_per_unit": 0.040, "source": "test", "year": 2021}  # fmt: skip
    with pytest.raises(ClusterFileError, match=r"same version '2022-02'.*shipped library"):
        make_cluster([site("s")], factors=[{**fr, "version": "2022-02"}])
    cluster = make_cluster(
        [site("s", meter("grid", "electricity"))],
        factors=[{**fr, "version": "2026-07", "valid_from": "2026-07-01"}],
    )
    rev = revision_of(library_for(cluster), "grid:FR:2021")
    assert (rev.old.version, rev.new.version) == ("2022-02", "2026-07")
    assert set(affected_meters(cluster, library_for(cluster), rev)) == {"grid"}
