"""Issue 16, "What to build" 2: gap filling by a declared method, golden cases worked by hand."""

from __future__ import annotations

import math

import pytest

from twin.gapfill import (
    MAX_FILLS_PER_PASS,
    LastGood,
    MrrConservative,
    RefReading,
    conservative_substitute,
    fill_ends,
    fill_values,
)
from twin.model import ClusterFileError

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
