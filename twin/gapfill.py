"""Gap filling by a declared method: what a silent meter's missing intervals are filled with.

A meter may declare, in the cluster YAML, how its missing intervals are filled::

    gap_fill: {method: mrr_conservative, every: 15m, after: 2h, reference_days: 30}
    gap_fill: {method: last_good, every: 1h, after: 1h}
    gap_fill: {method: profile, every: 15m, after: 2h, reference_days: 28, by_weekday: true}

A site and the cluster may declare a ``gap_fill`` too: the default of their meters. A meter's
own declaration overrides its site's, which overrides the cluster's
(``twin.model.Cluster.gap_fill_of``, the one place of the rule); ``{method: none}`` on a meter
(or a site) says it is never filled whatever the level above declares.

* ``every``: the meter's reading interval. Fills are readings of ``[ts - every, ts)`` with
  ``ts`` a multiple of ``every`` since the Unix epoch (UTC): the grid a settlement meter
  reads on, and a deterministic one (a restarted worker computes the same fills). A real
  reading replaces a fill when it has the same meter and the same ``ts`` (the reading
  identity of the stream's dedup rule, ``streams.windows``).
* ``after``: how long an interval must have been missing (its end behind the cluster's
  event-time clock) before it is filled.
* ``reference_days``: the reference period: the ``reference_days`` days before the filled
  interval's start, and in it the meter's own readings of quality ``measured`` (never
  estimates, never fills: a substitute built on substitutes would drift).

Methods:

* ``mrr_conservative``: the conservative substitute of the EU ETS Monitoring and Reporting
  Regulation (Commission Implementing Regulation (EU) 2018/2066, Art. 45(3), for a missing
  hour of a continuously measured parameter): the arithmetic mean of the reference period
  plus twice its standard deviation, ``x̄ + 2σ``. σ is the **sample** standard deviation
  (divisor ``n - 1``): the Regulation asks for "the best estimate of the standard deviation"
  over the reference period, and the reference period is a sample of the meter's behaviour,
  for which the Bessel-corrected estimator is the unbiased one of the variance; it is also
  the larger of the two, so the substitute stays conservative. At least two measured
  readings are needed (one has no spread); with fewer, nothing is filled.
* ``last_good``: the value of the meter's latest ``measured`` or ``estimated`` reading in
  the reference period before the interval.
* ``profile``: the arithmetic mean of the meter's ``measured`` readings of the reference
  period that close the same interval of the day, and, with ``by_weekday: true``, fall on the
  same weekday. A reading's interval of the day is the ``every`` slot its end falls in,
  ``((ts - 1) mod 1 d) // every`` (a reading ending at 00:15 closes slot 0 of a 15m grid), and
  its weekday is that of ``ts - 1``, both in UTC like the fill grid. This is the "like day"
  (comparable day) estimation of interval metering data: an industrial load or a grid
  connection follows its shift pattern through the day and, where the week is planned, the
  weekday, so the same interval of the comparable days is a better estimate of a missing
  interval than a level carried forward (``last_good``) or a flat mean. It is an estimate,
  not the EU ETS conservative substitute: where MRR Art. 45(3) applies, declare
  ``mrr_conservative``. Estimates and fills are left out (an estimate of estimates drifts).
  An interval whose slot has no such reading in its reference period is left missing, and
  the intervals after it are filled all the same (another slot may have its reference).
  UTC: a local-time shift pattern moves an hour at a daylight-saving change, so a reference
  period spanning one mixes both; keep ``reference_days`` short of the change if it matters.

MRR Art. 45 requires substitutes to be replaceable by recovered data: a real reading that
arrives later replaces the fill, exactly (``streams/README.md``, "Gap filling").

Plain typed Python; the declaration is a pydantic model (the cluster YAML is validated with it).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DAY_MS = 86_400_000
#: At most this many intervals of one meter are filled per pass (a long outage is filled
#: over several passes, so one pass never holds the worker for long).
MAX_FILLS_PER_PASS = 500


def duration_ms(text: str) -> int:
    """``"15m"``, ``"2h"``, ``"1d"``, ``"30s"`` in milliseconds."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"duration {text!r} is not a whole number of s, m, h or d (e.g. '15m')")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: whether an interval the method cannot fill ends the fills of a pass: yes where the
    #: reference only shrinks along a gap (MRR, last good: a later interval has no more);
    #: ``profile`` overrides it (another slot of the day may have its reference), and
    #: leaves an interval without one missing
    STOP_AT_UNFILLED: ClassVar[bool] = True

    every: str = Field(description="the meter's reading interval, e.g. 15m")
    after: str = Field(description="how long an interval is missing before it is filled")
    reference_days: int = Field(default=30, ge=1, le=366)

    @field_validator("every", "after")
    @classmethod
    def _duration(cls, v: str) -> str:
        if duration_ms(v) <= 0:
            raise ValueError(f"duration {v!r} must be positive")
        return v

    @field_validator("every")
    @classmethod
    def _divides_a_day(cls, v: str) -> str:
        if DAY_MS % duration_ms(v):
            raise ValueError(f"every {v!r} must divide a day (the fill grid is day-aligned)")
        return v

    @property
    def every_ms(self) -> int:
        return duration_ms(self.every)

    @property
    def after_ms(self) -> int:
        return duration_ms(self.after)

    @property
    def reference_ms(self) -> int:
        return self.reference_days * DAY_MS


class MrrConservative(_Declared):
    method: Literal["mrr_conservative"]


class LastGood(_Declared):
    method: Literal["last_good"]


class Profile(_Declared):
    STOP_AT_UNFILLED: ClassVar[bool] = False

    method: Literal["profile"]
    #: the comparable days are the same weekday (a weekly schedule), not every day
    by_weekday: bool = False


class NoFill(BaseModel):
    """``{method: none}``: never filled, whatever the site or cluster declares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none"]


#: a method that fills (what the stream's gap filler is given)
FillMethod = MrrConservative | LastGood | Profile
GapFill = Annotated[MrrConservative | LastGood | Profile | NoFill, Field(discriminator="method")]


def inherited(*levels: MrrConservative | LastGood | Profile | NoFill | None) -> FillMethod | None:
    """The declaration in force, given the levels' own from the nearest (the meter) to the
    farthest (the cluster): the nearest declared one; ``none`` there means no filling."""
    for decl in levels:
        if decl is not None:
            return None if isinstance(decl, NoFill) else decl
    return None


class RefReading(NamedTuple):
    """A stored reading of the meter, as the reference period sees it."""

    ts: int
    value: float
    quality: str


def conservative_substitute(values: Sequence[float]) -> float | None:
    """Mean + 2 × sample standard deviation (MRR Art. 45(3)); None below two values."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    var = math.fsum((x - mean) ** 2 for x in values) / (n - 1)
    return mean + 2.0 * math.sqrt(var)


def fill_ends(last_ts: int, clock_ms: int, decl: FillMethod) -> list[int]:
    """The grid ends ``ts`` to fill now: after the meter's newest reading ``last_ts``, and
    missing for at least ``after`` (``ts + after <= clock_ms``); at most ``MAX_FILLS_PER_PASS``,
    oldest first."""
    every = decl.every_ms
    first = (last_ts // every + 1) * every
    last = ((clock_ms - decl.after_ms) // every) * every
    if last < first:
        return []
    count = min((last - first) // every + 1, MAX_FILLS_PER_PASS)
    return [first + k * every for k in range(count)]


def day_slot(ts: int, every_ms: int, by_weekday: bool = False) -> int:
    """The interval of the (UTC) day a reading ending at ``ts`` closes, on a grid of
    ``every_ms``; with ``by_weekday``, counted over the week (Monday 00:00 is slot 0)."""
    end = ts - 1
    if by_weekday:  # 1 Jan 1970 was a Thursday: day 0 is weekday 3
        weekday = (end // DAY_MS + 3) % 7
        return weekday * (DAY_MS // every_ms) + (end % DAY_MS) // every_ms
    return (end % DAY_MS) // every_ms


def profile_values(
    decl: Profile, ends: Sequence[int], reference: Sequence[RefReading]
) -> list[float | None]:
    """``profile`` (module docstring): per interval, the mean of the measured readings of
    its reference period in the same slot of the day (or week)."""
    every = decl.every_ms
    usable = sorted((r.ts, r.value) for r in reference if r.quality == "measured")
    times = [t for t, _ in usable]
    out: list[float | None] = []
    for end in ends:
        start = end - every
        slot = day_slot(end, every, decl.by_weekday)
        lo = bisect_left(times, start - decl.reference_ms + 1)
        hi = bisect_left(times, start + 1)
        same = [v for t, v in usable[lo:hi] if day_slot(t, every, decl.by_weekday) == slot]
        out.append(math.fsum(same) / len(same) if same else None)
    return out


def fill_values(
    decl: FillMethod, ends: Sequence[int], reference: Sequence[RefReading]
) -> list[float | None]:
    """The fill of each interval ``[end - every, end)``, None where the method has too few
    reference readings. ``reference`` may hold any of the meter's readings (fills too):
    the method picks what its reference period allows."""
    if isinstance(decl, Profile):
        return profile_values(decl, ends, reference)
    if decl.method == "mrr_conservative":
        usable = sorted((r.ts, r.value) for r in reference if r.quality == "measured")
    else:
        usable = sorted((r.ts, r.value) for r in reference if r.quality != "gap_filled")
    times = [t for t, _ in usable]
    values = [v for _, v in usable]
    out: list[float | None] = []
    for end in ends:
        start = end - decl.every_ms
        hi = bisect_left(times, start + 1)  # readings with ts <= start: before the interval
        lo = bisect_left(times, start - decl.reference_ms + 1)
        if decl.method == "mrr_conservative":
            out.append(conservative_substitute(values[lo:hi]))
        else:
            out.append(values[hi - 1] if hi > lo else None)
    return out
