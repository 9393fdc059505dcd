"""The reading contract's vocabulary, limits and rules, each written once.

A connector judges its readings before it publishes them (the edge, ``twin.readings``, one
reading at a time) and the stream worker judges every record again (``streams.envelope``,
whole batches at once with numpy). Both take their words, their limits and their reasons
from here, so "valid" means one thing and a dead letter says the same thing wherever it was
written. The worker's batch checks are a faster way of reaching the verdicts of the rules
below; the reason a rejected reading carries is always the one these rules give
(``tests/unit/test_contract_paths.py`` runs both paths on the same 10,000 bad inputs).

How the two former rule sets were made one, and why (a plant's data is the measure):

* **One reference time.** Every time rule is judged against one instant, ``ref_ms``: the
  Kafka record's timestamp in the worker (so a replay decides as the first run did) and the
  wall clock at the edge (the record is being made now). A reading more than 5 minutes
  ahead of it is a broken clock.
* **The restatement horizon replaces "before 2000".** A reading is counted when it (or its
  interval's start) lies in the reporting year of ``ref_ms`` or the ``horizon_years`` before
  it; older ones are refused as too old to restate. The worker always refused those, so an
  edge that let a ten-year-old reading through only moved its refusal to a dead-letter topic
  nobody at the plant reads; refusing it at the connector puts the reason where the
  connector's operator sees it. The horizon also catches what the 2000 rule was for (seconds
  sent as milliseconds, an uninitialised clock).
* **The meter's plausible maximum is checked wherever the meter is known**: at the edge when
  it holds the meter index, as the worker always did.
* **Unknown fields are ignored, on both paths.** A plant runs connectors of several versions
  side by side; one that adds a field must not get its readings refused by an older worker
  or edge. Every field the twin reads is checked. ``start`` is such a field only in
  ``readings/2``; in ``readings/1`` it is type-checked and the reading stays an instant.
* **A number the JSON does not spell (NaN, Infinity) makes the message malformed**, not one
  reading bad: no JSON encoder of this project writes them, and the worker's decoders refuse
  them. A connector handing over a Python NaN still gets only that reading refused.
* **The envelope limit is the worker's** (100,000 readings, 8 MiB): the edge refusing less
  than the worker accepts would only refuse good data earlier.
* **Faults are reported one at a time, in the worker's order**, with the worker's wording
  (the texts operators already search dead letters for).
* **A rate is a quantity per hour of its interval.** A reading in a power or flow unit (kW,
  Nm3/h, t/h: ``is_rate_unit``) is the mean rate over ``start..ts``; its quantity is the
  value times the interval in hours (``rate_hours``), and a rate reading without an interval
  (readings/1, or no ``start``) is refused (``RATE_RULE``): an instant has no quantity.
* **Only a bidirectional meter reads below zero** (``allows_negative``): a meter declared
  ``bidirectional: true`` in the cluster YAML (a grid connection that also exports) may; any
  other negative value is a wiring or sign error.

Plain typed Python: no pydantic, no JSON library, no I/O, and nothing heavy to import (the
stream worker loads it at start-up; the carriers and their unit conversions, which only the
index-less edge needs here, are handed in by ``twin.readings``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

# -- vocabulary ----------------------------------------------------------------------------
SCHEMA_V1: Final = "readings/1"
#: readings/2: a reading may say which interval it measures (``start``; its end is ``ts``).
SCHEMA_V2: Final = "readings/2"
SCHEMAS: Final = (SCHEMA_V1, SCHEMA_V2)
CONTENT_TYPE: Final = "application/json"
SCHEMA_HEADER: Final = "clustertwin-schema"
#: The fields every reading carries; ``start`` is optional (readings/2).
FIELDS: Final = ("meter", "ts", "value", "unit", "carrier", "quality")
ENVELOPE_FIELDS: Final = ("schema", "cluster", "site", "source", "sent_at", "readings")
#: Sorted: the worker's quality codes are positions in this tuple.
QUALITIES: Final = ("estimated", "gap_filled", "measured")
#: Emission columns of the live stream, in this order everywhere (state, lines, views) ...
SCOPES: Final = ("s1", "s2_location", "s2_market", "s3_upstream")
#: ... and the twin's names of the same scopes, in the same order.
TWIN_SCOPES: Final = ("scope1", "scope2_location", "scope2_market", "scope3_upstream")
#: ... then scope 1 by gas, t of each (``twin.emissions`` explains each; the last two are
#: not in scope 1: the biogenic CO2 memo and CO2 sent to storage).
GASES: Final = ("co2", "ch4", "n2o", "co2e_other", "co2_biogenic", "co2_captured")

# -- limits --------------------------------------------------------------------------------
#: Clocks drift and gateways batch, but a reading from the future is a broken clock.
MAX_FUTURE_MS: Final = 5 * 60 * 1000
#: A reading's interval spans at most a day (longer ones are split at the source): a
#: restatement reads back the readings that end up to this long after the hours it redoes.
MAX_INTERVAL_MS: Final = 86_400_000
#: An envelope larger than this is a producer bug; Kafka's own limit is set above it.
MAX_READINGS_PER_ENVELOPE: Final = 100_000
#: A message larger than this (after decompression) is refused whole.
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
#: Readings of the reference time's reporting year and of this many years before count.
HORIZON_YEARS: Final = 1
#: A meter's plausible maximum when its index gives none.
DEFAULT_MAX_VALUE: Final = 1e12
#: Timestamps and interval starts lie strictly within +-2**62 ms (int64 arithmetic stays
#: exact on them); an integer value lies strictly within +-2**63 (it must fit an int64).
TS_LIMIT: Final = 2**62
INT_LIMIT: Final = 2**63
#: A reading in one of these units is a power (kW): a rate of energy.
POWER_UNITS: Final = frozenset({"W", "kW", "MW", "GW", "TW"})
#: ... and one in ``<quantity>/<one of these>`` a flow (Nm3/h, t/h, kg/s).
RATE_TIME_UNITS: Final = frozenset({"s", "min", "h", "hr", "d", "day"})
_MS_PER_HOUR: Final = 3_600_000
RATE_RULE: Final = (
    "is a rate (a power or a flow): it must give the interval it was measured over "
    "(readings/2 'start') to be integrated into a quantity [rule rate.needs_interval]"
)


def is_rate_unit(unit: str) -> bool:
    """Whether ``unit`` is a rate (kW, Nm3/h, t/h), judged by its spelling alone.

    Syntactic, so the worker decides it without pint; ``twin.carriers`` converts only the
    rates this names, so both sides agree on which units are rates.
    """
    text = unit.strip()
    if text in POWER_UNITS:
        return True
    num, sep, den = text.rpartition("/")
    return bool(sep and num.strip() and den.strip() in RATE_TIME_UNITS)


def rate_hours(start: int, ts: int) -> float:
    """The hours of an interval: a rate reading's value times this is its quantity (the
    worker's vectorised form computes ``(ts - start) / 3_600_000`` in float64 alike)."""
    return (ts - start) / _MS_PER_HOUR


def allows_negative(meter: object) -> bool:
    """Whether a meter may read below zero: declared ``bidirectional`` (the cluster YAML's
    word), or ``allow_negative`` (the indexes' field). The one rule, for the edge's and the
    worker's index alike."""
    for attr in ("allow_negative", "bidirectional"):
        value = getattr(meter, attr, None)
        if isinstance(value, bool) and value:
            return True
    return False


_YEAR_STARTS: dict[int, int] = {}


def horizon_start(ref_ms: int, years: int = HORIZON_YEARS) -> int:
    """1 January 00:00 UTC of the year ``years`` before the one of ``ref_ms``, epoch ms."""
    year = datetime.fromtimestamp(max(ref_ms, 0) / 1000, tz=UTC).year - years
    start = _YEAR_STARTS.get(year)
    if start is None:
        start = _YEAR_STARTS[year] = int(
            datetime(max(year, 1970), 1, 1, tzinfo=UTC).timestamp() * 1000
        )
    return start


@dataclass(frozen=True)
class Limits:
    """What a plausible envelope looks like; the worker may widen the horizon by config."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_readings: int = MAX_READINGS_PER_ENVELOPE
    max_future_ms: int = MAX_FUTURE_MS
    #: The restatement horizon: readings of the record's reporting (calendar, UTC) year and
    #: of this many years before it are counted, late or not; older ones are refused.
    horizon_years: int = HORIZON_YEARS

    def horizon_start(self, ref_ms: int) -> int:
        """Epoch ms of the oldest reading time counted for a record of ``ref_ms``."""
        return horizon_start(ref_ms, self.horizon_years)


LIMITS: Final = Limits()


# -- what the rules need to know -----------------------------------------------------------
class Sites(Protocol):
    """The clusters and sites an envelope may come from."""

    def has_cluster(self, cluster: str) -> bool: ...

    def has_site(self, cluster: str, site: str) -> bool: ...


class MeterFacts(Protocol):
    """What the rules must know about one meter (the edge's and the worker's index both)."""

    @property
    def site(self) -> str: ...

    @property
    def carrier(self) -> str: ...

    @property
    def allow_negative(self) -> bool: ...

    @property
    def max_value(self) -> float: ...

    @property
    def units(self) -> Iterable[str]:
        """The units the meter declares (named when another is refused)."""
        ...

    def accepts(self, unit: str) -> bool:
        """Whether a reading in ``unit`` can be priced for this meter."""
        ...


class AnySite:
    """No index: any non-empty cluster and site (an edge judging without its meter index)."""

    def has_cluster(self, cluster: str) -> bool:
        return bool(cluster)

    def has_site(self, cluster: str, site: str) -> bool:
        return bool(site)


@dataclass(frozen=True)
class NoIndex:
    """Judge a reading without knowing its meter: only the rules that need no index apply
    (a known carrier, a unit of that carrier, no negative flow)."""

    carriers: tuple[str, ...]
    #: whether a unit measures a carrier (the twin's conversions)
    compatible: Callable[[str, str], bool]


# -- the rules -----------------------------------------------------------------------------
_HEADER_VALUES = frozenset(v.encode() for v in SCHEMAS)


def message_problem(
    raw: bytes | None, headers: Iterable[tuple[str, bytes]], limits: Limits = LIMITS
) -> str:
    """Why a Kafka record is refused before its bytes are decoded ("" when it is not)."""
    if not raw:
        return "empty message"
    if len(raw) > limits.max_message_bytes:
        return f"message of {len(raw)} bytes (limit {limits.max_message_bytes})"
    for name, value in headers:
        if name == SCHEMA_HEADER and value not in _HEADER_VALUES:
            return f"unsupported schema header {value!r}"
    return ""


def malformed(exc: Exception) -> str:
    """The reason of a message that is not JSON, naming what the decoder found."""
    return f"malformed JSON: {exc}"


def envelope_problem(body: Any, sites: Sites, key: bytes | None, limits: Limits = LIMITS) -> str:
    """Why a decoded envelope is refused whole ("" when it is not); first fault only."""
    if not isinstance(body, dict):
        return f"envelope is not a JSON object (got {type(body).__name__})"
    if body.get("schema") not in SCHEMAS:
        return f"unsupported schema {body.get('schema')!r} (expected one of {', '.join(SCHEMAS)})"
    cluster, site = body.get("cluster"), body.get("site")
    if not isinstance(cluster, str) or not sites.has_cluster(cluster):
        return f"unknown cluster {cluster!r}"
    if not isinstance(site, str) or not sites.has_site(cluster, site):
        return f"unknown site {site!r} in cluster {cluster!r}"
    if key is not None and key != site.encode():
        # The site's state lives on the partition its key hashes to; a mismatched key would
        # put its readings on another partition and break per-site ordering and de-duplication.
        return f"Kafka key {key!r} does not match site {site!r}"
    if not isinstance(body.get("source"), str):
        return "field 'source' must be a string (the connector's name)"
    if type(body.get("sent_at")) is not int:
        return "field 'sent_at' must be an integer (epoch ms)"
    readings = body.get("readings")
    if not isinstance(readings, list) or not readings:
        return "field 'readings' must be a non-empty list"
    if len(readings) > limits.max_readings:
        return f"{len(readings)} readings in one envelope (limit {limits.max_readings})"
    return ""


def reading_problem(r: Any) -> str:
    """Why a reading's shape is wrong ("" when it is not): types and ranges, no meaning."""
    if type(r) is not dict and not isinstance(r, dict):
        return f"reading is not a JSON object (got {type(r).__name__})"
    try:
        meter, ts, value, unit, carrier, quality = (
            r["meter"],
            r["ts"],
            r["value"],
            r["unit"],
            r["carrier"],
            r["quality"],
        )
    except KeyError:
        return f"reading lacks field(s) {', '.join(f for f in FIELDS if f not in r)}"
    if type(meter) is not str and not isinstance(meter, str):
        return "field 'meter' must be a string"
    if type(ts) is not int:
        return "field 'ts' must be an integer (epoch ms UTC)"
    if not -TS_LIMIT < ts < TS_LIMIT:
        return f"timestamp {ts} out of range"
    kind = type(value)
    if kind is not float and kind is not int:
        return f"field 'value' must be a number (got {kind.__name__})"
    if kind is int and not -INT_LIMIT < value < INT_LIMIT:
        return f"value {value} out of range"
    if not (isinstance(unit, str) and isinstance(carrier, str) and isinstance(quality, str)):
        name = next(n for n in ("unit", "carrier", "quality") if not isinstance(r[n], str))
        return f"field {name!r} must be a string"
    if "start" in r:
        start = r["start"]
        if type(start) is not int:
            return "field 'start' must be an integer (epoch ms UTC, the interval's start)"
        if not -TS_LIMIT < start < TS_LIMIT:
            return f"interval start {start} out of range"
    return ""


def shape_reason(position: int, problem: str) -> str:
    """A reading's shape fault as its dead letter says it."""
    return f"reading {position}: {problem}"


def unknown_meter(meter: object, cluster: str) -> str:
    return f"unknown meter {meter!r} in cluster {cluster!r}"


def reading_fault(
    r: Mapping[str, Any],
    position: int,
    meter: MeterFacts | NoIndex | None,
    site: str,
    cluster: str,
    ref_ms: int,
    oldest_ms: int,
    limits: Limits = LIMITS,
    intervals: bool = True,
) -> str | None:
    """Why a well-shaped reading (``reading_problem`` found nothing) is refused, or None.

    ``meter``: the facts of ``r["meter"]`` from the index, None when the index does not know
    it, or a ``NoIndex`` when there is no index (only the context-free rules apply).
    ``oldest_ms`` is ``limits.horizon_start(ref_ms)``, computed once by the caller.
    ``intervals``: the envelope is readings/2, so ``start`` is read.
    """
    why = _fault(r, meter, site, cluster)
    if why is None:
        if is_rate_unit(r["unit"]) and not (intervals and "start" in r):
            why = f"unit {r['unit']!r} {RATE_RULE}"
        else:
            why = _time_fault(r, ref_ms, oldest_ms, limits, intervals)
        if why is None:
            return None
    return f"reading {position} (meter {r['meter']!r}): {why}"


def _fault(
    r: Mapping[str, Any], meter: MeterFacts | NoIndex | None, site: str, cluster: str
) -> str | None:
    """The meter, quality and value rules, in the worker's order; the fault without prefix."""
    unit, carrier = r["unit"], r["carrier"]
    if meter is None:
        return unknown_meter(r["meter"], cluster)
    if isinstance(meter, NoIndex):
        if carrier not in meter.carriers:
            return f"carrier {carrier!r} not one of {', '.join(meter.carriers)}"
        if not meter.compatible(carrier, unit):
            return f"unit {unit!r} is not a unit of {carrier}"
        allow_negative, max_value = False, math.inf
    else:
        if meter.site != site:
            return f"meter belongs to site {meter.site!r}, not {site!r}"
        if not meter.accepts(unit):
            return f"unit {unit!r} not accepted (accepts {', '.join(meter.units)})"
        if carrier != meter.carrier:
            return f"carrier {carrier!r} does not match the meter's {meter.carrier!r}"
        allow_negative, max_value = meter.allow_negative, meter.max_value
    quality = r["quality"]
    if quality not in QUALITIES:
        return f"quality {quality!r} not one of {', '.join(QUALITIES)}"
    value = float(r["value"])  # as the worker holds it: an int is judged as its float
    if not math.isfinite(value):
        return f"value {value} is not finite"
    if value < 0 and not allow_negative:
        return f"negative value {value} for a meter that cannot run backwards"
    if abs(value) > max_value:
        return f"value {value} above the meter's plausible maximum {max_value}"
    return None


def _time_fault(
    r: Mapping[str, Any], ref: int, oldest: int, limits: Limits, intervals: bool
) -> str | None:
    """The time rules against the reference time and the horizon; the fault without prefix."""
    t: int = r["ts"]
    start: int | None = r.get("start") if intervals else None
    if t > ref + limits.max_future_ms:
        return f"timestamp {t} is {(t - ref) / 1000:.0f} s ahead of the record time"
    if t < 0:
        return f"timestamp {t} is negative"
    if start is not None:
        if start < 0:
            return f"interval start {start} is negative"
        if start >= t:
            return f"interval start {start} is not before its end (ts {t})"
        if t - start > MAX_INTERVAL_MS:
            return (
                f"interval of {(t - start) / 3_600_000:.1f} h is longer than the 24 h limit "
                "(split it at the source)"
            )
        t = start  # the whole interval must lie within the horizon
    if t < oldest:
        since = datetime.fromtimestamp(oldest / 1000, tz=UTC).date().isoformat()
        return (
            f"timestamp {t} is before {since}, beyond the restatement horizon (the record's "
            f"reporting year and {limits.horizon_years} before it): too old to restate"
        )
    return None
