"""Baselines, reduction targets and the year-by-year pathway between them.

A pathway is piecewise linear between anchor points: the baseline, each target and any
explicitly published intermediate points. Targets are stated the way clusters publish them
(a percentage cut from the baseline, or an absolute tonnage, or net zero), so the file reads
like the press release it was taken from.

A plan is refused when it cannot be a commitment: a target after the baseline year and at most
the baseline (a target above it promises an increase), no target laxer than an earlier one (a
2040 target allowing more than the 2030 one would let emissions rise again; equal is a plateau
and allowed), one target or point per year. Errors name the target by its year.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from twin.validation import Loc, Problems

__all__ = ["Baseline", "Pathway", "PathwayPoint", "Target", "TargetPlan"]

ScopeSet = Literal["1", "1+2"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Strict):
    """The reference year's emissions, with where the figure comes from."""

    year: int = Field(ge=1990, le=2100)
    tco2e: float = Field(gt=0)
    scopes: ScopeSet = "1"
    source: str = ""


class Target(_Strict):
    """One commitment: by ``year``, emissions at most ``reduction_pct`` below baseline
    (or at most ``tco2e``). Net zero is ``reduction_pct: 100``."""

    year: int = Field(ge=1990, le=2100)
    reduction_pct: float | None = Field(default=None, ge=0, le=100)
    tco2e: float | None = Field(default=None, ge=0)
    label: str = ""
    source: str = ""

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.reduction_pct is None) == (self.tco2e is None):
            raise ValueError(f"target {self.year}: give exactly one of reduction_pct or tco2e")
        return self

    def level(self, baseline: Baseline) -> float:
        """The target's absolute ceiling in tCO2e."""
        if self.tco2e is not None:
            return self.tco2e
        assert self.reduction_pct is not None
        return baseline.tco2e * (1.0 - self.reduction_pct / 100.0)


class PathwayPoint(_Strict):
    year: int = Field(ge=1990, le=2100)
    tco2e: float = Field(ge=0)


class TargetPlan(_Strict):
    """Baseline plus targets; ``points`` add published intermediate milestones."""

    baseline: Baseline
    targets: tuple[Target, ...] = ()
    points: tuple[PathwayPoint, ...] = ()

    @model_validator(mode="after")
    def _years(self) -> TargetPlan:
        problems: list[tuple[Loc, str]] = []
        b = self.baseline
        seen: set[int] = set()
        dated = [(("targets", i), f"target {t.year}", t.year) for i, t in enumerate(self.targets)]
        dated += [(("points", i), f"point {p.year}", p.year) for i, p in enumerate(self.points)]
        for loc, what, year in dated:
            if year <= b.year:
                problems.append((loc, f"{what}: not after the baseline year {b.year}"))
            if year in seen:
                problems.append((loc, f"{what}: a second target or point for {year}"))
            seen.add(year)
        strictest: tuple[float, int] | None = None  # (level, year) of the earlier targets
        for i, t in sorted(enumerate(self.targets), key=lambda it: it[1].year):
            level = t.level(b)
            if level > b.tco2e * (1 + 1e-12):
                problems.append(
                    (
                        ("targets", i),
                        f"target {t.year}: {_t(level)} tCO2e is above the baseline "
                        f"{_t(b.tco2e)} tCO2e ({b.year}); a target allows at most the baseline",
                    )
                )
            elif strictest is not None and level > strictest[0] * (1 + 1e-12) + 1e-9:
                problems.append(
                    (
                        ("targets", i),
                        f"target {t.year}: allows {_t(level)} tCO2e, more than target "
                        f"{strictest[1]} ({_t(strictest[0])} tCO2e); a later target may not be "
                        "laxer than an earlier one",
                    )
                )
            if strictest is None or level < strictest[0]:
                strictest = (level, t.year)
        if problems:
            raise Problems(problems)
        return self

    def pathway(self) -> Pathway:
        anchors = {self.baseline.year: self.baseline.tco2e}
        anchors.update({t.year: t.level(self.baseline) for t in self.targets})
        anchors.update({p.year: p.tco2e for p in self.points})
        years = sorted(anchors)
        return Pathway(
            years=np.array(years, dtype=np.float64),
            values=np.array([anchors[y] for y in years], dtype=np.float64),
        )


def _t(tonnes: float) -> str:
    return f"{tonnes:,.0f}" if abs(tonnes) >= 100 else f"{tonnes:g}"


class Pathway:
    """Piecewise-linear trajectory; flat before the first and after the last anchor."""

    __slots__ = ("values", "years")

    def __init__(self, years: np.ndarray, values: np.ndarray) -> None:
        self.years = years
        self.values = values

    def at(self, year: float) -> float:
        """Pathway value (tCO2e per year) in ``year`` (fractional years interpolate)."""
        return float(np.interp(year, self.years, self.values))

    def series(self, first: int, last: int) -> dict[int, float]:
        ys = np.arange(first, last + 1, dtype=np.float64)
        return {
            int(y): float(v)
            for y, v in zip(ys, np.interp(ys, self.years, self.values), strict=True)
        }

    def cumulative(self, first: int, last: int) -> float:
        """Carbon budget: sum of yearly pathway values over [first, last] inclusive."""
        return float(sum(self.series(first, last).values()))
