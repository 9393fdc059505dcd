"""Load shapes of plants and ports, as pure functions of time: deterministic and vectorised.

Every value is a function of (seed, meter, absolute interval number) only, never of when the
simulator was started or how fast it runs, so two runs with the same seed agree reading for
reading, and any window of simulated history can be regenerated on its own.

Shapes (each normalised to a long-run mean of 1, then scaled by the meter's annual quantity):
- continuous: process plants (steel, refining, chemicals, cement, power) run 24/7 with a small
  ambient daily ripple and a seasonal term for heat-related carriers;
- shift: manufacturing on two shifts Mon-Fri (06-22), a skeleton night and weekend load;
- port: berths with ship calls (a ship at berth draws shore power/cranes for 8-30 h);
- solar: rooftop PV, a daylight bell whose width follows the season.
Outages: each asset has, per ISO week, a small chance of a 6-48 h shutdown (standby 3 %),
and meters have short communication gaps reported as ``estimated`` readings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
YEAR_MS = 365.25 * DAY_MS
# 1970-01-01 was a Thursday: shift day-of-week so that 0 = Monday.
_EPOCH_WEEKDAY = 3

F64 = npt.NDArray[np.float64]


class Shape(StrEnum):
    CONTINUOUS = "continuous"
    SHIFT = "shift"
    PORT = "port"
    SOLAR = "solar"


_CONTINUOUS_WORDS = (
    "steel",
    "refin",
    "chemic",
    "cement",
    "ammonia",
    "hydrogen",
    "power",
    "lng",
    "alumin",
    "glass",
    "furnace",
    "cracker",
    "kiln",
    "boiler",
    "chp",
    "smelter",
    "methanol",
    "fertil",
)
_SOLAR_WORDS = ("pv", "solar")
_PORT_WORDS = ("port", "berth", "terminal", "quay", "ship")
_SHIFT_WORDS = ("mill", "workshop", "assembly", "paint", "manufactur", "fab", "warehouse")


def shape_for(carrier: str, asset_kind: str, sector: str) -> Shape:
    text = f"{asset_kind} {sector}".lower()
    if any(w in asset_kind.lower() for w in _SOLAR_WORDS):
        return Shape.SOLAR
    if carrier == "shore_power" or any(w in text for w in _PORT_WORDS):
        return Shape.PORT
    kind = asset_kind.lower()  # the asset says more than its site's sector
    if any(w in kind for w in _CONTINUOUS_WORDS):
        return Shape.CONTINUOUS
    if any(w in kind for w in _SHIFT_WORDS):
        return Shape.SHIFT
    if any(w in text for w in _CONTINUOUS_WORDS):
        return Shape.CONTINUOUS
    return Shape.SHIFT


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that, unlike ``hash()``, is the same in every process."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _unit(h: int) -> float:
    return (h % 1_000_003) / 1_000_003


def hour_of_day(ts: F64) -> F64:
    return (ts % DAY_MS) / HOUR_MS


def weekday(ts: F64) -> F64:
    return ((ts // DAY_MS) + _EPOCH_WEEKDAY) % 7


def raw_shape(shape: Shape, ts: F64, phase: float) -> F64:
    """Un-normalised load shape at epoch-ms times ``ts``; ``phase`` de-synchronises meters."""
    h = hour_of_day(ts)
    if shape is Shape.CONTINUOUS:
        return 1.0 + 0.04 * np.sin(2 * np.pi * (h - 9.0 - phase) / 24.0)
    if shape is Shape.SHIFT:
        wd = weekday(ts)
        working = (wd < 5) & (h >= 6.0) & (h < 22.0)
        ramp = 0.08 * np.sin(np.pi * np.clip(h - 6.0, 0, 16) / 16.0)
        return np.where(working, 1.0 + ramp, np.where(wd < 5, 0.35, 0.22))
    if shape is Shape.SOLAR:  # daylight bell, longer days in summer
        day_len = 12.0 + 4.0 * np.cos(2 * np.pi * ((ts % YEAR_MS) / DAY_MS - 172.0) / 365.25)
        x = (h - 13.0) / (day_len / 2)
        return np.where(np.abs(x) < 1, np.cos(np.pi / 2 * x) ** 2, 0.0)
    # PORT: shaped by ship calls (see ship_at_berth) on top of a small base load.
    return np.full_like(ts, 0.12)


def _call(seed: int, key: str, day: int) -> tuple[int, int] | None:
    """(start, length) in ms of the ship call starting on ``day``, if any."""
    h = stable_hash(seed, key, "call", day)
    if _unit(h) < 0.25:  # ~1 day in 4 without a call
        return None
    return day * DAY_MS + (h >> 20) % 24 * HOUR_MS, (8 + (h >> 40) % 23) * HOUR_MS


def berth_occupancy(seed: int, key: str, days: int = 364) -> float:
    """Long-run share of time a ship is at the berth (calls may overlap: counted once)."""
    grid = np.zeros(days * 24 + 48, dtype=bool)
    for d in range(days):
        call = _call(seed, key, d)
        if call is not None:
            start_h, len_h = (call[0] - d * DAY_MS) // HOUR_MS + d * 24, call[1] // HOUR_MS
            grid[start_h : start_h + len_h] = True
    return float(grid[24 : days * 24 + 24].mean())


def ship_at_berth(seed: int, key: str, ts: F64) -> npt.NDArray[np.bool_]:
    """Whether a ship is at the berth: per day, one call starting at a seeded hour."""
    day = (ts // DAY_MS).astype(np.int64)
    out = np.zeros(ts.shape, dtype=bool)
    for d in np.unique(np.concatenate([day, day - 1])):
        call = _call(seed, key, int(d))
        if call is not None:
            out |= (ts >= call[0]) & (ts < call[0] + call[1])
    return out


def outage(seed: int, asset: str, ts: F64, rate: float) -> npt.NDArray[np.bool_]:
    """Whether the asset is shut down: per ISO-ish week, chance ``rate`` of a 6-48 h outage."""
    week = (ts // WEEK_MS).astype(np.int64)
    out = np.zeros(ts.shape, dtype=bool)
    for w in np.unique(np.concatenate([week, week - 1])):
        h = stable_hash(seed, asset, "outage", int(w))
        if _unit(h) >= rate:
            continue
        start = w * WEEK_MS + (h >> 16) % (7 * 24) * HOUR_MS
        length = (6 + (h >> 32) % 43) * HOUR_MS
        out |= (ts >= start) & (ts < start + length)
    return out


def seasonal(ts: F64) -> F64:
    """Heating-driven carriers: +15 % in mid-January, -15 % in mid-July."""
    day_of_year = (ts % YEAR_MS) / DAY_MS
    return 1.0 + 0.15 * np.cos(2 * np.pi * (day_of_year - 15.0) / 365.25)


@dataclass(frozen=True)
class MeterProfile:
    """Everything needed to compute one meter's value at any time."""

    meter: str
    asset: str
    site: str
    carrier: str
    unit: str
    shape: Shape
    annual_quantity: float
    phase: float
    norm: float  # 1 / long-run mean of the shape

    @classmethod
    def build(
        cls,
        *,
        seed: int,
        meter: str,
        asset: str,
        site: str,
        carrier: str,
        unit: str,
        asset_kind: str,
        sector: str,
        annual_quantity: float | None,
    ) -> MeterProfile:
        shape = shape_for(carrier, asset_kind, sector)
        h = stable_hash(seed, meter, "profile")
        if annual_quantity is None:  # not in the model: a plausible, stable size
            annual_quantity = 10 ** (3 + 2 * _unit(h))
        phase = (h >> 24) % 1000 / 1000 * 3.0
        # Normalise over four whole weeks on a 15-minute grid (shapes repeat weekly).
        grid = np.arange(0, 52 * WEEK_MS, 15 * 60_000, dtype=np.float64)
        if shape is Shape.PORT:
            mean = 0.12 + berth_occupancy(seed, asset)
        else:
            mean = float(np.mean(raw_shape(shape, grid, phase)))
        return cls(
            meter, asset, site, carrier, unit, shape, float(annual_quantity), phase, 1.0 / mean
        )
