"""Baselines, reduction targets and the year-by-year pathway between them.

A pathway is piecewise linear between anchor points: the baseline, each target and any
explicitly published intermediate points. Targets are stated the way clusters publish them
(a percentage cut from the baseline, or an absolute tonnage, or net zero), so the file reads
like the press release it was taken from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
            raise ValueError("give exactly one of reduction_pct or tco2e")
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
        years = [t.year for t in self.targets] + [p.year for p in self.points]
        if any(y <= self.baseline.year for y in years):
            raise ValueError(
                f"targets and points must come after the baseline year {self.baseline.year}"
            )
        if len(set(years)) != len(years):
            raise ValueError("two targets/points share a year")
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
