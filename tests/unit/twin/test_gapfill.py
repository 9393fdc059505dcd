"""Issue 16, "What to build" 2: gap filling by a declared method, golden cases worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from twin.gapfill import (
    MAX_FILLS_PER_PASS,
    LastGood,
    MrrConservative,
    Profile,
    RefReading,
    conservative_substitute,
    day_slot,
    fill_ends,
    fill_values,
    inherited,
)
from twin.model import Cluster, ClusterFileError

from .conftest import make_cluster, meter, site

H = 3_600_000
DAY = 24 * H
T0 = 1_780_000_000_000 - 1_780_000_000_000 % DAY  # a UTC midnight in 2026


def test_mrr_conservative_substitute_worked_by_hand() -> None:
    """Reference period: the day before the missing hour [T0, T0+1h). Measured hourly
    quantities 10, 12, 11, 13, 14 (t). By hand: mean = 60 / 5 = 12; squared deviations
    4 + 0 + 1 + 1 + 4 = 10; sample variance 10 / (5 - 1) = 2.5; σ = √2.5 = 1.58114;
    substitute = 12 + 2 × 1.58114 = 15.16228 t. (Population σ, √(10/5) = 1.41421, would give
    14.82843: the sample σ is the Regulation's "best estimate", and the larger.)"""
    decl = MrrConservative(method="mrr_conservative", every="1h", after="2h", reference_days=1)
    reference = [
        RefReading(T0 - DAY - H, 1000.0, "measured"),  # ended before the reference day: out
        RefReading(T0 - DAY, 1000.0, "measured"),  # ended at its start: the hour before it
        RefReading(T0 - 20 * H, 10.0, "measured"),
        RefReading(T0 - 15 * H, 12.0, "measured"),
        RefReading(T0 - 10 * H, 50.0, "estimated"),  # estimates are not a reference
        RefReading(T0 - 9 * H, 11.0, "measured"),
        RefReading(T0 - 5 * H, 99.0, "gap_filled"),  # nor fills
        RefReading(T0 - 2 * H, 13.0, "measured"),
        RefReading(T0, 14.0, "measured"),  # ends where the missing hour starts: in
        RefReading(T0 + H, 500.0, "measured"),  # the missing hour itself: never
    ]
    (got,) = fill_values(decl, [T0 + H], reference)
    assert got == pytest.approx(15.16227766016838, rel=1e-12)
    assert got == pytest.approx(12 + 2 * math.sqrt(2.5), rel=1e-15)
    assert conservative_substitute([10, 12, 11, 13, 14]) == got


def test_mrr_needs_two_measured_readings() -> None:
    decl = MrrConservative(method="mrr_conservative", every="1h", after="1h", reference_days=1)
    one = [RefReading(T0 - H, 5.0, "measured"), RefReading(T0 - 2 * H, 7.0, "estimated")]
    assert fill_values(decl, [T0 + H], one) == [None]
    assert conservative_substitute([3.0, 3.0]) == 3.0  # no spread: the mean


def test_last_good_takes_the_latest_real_reading_before_the_interval() -> None:
    decl = LastGood(method="last_good", every="15m", after="1h", reference_days=2)
    q = 15 * 60_000
    reference = [
        RefReading(T0 - 3 * q, 4.0, "measured"),
        RefReading(T0 - 2 * q, 6.0, "estimated"),
        RefReading(T0 - q, 8.0, "gap_filled"),
    ]
    assert fill_values(decl, [T0 + q, T0 + 2 * q], reference) == [6.0, 6.0]
    assert fill_values(decl, [T0 - 2 * q], reference) == [4.0]
    assert fill_values(decl, [T0 - 3 * q], reference) == [None]


def test_fill_ends_are_on_the_epoch_grid_and_wait_for_the_delay() -> None:
    decl = LastGood(method="last_good", every="15m", after="1h")
    q = 15 * 60_000
    last = T0 + 7 * 60_000  # off the grid: the next end is T0 + 15 min
    assert fill_ends(last, T0 + q + H - 1, decl) == []
    assert fill_ends(last, T0 + q + H, decl) == [T0 + q]
    assert fill_ends(last, T0 + 3 * q + H + 5, decl) == [T0 + q, T0 + 2 * q, T0 + 3 * q]
    many = fill_ends(T0, T0 + 365 * DAY, decl)
    assert len(many) == MAX_FILLS_PER_PASS and many[0] == T0 + q


def test_a_bad_declaration_names_the_meter() -> None:
    with pytest.raises(ClusterFileError) as err:
        make_cluster(
            [
                site(
                    "a",
                    meter(
                        "a-gas",
                        "natural_gas",
                        gap_fill={"method": "mrr_conservative", "every": "7m", "after": "2h"},
                    ),
                )
            ]
        )
    assert "meters[0](a-gas).gap_fill" in str(err.value) and "must divide a day" in str(err.value)
    with pytest.raises(ClusterFileError) as err:
        make_cluster(
            [site("a", meter("a-gas", "natural_gas", gap_fill={"method": "x", "after": "1h"}))]
        )
    assert "(a-gas).gap_fill" in str(err.value) and "mrr_conservative" in str(err.value)
    ok = make_cluster(
        [
            site(
                "a",
                meter(
                    "a-gas",
                    "natural_gas",
                    gap_fill={"method": "last_good", "every": "1h", "after": "3h"},
                ),
            )
        ]
    )
    decl = ok.sites[0].assets[0].meters[0].gap_fill
    assert decl is not None and decl.after_ms == 3 * H and decl.reference_days == 30


def test_profile_fill_worked_by_hand() -> None:
    """The missing hour [T0+8h, T0+9h) (a Thursday: T0 is 2026-05-28, a UTC midnight).
    Measured hourly readings ending at 09:00 on the three days before: 40, 44, 48 t; by hand
    the mean is 132 / 3 = 44 t. Out: an estimate in that slot, readings of other hours, the
    same hour four days back (beyond reference_days), and the missing hour itself."""
    assert (T0 // DAY + 3) % 7 == 3  # Thursday (Monday 0)
    decl = Profile(method="profile", every="1h", after="2h", reference_days=3)
    nine = 9 * H
    reference = [
        RefReading(T0 - 4 * DAY + nine, 1000.0, "measured"),  # a day too far back
        RefReading(T0 - 3 * DAY + nine, 40.0, "measured"),
        RefReading(T0 - 2 * DAY + nine, 44.0, "measured"),
        RefReading(T0 - 2 * DAY + nine + H, 500.0, "measured"),  # 10:00: another slot
        RefReading(T0 - 1 * DAY + nine, 48.0, "measured"),
        RefReading(T0 - 1 * DAY + nine - H, 7.0, "measured"),  # 08:00: another slot
        RefReading(T0 - 1 * DAY + nine + 1, 99.0, "estimated"),  # estimates are no reference
        RefReading(T0 + nine, 900.0, "gap_filled"),  # nor fills, nor the hour itself
    ]
    assert fill_values(decl, [T0 + nine], reference) == [44.0]
    # the next hour's slot has one reading (10:00 two days back): its value
    assert fill_values(decl, [T0 + nine + H], reference) == [500.0]
    # 03:00 has none in the reference period: not filled
    assert fill_values(decl, [T0 + 3 * H], reference) == [None]


def test_profile_by_weekday_takes_the_same_weekday_only() -> None:
    """by_weekday over 21 days: the Thursdays 7 and 14 days back read 30 and 34 at 09:00
    (mean 32; the one 21 days back is silent); the other days' 09:00 readings (1000) are
    other weekdays' profiles. Every day instead: (18 x 1000 + 30 + 34) / 20 = 903.2."""
    decl = Profile(method="profile", every="1h", after="2h", reference_days=21, by_weekday=True)
    nine = 9 * H
    reference = [RefReading(T0 - d * DAY + nine, 1000.0, "measured") for d in range(1, 21)]
    reference[6] = RefReading(T0 - 7 * DAY + nine, 30.0, "measured")
    reference[13] = RefReading(T0 - 14 * DAY + nine, 34.0, "measured")
    assert fill_values(decl, [T0 + nine], reference) == [32.0]
    every_day = Profile(method="profile", every="1h", after="2h", reference_days=21)
    assert fill_values(every_day, [T0 + nine], reference) == [pytest.approx(903.2, rel=1e-15)]
    thursday_21 = [*reference, RefReading(T0 - 21 * DAY + nine, 35.0, "measured")]
    # three weeks back is in: (30 + 34 + 35) / 3
    assert fill_values(decl, [T0 + nine], thursday_21) == [33.0]
    # slots: the interval a reading closes; over the week from Monday 00:00
    assert day_slot(T0 + H, H) == 0 and day_slot(T0, H) == 23
    assert day_slot(T0 + H, H, by_weekday=True) == 3 * 24  # Thursday 00:00-01:00
    assert day_slot(T0, H, by_weekday=True) == 2 * 24 + 23  # Wednesday 23:00-24:00


def _fill_cluster() -> Cluster:
    last_good = {"method": "last_good", "every": "1h", "after": "3h"}
    profile = {"method": "profile", "every": "15m", "after": "2h", "by_weekday": True}
    mrr = {"method": "mrr_conservative", "every": "1h", "after": "2h"}
    return make_cluster(
        [
            site("a", meter("a-gas", "natural_gas"), meter("a-el", "electricity", gap_fill=mrr)),
            site(
                "b",
                meter("b-gas", "natural_gas"),
                meter("b-el", "electricity", gap_fill={"method": "none"}),
                gap_fill=profile,
            ),
            site("c", meter("c-gas", "natural_gas"), gap_fill={"method": "none"}),
        ],
        gap_fill=last_good,
    )


def test_gap_fill_is_inherited_meter_over_site_over_cluster() -> None:
    cluster = _fill_cluster()
    got = {m.id: cluster.gap_fill_of(s, m) for s, _a, m in cluster.meters()}
    assert isinstance(got["a-gas"], LastGood) and got["a-gas"].after_ms == 3 * H  # cluster's
    assert isinstance(got["a-el"], MrrConservative)  # its own
    assert isinstance(got["b-gas"], Profile) and got["b-gas"].by_weekday  # its site's
    assert got["b-el"] is None and got["c-gas"] is None  # none: never, whatever is above
    assert inherited(None, None, None) is None


def test_the_twin_declarations_of_the_stream_follow_the_inheritance(tmp_path: Path) -> None:
    from streams.gapfill import declarations_from_twin

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_fill_cluster().model_dump(mode="json", exclude_none=True)))
    decls = declarations_from_twin([str(path)])
    methods = {d.meter: d.method.method for ds in decls.values() for d in ds}
    assert methods == {"a-gas": "last_good", "a-el": "mrr_conservative", "b-gas": "profile"}


def test_a_bad_site_or_cluster_default_names_where_it_is() -> None:
    with pytest.raises(ClusterFileError) as err:
        no_delay = {"method": "profile", "every": "1h"}
        make_cluster([site("a", meter("a-gas", "natural_gas"), gap_fill=no_delay)])
    assert "sites[0](a).gap_fill" in str(err.value) and "after" in str(err.value)
    with pytest.raises(ClusterFileError) as err:
        make_cluster([site("a")], gap_fill={"method": "profile", "every": "7m", "after": "1h"})
    assert "gap_fill" in str(err.value) and "must divide a day" in str(err.value)
