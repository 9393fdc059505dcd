"""Pathway maths and progress metrics, with numbers checked by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from twin.progress import progress, year_fraction
from twin.targets import Baseline, PathwayPoint, Target, TargetPlan

# A plan shaped like the common "-55% by 2030, net zero by 2050" commitment.
PLAN = TargetPlan(
    baseline=Baseline(year=2020, tco2e=1_000_000),
    targets=(Target(year=2030, reduction_pct=55), Target(year=2050, reduction_pct=100)),
)


def test_linear_pathway_between_targets() -> None:
    p = PLAN.pathway()
    assert p.at(2020) == 1_000_000
    assert p.at(2025) == pytest.approx(725_000)  # halfway to 450,000
    assert p.at(2030) == pytest.approx(450_000)
    assert p.at(2040) == pytest.approx(225_000)  # halfway from 450,000 to 0
    assert p.at(2050) == 0.0
    assert p.at(2060) == 0.0 and p.at(2010) == 1_000_000  # flat outside


def test_dunkirk_pathway_value() -> None:
    # 16 Mt in 2021 to net zero in 2050: 2030 = 16 x (1 - 9/29) = 11.034483 Mt.
    plan = TargetPlan(
        baseline=Baseline(year=2021, tco2e=16e6), targets=(Target(year=2050, reduction_pct=100),)
    )
    assert plan.pathway().at(2030) == pytest.approx(16e6 * 20 / 29)


def test_given_points_and_absolute_targets() -> None:
    plan = TargetPlan(
        baseline=Baseline(year=2020, tco2e=100.0),
        targets=(Target(year=2040, tco2e=20.0),),
        points=(PathwayPoint(year=2025, tco2e=90.0),),
    )
    s = plan.pathway().series(2020, 2040)
    assert s[2025] == 90.0
    assert s[2030] == pytest.approx(90 - 70 / 3)  # 90 -> 20 over 15 years, 5 years in
    # Carbon budget: sum of yearly values 2021-2025 = 98 + 96 + 94 + 92 + 90.
    assert plan.pathway().cumulative(2021, 2025) == pytest.approx(470.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"targets": (Target(year=2019, reduction_pct=10),)},  # before baseline
        {"targets": (Target(year=2030, reduction_pct=10), Target(year=2030, reduction_pct=20))},
    ],
)
def test_plan_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TargetPlan(baseline=Baseline(year=2020, tco2e=1.0), **kwargs)


def test_target_needs_exactly_one_level() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Target(year=2030, reduction_pct=50, tco2e=10)
    with pytest.raises(ValidationError, match="exactly one"):
        Target(year=2030)


def test_year_fraction() -> None:
    assert year_fraction(datetime(2025, 7, 2, 12, tzinfo=UTC)) == pytest.approx(0.5)  # 182.5/365
    assert year_fraction(datetime(2024, 7, 2)) == pytest.approx(183 / 366)  # leap year, naive=UTC


def test_progress_metrics() -> None:
    # 2025 pathway value 725,000 t. Half the year gone (2 July, noon).
    pr = progress(
        PLAN,
        as_of=datetime(2025, 7, 2, 12, tzinfo=UTC),
        ytd_tco2e=400_000,
        window_tco2e=14_000,
        window_seconds=7 * 86400,
        expected_meters=50,
        reporting_meters=45,
        cumulative_tco2e=3_000_000,
    )
    assert pr.pathway_value == pytest.approx(725_000)
    assert pr.run_rate_annualised == pytest.approx(14_000 * 365 / 7)  # 730,000
    assert pr.run_rate_gap == pytest.approx(5_000)
    assert pr.ytd_budget == pytest.approx(362_500)
    assert pr.ytd_gap == pytest.approx(37_500)
    assert pr.projected_year_end == pytest.approx(400_000 + 730_000 * 0.5)  # 765,000
    assert pr.projected_gap == pytest.approx(40_000)
    assert not pr.on_track
    assert pr.completeness.ratio == pytest.approx(0.9)
    # Budget 2021-2050 = sum of the yearly pathway: 2021-2030 decreases by 55,000 a year
    # (945,000 ... 450,000: sum 6,975,000) and 2031-2050 by 22,500 (427,500 ... 0: 4,275,000).
    assert pr.cumulative_budget == pytest.approx(6_975_000 + 4_275_000)
    assert pr.cumulative_used_pct == pytest.approx(100 * 3_000_000 / 11_250_000)


def test_progress_rejects_empty_window() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        progress(PLAN, datetime(2025, 1, 1, tzinfo=UTC), 0, 0, 0, 1, 1)
