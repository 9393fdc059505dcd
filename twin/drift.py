"""The arithmetic of drift detection: baselines, CUSUM, hysteresis, pathway rates, meter runs.

Pure functions over plain numbers and numpy arrays (no I/O, no clock): the stream worker owns
the state and the time, this module only says what follows from them. Everything is judged in
*event time* (the readings' own timestamps), so a replay, a catch-up after an outage or an
accelerated simulation reaches exactly the same alerts as the live stream did.

Why these detectors:

* **EWMA + CUSUM** on a standardised residual. The EWMA learns a site's usual level and spread
  slowly; the two-sided CUSUM accumulates evidence of a *sustained* shift, so a 15 % step is
  found within a few intervals while independent noise almost never sums past the threshold
  (with k = 1 sigma and h = 8 sigma the in-control run length is millions of intervals). While a
  shift alarm is open the baseline is frozen, otherwise the detector would learn the fault as the
  new normal and resolve itself.
* **Latch** (hysteresis): separate "raise" and "clear" conditions plus how long each must hold,
  so a value hovering at a threshold opens one alert, not a flurry.
* **Pathway**: a piecewise-linear yearly pathway (tCO2e per year) read as an hourly rate at the
  current fractional year, and a year-end projection that does not need the whole year's data.
* **Meter runs**: per-reading, vectorised over a meter's readings, when a value stopped changing
  (flat line) and where consecutive readings are further apart than allowed (silence).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = [
    "HOURS_PER_YEAR",
    "Latch",
    "LatchEvent",
    "ShiftConfig",
    "ShiftState",
    "ShiftStep",
    "flat_runs",
    "fractional_year",
    "gaps",
    "hours_in_year",
    "projected_year_end",
    "rolling_rate",
    "shift_scan",
]

HOURS_PER_YEAR = 8760.0


# -- hysteresis ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatchEvent:
    """A transition of a latch: ``"open"`` or ``"resolve"`` at event time ``at`` (ms)."""

    kind: str
    at: int


@dataclass
class Latch:
    """Open once, stay open while the fault lasts, resolve once.

    ``raise`` must hold for ``open_for_ms`` before the latch opens (and the open time is when
    it started to hold plus that duration, not when we happened to look); ``clear`` must hold
    for ``clear_for_ms`` before it resolves. Between the two thresholds nothing changes: that
    band is the hysteresis.
    """

    is_open: bool = False
    pending_since: int = -1  # event time the raise condition started holding (closed latch)
    clearing_since: int = -1  # event time the clear condition started holding (open latch)
    opened_at: int = -1

    def step(
        self, t: int, raise_: bool, clear: bool, open_for_ms: int = 0, clear_for_ms: int = 0
    ) -> LatchEvent | None:
        if not self.is_open:
            if not raise_:
                self.pending_since = -1
                return None
            if self.pending_since < 0:
                self.pending_since = t
            if t - self.pending_since >= open_for_ms:
                self.is_open = True
                self.opened_at = self.pending_since + open_for_ms
                self.pending_since = -1
                self.clearing_since = -1
                return LatchEvent("open", self.opened_at)
            return None
        if not clear:
            self.clearing_since = -1
            return None
        if self.clearing_since < 0:
            self.clearing_since = t
        if t - self.clearing_since >= clear_for_ms:
            self.is_open = False
            at = self.clearing_since + clear_for_ms
            self.clearing_since = -1
            self.opened_at = -1
            return LatchEvent("resolve", at)
        return None

    def to_list(self) -> list[int]:
        return [int(self.is_open), self.pending_since, self.clearing_since, self.opened_at]

    @classmethod
    def from_list(cls, v: list[int]) -> Latch:
        return cls(bool(v[0]), int(v[1]), int(v[2]), int(v[3]))


# -- EWMA baseline + CUSUM ----------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftConfig:
    """Tuning of the shift detector, in units of the residual's standard deviation."""

    lam: float = 0.02  # EWMA weight of the level (about 50 intervals of memory)
    lam_var: float = 0.02  # EWMA weight of the squared residual
    k: float = 1.0  # CUSUM allowance: shifts smaller than k sigma are ignored
    h: float = 8.0  # CUSUM decision threshold (open)
    h_clear: float = 2.0  # the alert resolves once both sums are below this
    cap: float = 16.0  # sums are capped so a long fault resolves soon after it ends
    warmup: int = 24  # intervals learnt before any alarm
    min_rel_sigma: float = 0.01  # sigma floor, relative to the level (a perfectly flat series)
    z_clip: float = 4.0  # residuals beyond this are clipped when learning the spread


@dataclass
class ShiftState:
    """Per-series state of the shift detector; ``open`` is its hysteresis latch."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    s_hi: float = 0.0
    s_lo: float = 0.0
    open: bool = False

    def to_list(self) -> list[Any]:
        return [self.n, self.mean, self.var, self.s_hi, self.s_lo, int(self.open)]

    @classmethod
    def from_list(cls, v: list[Any]) -> ShiftState:
        return cls(int(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4]), bool(v[5]))


@dataclass(frozen=True)
class ShiftStep:
    """What the detector saw at one interval: the series to plot, and any transition."""

    x: float
    expected: float
    sigma: float
    z: float
    s_hi: float
    s_lo: float
    event: str | None  # "open" | "resolve" | None
    direction: int  # +1 up, -1 down, 0 none (of an open alarm)


def shift_scan(state: ShiftState, xs: np.ndarray, cfg: ShiftConfig) -> list[ShiftStep]:
    """Feed the intervals ``xs`` (in time order) to the detector; mutates ``state``.

    The recursion is inherently sequential in time; callers batch many intervals of one
    series (a catch-up replays hours at once) and this loop is the only per-interval work.
    """
    out: list[ShiftStep] = []
    lam, lam_var = cfg.lam, cfg.lam_var
    for x in np.asarray(xs, dtype=np.float64).tolist():
        if state.n == 0:
            state.mean, state.var, state.n = x, 0.0, 1
            out.append(ShiftStep(x, x, 0.0, 0.0, 0.0, 0.0, None, 0))
            continue
        sigma = max(math.sqrt(state.var), cfg.min_rel_sigma * abs(state.mean), 1e-12)
        expected = state.mean
        z = (x - expected) / sigma
        event: str | None = None
        if state.n >= cfg.warmup:
            state.s_hi = min(cfg.cap, max(0.0, state.s_hi + z - cfg.k))
            state.s_lo = min(cfg.cap, max(0.0, state.s_lo - z - cfg.k))
            if not state.open and max(state.s_hi, state.s_lo) > cfg.h:
                state.open, event = True, "open"
            elif state.open and max(state.s_hi, state.s_lo) < cfg.h_clear:
                state.open, event = False, "resolve"
        if not state.open:
            # learn only from in-control data: a fault must not become the baseline
            if state.n < cfg.warmup:
                # warm-up: plain running mean and variance (Welford), every point counts
                state.n += 1
                d = x - state.mean
                state.mean += d / state.n
                state.var += (d * (x - state.mean) - state.var) / state.n
            else:
                zc = max(-cfg.z_clip, min(cfg.z_clip, z))
                resid = zc * sigma
                state.mean += lam * resid
                state.var = (1 - lam_var) * state.var + lam_var * resid * resid
                state.n += 1
        direction = 0
        if state.open:
            direction = 1 if state.s_hi >= state.s_lo else -1
        out.append(ShiftStep(x, expected, sigma, z, state.s_hi, state.s_lo, event, direction))
    return out


# -- pathway ------------------------------------------------------------------------------------


def hours_in_year(year: int) -> float:
    return 24.0 * (366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365)


def _year_start_ms(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000)


def fractional_year(ts_ms: int) -> tuple[int, float]:
    """(calendar year, fraction of it elapsed) at ``ts_ms`` UTC."""
    year = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).year
    start = _year_start_ms(year)
    return year, (ts_ms - start) / (hours_in_year(year) * 3_600_000)


def rolling_rate(
    starts: np.ndarray, tco2e: np.ndarray, hours: np.ndarray, now_ms: int, window_ms: int
) -> tuple[float, float]:
    """Mean emission rate (t/h) over the intervals that start within ``window_ms`` before now,
    and the hours actually covered (so callers can refuse a rate built on too little data)."""
    sel = starts >= now_ms - window_ms
    covered = float(hours[sel].sum())
    if covered <= 0:
        return math.nan, 0.0
    return float(tco2e[sel].sum()) / covered, covered


def projected_year_end(
    ytd_rate_t_per_h: float, recent_rate_t_per_h: float, fraction_elapsed: float, year: int
) -> float:
    """Year-end total if the rest of the year runs at the recent rate.

    The part of the year already gone is valued at the year-to-date mean rate rather than a
    sum, so a twin that started mid-year projects the same as one that saw every hour.
    """
    h = hours_in_year(year)
    f = min(max(fraction_elapsed, 0.0), 1.0)
    return ytd_rate_t_per_h * h * f + recent_rate_t_per_h * h * (1.0 - f)


# -- meter runs ---------------------------------------------------------------------------------


def flat_runs(
    ts: np.ndarray, values: np.ndarray, prev_value: float, prev_run_start: int, rel_tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each reading of one meter (time order), when its current unchanged run began.

    Returns (run_start_ts per reading, changed mask). A reading "changed" when it differs from
    the previous one by more than ``rel_tol`` of its magnitude (absolute floor 1e-9); a run
    start carried in from the previous batch continues if the first reading did not change.
    """
    values = np.asarray(values, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    prev = np.empty_like(values)
    prev[0] = prev_value if math.isfinite(prev_value) else np.nan
    prev[1:] = values[:-1]
    tol = np.maximum(np.abs(values) * rel_tol, 1e-9)
    changed = ~(np.abs(values - prev) <= tol)  # NaN prev -> changed
    marks = np.where(changed, ts, np.int64(-1))
    if not changed[0] and prev_run_start >= 0:
        marks[0] = prev_run_start
    elif not changed[0]:
        marks[0] = ts[0]
    run_start: np.ndarray = np.maximum.accumulate(marks)
    return run_start, changed


def gaps(ts: np.ndarray, prev_ts: int, max_gap_ms: int) -> np.ndarray:
    """Indices i where reading i came more than ``max_gap_ms`` after the one before it."""
    ts = np.asarray(ts, dtype=np.int64)
    prev = np.empty_like(ts)
    prev[0] = prev_ts if prev_ts >= 0 else ts[0]
    prev[1:] = ts[:-1]
    out: np.ndarray = np.flatnonzero(ts - prev > max_gap_ms)
    return out


def config_dict(cfg: ShiftConfig) -> dict[str, float]:
    return {k: float(v) for k, v in asdict(cfg).items()}
