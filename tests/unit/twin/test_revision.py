"""Factor revisions: versions with a validity period, and the restatement they make.

Golden case worked by hand: the French grid factor revised from 36 to 40 gCO2/kWh from
1 July 2026 (0.036 -> 0.040 t/MWh). A steelworks' grid meter reads
    30 June 23:45 UTC   1.5 MWh          stays at 0.036: 0.054 t
     1 July 00:00 UTC   2 MWh            0.072 t -> 0.080 t
    15 Aug  12:00 UTC   0.123456789 MWh  4,444,444 -> 4,938,272 nano-t
        (123,456,789 nano-MWh x 0.036 = 4,444,444.404; x 0.040 = 4,938,271.56)
So the year to date goes from 0.054 + 0.072 + 0.004444444 = 0.130444444 t to
0.054 + 0.080 + 0.004938272 = 0.138938272 t of scope 2 (location and, with no supplier
factor, market): 0.008493828 t restated, over the two readings of July and August.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.unit.twin.conftest import make_cluster, meter, site
from twin.factors import Factor, FactorError, FactorLibrary, default_library
from twin.revision import affected_meters, restate_readings, restated_figures, revision_of

FR = "grid:FR:2021"


def _revised(**kw: Any) -> FactorLibrary:
    base = default_library()
    body = {"version": "2026-07", "valid_from": date(2026, 7, 1), "gases": {"CO2": 0.040}, **kw}
    return base.with_factors([base.get(FR).model_copy(update=body)])


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _reading(meter_id: str, ts: int, mwh_nano: int, per_mwh: float) -> tuple[str, int, tuple]:
    s2 = round(mwh_nano * per_mwh)
    return (meter_id, ts, (mwh_nano, 0, s2, s2, 0, 0, 0, 0, 0, 0, 0))


def test_the_version_valid_on_a_date_is_picked_and_lookups_see_the_newest() -> None:
    lib = _revised()
    assert [f.version for f in lib.versions(FR)] == ["2022-02", "2026-07"]
    assert lib.at(FR, date(2026, 6, 30)).version == "2022-02"
    assert lib.at(FR, date(2026, 7, 1)).version == "2026-07"
    assert lib.get(FR).version == "2026-07" and lib.grid("FR").version == "2026-07"
    assert lib.pinned(lib.versions(FR)[0]).get(FR).version == "2022-02"
    bounded = _revised(valid_to=date(2026, 10, 1))
    with pytest.raises(FactorError, match="no version valid on 2026-10-01"):
        bounded.at(FR, date(2026, 10, 1))


def test_a_revision_needs_a_new_version_and_its_own_start() -> None:
    with pytest.raises(FactorError, match="duplicate factor id"):
        _revised(version="2022-02")
    with pytest.raises(FactorError, match="duplicate factor id"):
        _revised(valid_from=None)
    with pytest.raises(ValueError, match="valid_to"):
        Factor.model_validate({**_revised().get(FR).model_dump(), "valid_to": date(2026, 6, 1)})
    with pytest.raises(FactorError, match="revises nothing"):
        revision_of(_revised(), FR, "2022-02")
    with pytest.raises(FactorError, match="no version 'x'"):
        revision_of(_revised(), FR, "x")


def test_a_library_file_may_hold_a_revision_but_not_the_same_version_twice() -> None:
    entry = {
        "id": FR,
        "kind": "grid",
        "carrier": "electricity",
        "region": "FR",
        "year": 2021,
        "unit": "g/kWh",
        "source": "test",
    }
    lib = FactorLibrary.from_documents(
        [
            ("a.yaml", {"factors": [{**entry, "version": "1", "values": {"CO2": 36}}]}),
            (
                "b.yaml",
                {
                    "factors": [
                        {**entry, "version": "2", "values": {"CO2": 40}, "valid_from": "2026-07-01"}
                    ]
                },
            ),
        ]
    )
    assert lib.at(FR, date(2026, 7, 1)).gases["CO2"] == pytest.approx(0.040)
    with pytest.raises(FactorError, match=r"b.yaml: factors\[0\]\(grid:FR:2021\): id: dup"):
        FactorLibrary.from_documents(
            [
                ("a.yaml", {"factors": [{**entry, "version": "1", "values": {"CO2": 36}}]}),
                ("b.yaml", {"factors": [{**entry, "version": "1", "values": {"CO2": 40}}]}),
            ]
        )


def test_a_mid_year_grid_revision_restates_the_year_to_date_exactly() -> None:
    lib = _revised()
    rev = revision_of(lib, FR)
    assert (rev.old.version, rev.new.version, rev.start, rev.stop) == (
        "2022-02",
        "2026-07",
        date(2026, 7, 1),
        None,
    )
    cluster = make_cluster(
        [
            site("steel", meter("grid", "electricity"), meter("gas", "natural_gas")),
            site(
                "power",
                meter("to-steel", "electricity", boundary="transfer", to_site="steel"),
            ),
        ]
    )
    meters = affected_meters(cluster, lib, rev)
    # the gas meter does not use the factor; a transfer between sites is not restated here
    assert set(meters) == {"grid"}
    old = rev.old.gases["CO2"]
    readings = [
        _reading("grid", _ms(2026, 6, 30, 23, 45), 1_500_000_000, old),
        _reading("grid", _ms(2026, 7, 1), 2_000_000_000, old),
        _reading("grid", _ms(2026, 8, 15, 12), 123_456_789, old),
        _reading("grid", _ms(2026, 8, 15, 12), 123_456_789, old),  # the same stored point
        _reading("gas", _ms(2026, 8, 1), 1_000_000_000, 0.2),
        _reading("to-steel", _ms(2026, 8, 1), 1_000_000_000, old),
    ]
    assert readings[2][2][2] == 4_444_444
    [row] = restate_readings(readings, meters, rev)
    assert (row.site, row.carrier, row.year, row.readings) == ("steel", "electricity", 2026, 2)
    assert row.old[2] == row.old[3] == 72_000_000 + 4_444_444
    assert row.new[2] == row.new[3] == 80_000_000 + 4_938_272
    assert row.new[0] == row.old[0] == 2_123_456_789  # energy is not restated
    assert row.tco2e_changed_nano == 8_000_000 + 493_828
    ytd_before = 54_000_000 + row.old[2]
    assert ytd_before + row.delta[2] == 138_938_272  # the restated year to date, by hand
    # restating from the restated figures changes nothing more: the rule is a function of
    # the energy and the version, not of what was stored
    again = [(m, t, tuple(restated_figures(v, meters["grid"]))) for m, t, v in readings[1:3]]
    [row2] = restate_readings(again, meters, rev)
    assert row2.new == row.new


def test_a_bounded_revision_leaves_the_readings_after_its_end() -> None:
    lib = _revised(valid_to=date(2026, 8, 1))
    rev = revision_of(lib, FR)
    assert rev.stop == date(2026, 8, 1)
    cluster = make_cluster([site("steel", meter("grid", "electricity"))])
    meters = affected_meters(cluster, lib, rev)
    old = rev.old.gases["CO2"]
    rows = restate_readings(
        [
            _reading("grid", _ms(2026, 7, 31, 23, 59), 1_000_000_000, old),
            _reading("grid", _ms(2026, 8, 1), 1_000_000_000, old),
        ],
        meters,
        rev,
    )
    assert [(r.readings, r.tco2e_changed_nano) for r in rows] == [(1, 4_000_000)]


def test_restate_refuses_a_factor_without_a_revision_naming_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from clustertwin.cli import main

    r = CliRunner().invoke(main, ["restate", "dunkirk", "--factor", FR])
    assert r.exit_code == 2 and f"factor {FR!r} version '2022-02' revises nothing" in r.output
    bad = tmp_path / "rev.yaml"
    bad.write_text(
        "kind: grid\ncarrier: electricity\nfactors:\n"
        f"  - {{id: '{FR}', region: FR, year: 2021, version: '2', unit: g/kWh,"
        " values: {CO2: -1}, source: x, valid_from: 2026-07-01}\n"
    )
    r = CliRunner().invoke(main, ["restate", "dunkirk", "--factor", FR, "--factors", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}: factors[0]({FR}): values.CO2: must not be negative" in r.output


def test_a_revision_leaves_an_export_of_a_bidirectional_meter_without_scope2() -> None:
    """An export carries no scope 2 at either version (``twin.emissions``: not netted): the
    restatement of a reading below zero changes nothing, the imports are restated."""
    lib = _revised()
    rev = revision_of(lib, FR)
    cluster = make_cluster([site("steel", meter("grid", "electricity", bidirectional=True))])
    meters = affected_meters(cluster, lib, rev)
    export = ("grid", _ms(2026, 7, 2), (-1_000_000_000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert restated_figures(export[2], meters["grid"]) == list(export[2])
    [row] = restate_readings(
        [_reading("grid", _ms(2026, 7, 1), 2_000_000_000, rev.old.gases["CO2"]), export],
        meters,
        rev,
    )
    assert row.readings == 2 and row.new[0] == 1_000_000_000  # energy: net
    assert row.new[2] == row.new[3] == 80_000_000  # the import's alone, at the new version
    assert row.tco2e_changed_nano == 8_000_000


def test_the_readings_restated_are_the_same_whatever_their_order_and_repeats() -> None:
    """The store holds a repeated reading once: a shuffled read-back with repeats restates
    each reading once, with the same figures as the ordered one."""
    import random

    from twin.revision import by_year, restated_readings

    lib = _revised()
    rev = revision_of(lib, FR)
    cluster = make_cluster([site("steel", meter("grid", "electricity"))])
    meters = affected_meters(cluster, lib, rev)
    old = rev.old.gases["CO2"]
    rng = random.Random(16)
    t0 = _ms(2026, 6, 30, 20)
    readings = [
        (*_reading("grid", t0 + k * 900_000, rng.randrange(1, 10**10), old), -1) for k in range(40)
    ]
    ordered = restated_readings(readings, meters, rev)
    assert 0 < len(ordered) < len(readings)  # the readings before July are not covered
    shuffled = readings + rng.sample(readings, 15)
    rng.shuffle(shuffled)
    again = restated_readings(shuffled, meters, rev)
    assert sorted(again, key=lambda r: r.ts) == ordered
    assert [(r.old, r.new) for r in by_year(again)] == [(r.old, r.new) for r in by_year(ordered)]
    for r in ordered:
        assert r.new[2] == round(r.old[0] * rev.new.gases["CO2"]) and r.ts >= _ms(2026, 7, 1)


def test_a_grid_revision_restates_hydrogen_made_with_grid_electricity() -> None:
    """Grid-made hydrogen's upstream is its electricity per MWh of hydrogen at the grid
    factor (``twin.emissions``): 1.5605 MWh_e/MWh_H2 x 0.036 -> x 0.040. 2 MWh of it on 2 July
    go from round(2e9 x 0.0561787) to round(2e9 x 0.0624208) nano-t of scope 3 upstream; the
    hydrogen made by reforming gas does not move."""
    from twin.carriers import HydrogenRoute
    from twin.revision import by_year, restated_readings

    lib = _revised()
    rev = revision_of(lib, FR)
    cluster = make_cluster(
        [
            site(
                "steel",
                meter("h2", "hydrogen", unit="t", route="electrolysis_grid"),
                meter("h2-smr", "hydrogen", unit="t", route="smr"),
            )
        ]
    )
    meters = affected_meters(cluster, lib, rev)
    assert set(meters) == {"h2"}
    per_mwh = lib.hydrogen(HydrogenRoute.ELECTROLYSIS_GRID).electricity_per_unit
    assert per_mwh is not None and abs(per_mwh - 0.052 / 0.033322) < 1e-3
    e = 2_000_000_000
    old_s3 = round(e * per_mwh * 0.036)
    stored = (e, 0, 0, 0, old_s3, 0, 0, 0, 0, 0, 0)
    [row] = by_year(restated_readings([("h2", _ms(2026, 7, 2), stored, -1)], meters, rev))
    assert (row.site, row.carrier) == ("steel", "hydrogen")
    assert row.new[4] == round(e * per_mwh * 0.040) and row.new[4] - old_s3 > 12_000_000
    assert row.new[1:4] == [0, 0, 0]  # upstream only: no scope 1 or 2 appears
