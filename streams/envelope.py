"""Decode and validate a batch of reading envelopes at once.

Per-message Python work is the pipeline's ceiling, so each envelope costs one orjson decode
and a handful of C-level list operations (``map(itemgetter)``, ``zip``); every semantic check
(known meter of this site, accepted unit, carrier, quality, finite and plausible value,
timestamp near the record's own timestamp) runs once over the whole batch with numpy.
Only envelopes that fail the cheap structural check take the reading-by-reading slow path,
so one bad reading costs its envelope a slower decode, never its neighbours.

Well-formed envelopes are decoded by msgspec straight into typed structs: the JSON types are
checked while parsing and no dict is built per reading (dicts and their freeing were a third
of a batch's time). Anything msgspec refuses is decoded again by orjson into plain objects
and judged field by field.

The rules, their limits and their reasons are ``twin.contract``'s, the ones a connector
applies before publishing: the batch checks here reach the same verdicts faster, and every
reject carries the reason the contract's scalar rules give it (a test runs both on the same
inputs). Timestamps are judged against the Kafka record timestamp, not the wall clock, so a
replay of the same records makes the same decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter, methodcaller
from typing import Any, Literal

import msgspec
import numpy as np
import orjson

from streams.meter_vectors import MeterVectors
from twin import deadletter
from twin.contract import (
    INT_LIMIT,
    LIMITS,
    MAX_INTERVAL_MS,
    QUALITIES,
    RATE_RULE,
    SCHEMA_V2,
    TS_LIMIT,
    envelope_problem,
    is_rate_unit,
    malformed,
    message_problem,
    reading_fault,
    reading_problem,
    shape_reason,
)
from twin.contract import Limits as Limits  # the worker's modules configure it from here

log = logging.getLogger(__name__)

QUALITY_CODES = {q: i for i, q in enumerate(QUALITIES)}
QUALITY_NAMES = list(QUALITIES)
_INT = {int}
_NUMBER = {int, float}
#: Largest dead-letter payload: what an 8 MiB topic (the stack's and the worker-created
#: dead-letter topic's ``max.message.bytes``) carries with room left for the headers. A bad
#: message can be bigger (``Limits.max_message_bytes`` is judged after decompression); its
#: dead letter keeps this much of it and says so, rather than failing the send and stalling
#: the partition behind a message that can never be dead-lettered.
MAX_DEADLETTER_BYTES = 8 * 1024 * 1024 - 64 * 1024
#: The start column of a reading without an interval while a batch is judged, so that an
#: explicit negative start (-1 included) is refused like any other; the accepted columns say
#: -1 for "no interval", as the windows expect. The one start it hides is an explicit
#: -2**63, read as "no interval" where the contract calls it out of range.
NO_START = -(2**63)


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record the pipeline uses (decoupled from Faust/aiokafka types)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Reject:
    """Something that goes to the dead-letter (or late) topic, with why and where from."""

    record: Record
    reason: str
    index: int | None = None  # reading index inside the envelope; None = the whole message
    reading: Any = None  # the reading as decoded (for per-reading rejects)
    envelope: dict[str, Any] | None = None

    def payload(self) -> bytes:
        """Original bytes for a whole message; an envelope of one for a single reading.

        An envelope of one keeps the rejected reading replayable into ``readings`` as it is,
        once fixed. Either is cut at ``MAX_DEADLETTER_BYTES`` (see ``headers``).
        """
        return self._full_payload()[:MAX_DEADLETTER_BYTES]

    def _full_payload(self) -> bytes:
        if self.index is None or self.envelope is None:
            return self.record.value or b""
        env = {k: v for k, v in self.envelope.items() if k != "readings"}
        env["readings"] = [self.reading]
        return orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)

    def headers(self, kind: str = "deadletter") -> list[tuple[str, bytes]]:
        hs = [
            (k, v)
            for k, v in self.record.headers
            if not k.startswith("clustertwin-dl-") and k != "clustertwin-reason"
        ]
        why = self.reason.encode("utf-8", "replace")[: deadletter.MAX_REASON_BYTES]
        hs += [
            # the connectors' edge validation names its reason header so; same meaning
            (deadletter.REASON_HEADER, why),
            (deadletter.KIND_HEADER, kind.encode()),
            ("clustertwin-dl-reason", why),
            ("clustertwin-dl-topic", self.record.topic.encode()),
            ("clustertwin-dl-partition", str(self.record.partition).encode()),
            ("clustertwin-dl-offset", str(self.record.offset).encode()),
            ("clustertwin-dl-time", str(int(time.time() * 1000)).encode()),
        ]
        if self.index is not None:
            hs.append((deadletter.READING_INDEX_HEADER, str(self.index).encode()))
        size = len(self._full_payload())
        if size > MAX_DEADLETTER_BYTES:
            # the payload is the first MAX_DEADLETTER_BYTES bytes; this is the whole size
            hs.append((deadletter.TRUNCATED_HEADER, str(size).encode()))
        return hs


@dataclass
class EnvelopeRejects(Reject):
    """The rejected readings of one envelope as one dead letter (``twin.deadletter``).

    Its value is the envelope's original bytes (cut at ``MAX_DEADLETTER_BYTES``), its
    ``clustertwin-dl-rejected`` header the indices grouped by reason: one message, not one
    per reading, so a 50,000-reading envelope of bad readings is one send.
    """

    grouped: deadletter.RejectedReadings | None = None

    def _full_payload(self) -> bytes:
        return self.record.value or b""

    def headers(self, kind: str = "deadletter") -> list[tuple[str, bytes]]:
        hs = super().headers(kind)
        assert self.grouped is not None
        hs.append((deadletter.REJECTED_HEADER, self.grouped.encode()))
        return hs


def group_rejects(
    rejects: Sequence[Reject], counted: Sequence[CountedRejects] = ()
) -> list[Reject]:
    """One dead letter per record: a whole message as it is, the rejected readings of an
    envelope grouped into one ``EnvelopeRejects`` (in the order of their first reject)."""
    out: list[Reject] = []
    by_record: dict[tuple[str, int, int], EnvelopeRejects] = {}

    def group_of(rec: Record, readings: int) -> deadletter.RejectedReadings:
        key = (rec.topic, rec.partition, rec.offset)
        group = by_record.get(key)
        if group is None:
            group = by_record[key] = EnvelopeRejects(
                rec, "", grouped=deadletter.RejectedReadings(readings)
            )
            out.append(group)
        assert group.grouped is not None
        return group.grouped

    for r in rejects:
        if r.index is None:
            out.append(r)
            continue
        n = len(r.envelope["readings"]) if r.envelope is not None else 0
        group_of(r.record, n).add(r.index, r.reason)
    for c in counted:
        group_of(c.record, c.readings).groups.setdefault(c.rule, []).extend(c.indices.tolist())
    for group in by_record.values():
        assert group.grouped is not None
        group.reason = group.grouped.summary()
    return out


#: an int or a float, as JSON numbers come (a typing form, which mypy does not take as a type)
_JSON_NUMBER: Any = int | float


def _one_of(values: Iterable[str]) -> Any:
    """The catalog's strings as a msgspec ``Literal``, or ``str`` when there are none.

    msgspec matches a ``Literal`` string in C and returns the catalog's own string object,
    not a new one: every reading of a meter then carries the same key objects, whose hashes
    are cached and whose comparisons are by identity. That halves the cost of the per-reading
    (meter, unit, carrier, quality) lookup, and a reading allocates four strings fewer.
    """
    choices = tuple(sorted(set(values)))
    return Literal.__getitem__(choices) if choices else str


def _typed_decoder(catalog: MeterVectors) -> Any:
    """msgspec decoder of well-formed envelopes for this catalog's meters (cached on it).

    A meter, carrier or quality outside the catalog fails the typed decode like any other
    mismatch, and its envelope is judged on plain JSON by the rules that name the bad field.
    Units stay plain strings: the twin converts units it can parse, which no list holds.
    Structs hold no cycles (``gc=False``), so the GC need not track the millions of them;
    unknown fields are ignored, as the slow path does.
    """
    cached: Any = getattr(catalog, "_typed_decoder", None)
    if cached is None:
        reading = msgspec.defstruct(
            "TypedReading",
            [
                ("meter", _one_of(catalog.index)),
                ("ts", int),
                ("value", _JSON_NUMBER),
                ("unit", str),
                ("carrier", _one_of(catalog.carrier)),
                ("quality", _one_of(QUALITIES)),
                ("start", int, NO_START),
            ],
            gc=False,
        )
        envelope = msgspec.defstruct(
            "TypedEnvelope",
            [
                ("schema", str),
                ("cluster", str),
                ("site", str),
                ("source", str),
                ("sent_at", int),
                ("readings", list[reading]),  # type: ignore[valid-type]
            ],
            gc=False,
        )
        cached = msgspec.json.Decoder(envelope)
        catalog._typed_decoder = cached  # type: ignore[attr-defined]
    return cached


@dataclass
class Envelope:
    """A valid envelope header; its accepted readings live in the batch arrays."""

    record: Record
    cluster: str
    site: str
    source: str
    _body: dict[str, Any] | None = None
    v2: bool = False  # readings/2: its readings may carry an interval start
    readings: int = 0  # how many readings it holds

    @property
    def body(self) -> dict[str, Any]:
        """The envelope as plain JSON objects, decoded only when a reading is rejected."""
        if self._body is None:
            self._body = orjson.loads(self.record.value or b"")
        return self._body


@dataclass(frozen=True)
class CountedRejects:
    """Rejected readings of one envelope past ``MAX_EXPLAINED_READINGS``, refused for one
    reason (a shape problem, or the batch check that failed): counted and listed exactly,
    as index arrays rather than a ``Reject`` per reading."""

    record: Record
    rule: str
    indices: np.ndarray
    readings: int  # in the envelope


@dataclass
class DecodedBatch:
    envelopes: list[Envelope] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    counted: list[CountedRejects] = field(default_factory=list)
    # one entry per candidate reading (structurally valid), aligned arrays
    env: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    reading_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    meter: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    row: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    # interval start (readings/2), -1 for a reading of an instant
    start: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def reading(self, i: int) -> Any:
        env = self.envelopes[int(self.env[i])]
        return env.body["readings"][int(self.reading_index[i])]

    def reject_reading(self, i: int, reason: str, into: list[Reject] | None = None) -> None:
        env = self.envelopes[int(self.env[i])]
        (self.rejects if into is None else into).append(
            Reject(
                env.record,
                reason,
                index=int(self.reading_index[i]),
                reading=self.reading(i),
                envelope=env.body,
            )
        )

    def deadletters(self) -> list[Reject]:
        """What goes to the dead-letter topic: one message per refused record or per
        envelope with rejected readings (``group_rejects``)."""
        return group_rejects(self.rejects, self.counted)

    def rejected_readings(self) -> int:
        """Readings refused one by one (not counting whole refused messages)."""
        explained = sum(1 for r in self.rejects if r.index is not None)
        return explained + sum(c.indices.size for c in self.counted)

    def select(self, mask: np.ndarray) -> None:
        for name in ("env", "reading_index", "meter", "row", "ts", "value", "quality", "start"):
            setattr(self, name, getattr(self, name)[mask])


def decode_batch(
    records: Sequence[Record], catalog: MeterVectors, limits: Limits | None = None
) -> DecodedBatch:
    """Decode records; structurally and semantically invalid parts land in ``rejects``.

    Envelopes are decoded one by one (one msgspec or orjson call each); their readings are
    then concatenated and turned into columns for the whole batch at once (``_columns``), so
    the per-reading Python work is a few C-level passes. Only when a structural check fails
    does the batch fall back to envelope by envelope, and only the failing envelope to the
    reading-by-reading slow path. The verdicts are those of ``twin.contract``'s rules; a
    rejected reading carries the reason those rules give.
    """
    limits = limits or LIMITS
    out = DecodedBatch()
    pending = _Pending(_lookup(catalog), catalog, out)
    typed_decoder = _typed_decoder(catalog)
    for record in records:
        read = _read_envelope(record, typed_decoder, catalog, limits, out.rejects)
        if read is not None:
            pending.add(record, *read)
    pending.flush()
    if pending.parts:
        cols = _assemble(out, pending.parts)
        _judge(out, cols.code, pending.lookup, catalog, limits)
    return out


def _read_envelope(
    record: Record, typed_decoder: Any, catalog: MeterVectors, limits: Limits, rejects: list[Reject]
) -> tuple[dict[str, Any], bool] | None:
    """A record's envelope as a dict (its readings msgspec structs when ``typed``), or None
    when the record is refused whole (its reject added to ``rejects``)."""
    problem = message_problem(record.value, record.headers, limits)
    if problem:
        rejects.append(Reject(record, problem))
        return None
    raw = record.value
    assert raw is not None  # message_problem refuses an empty one
    body: Any
    try:
        typed_env = typed_decoder.decode(raw)
        if not _JSON_INT_MIN <= typed_env.sent_at < _JSON_INT_MAX:
            raise ValueError("an integer the plain path reads as a float")
        # the same header checks as the slow path; the readings stay structs
        body = {
            "schema": typed_env.schema,
            "cluster": typed_env.cluster,
            "site": typed_env.site,
            "source": typed_env.source,
            "sent_at": typed_env.sent_at,
            "readings": typed_env.readings,
        }
        typed = True
    except (msgspec.MsgspecError, ValueError, RecursionError):
        # invalid UTF-8 is a ValueError; msgspec skipping a deeply nested unknown field
        # raises RecursionError (orjson refuses nesting past 1,024 levels: malformed)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            rejects.append(Reject(record, malformed(exc)))
            return None
        typed = False
    problem = envelope_problem(body, catalog, record.key, limits)
    if problem:
        rejects.append(Reject(record, problem))
        return None
    return body, typed


@dataclass
class _Pending:
    """Envelopes whose readings wait to be turned into columns, a chunk at a time."""

    lookup: _Lookup
    catalog: MeterVectors
    out: DecodedBatch
    groups: list[tuple[int, list[Any]]] = field(default_factory=list)  # (envelope id, readings)
    typed: bool = True  # whether ``groups`` holds msgspec structs (else orjson dicts)
    readings: int = 0
    parts: list[tuple[np.ndarray, np.ndarray, _Columns]] = field(default_factory=list)

    def add(self, record: Record, body: dict[str, Any], typed: bool) -> None:
        if typed != self.typed and self.groups:
            # keep arrival order across the two kinds: the first of two equal timestamps is
            # the one accepted
            self.flush()
        self.typed = typed
        self.groups.append((len(self.out.envelopes), body["readings"]))
        self.out.envelopes.append(
            Envelope(
                record,
                body["cluster"],
                body["site"],
                body["source"],
                None if typed else body,
                body["schema"] == SCHEMA_V2,
                len(body["readings"]),
            )
        )
        self.readings += len(body["readings"])
        if self.readings >= _CHUNK:
            self.flush()  # columns while the fresh readings are still in the CPU cache

    def flush(self) -> None:
        if self.groups:
            self.parts.extend(
                _decode_groups(self.groups, self.lookup, self.catalog, self.out, self.typed)
            )
        self.groups = []
        self.readings = 0


def _assemble(out: DecodedBatch, parts: list[tuple[np.ndarray, np.ndarray, _Columns]]) -> _Columns:
    """The batch's columns from the parts decoded chunk by chunk, set on ``out``."""
    if len(parts) == 1:
        env, ridx, cols = parts[0]
    else:
        env = np.concatenate([p[0] for p in parts])
        ridx = np.concatenate([p[1] for p in parts])
        cols = _Columns(
            np.concatenate([p[2].ts for p in parts]),
            np.concatenate([p[2].value for p in parts]),
            np.concatenate([p[2].code for p in parts]),
            np.concatenate([p[2].start for p in parts]),
        )
    out.env = env
    out.reading_index = ridx
    out.ts = cols.ts
    out.value = cols.value
    # an interval is a readings/2 field: a readings/1 reading stays an instant
    v2 = np.fromiter((e.v2 for e in out.envelopes), bool, len(out.envelopes))
    out.start = np.where(v2[env], cols.start, NO_START)
    return cols


def _judge(
    out: DecodedBatch, code: np.ndarray, lookup: _Lookup, catalog: MeterVectors, limits: Limits
) -> None:
    """The contract's rules over the whole batch at once; rejected readings leave ``out``.

    ``code`` indexes the (meter, unit, carrier, quality) combinations seen valid before: one
    lookup stands for "known meter, accepted unit, its carrier, a known quality".
    """
    meter, row, quality, rate_of = lookup.arrays()
    good = code >= 0
    safe = np.where(good, code, 0)
    out.meter = meter[safe]
    out.row = row[safe]
    out.quality = quality[safe]
    rate = rate_of[safe]
    site_code = {key: k for k, key in enumerate(catalog.sites)}
    env_site = np.array(
        [site_code[(env.cluster, env.site)] for env in out.envelopes], dtype=np.int64
    )
    site_ok = _meter_site_codes(catalog, site_code)[out.meter] == env_site[out.env]
    value = out.value
    finite = np.isfinite(value)
    sign_ok = (value >= 0) | catalog.allow_negative[out.meter]
    size_ok = np.abs(value) <= catalog.max_value[out.meter]
    ref_env = np.array([env.record.timestamp for env in out.envelopes], dtype=np.int64)
    oldest_env = np.array([limits.horizon_start(int(t)) for t in ref_env.tolist()], np.int64)
    ref, oldest = ref_env[out.env], oldest_env[out.env]
    ts, start = out.ts, out.start
    has = start != NO_START
    interval_ok = ~has | ((start >= 0) & (start < ts) & (ts - start <= MAX_INTERVAL_MS))
    ts_ok = (ts >= 0) & (ts <= ref + limits.max_future_ms) & (np.where(has, start, ts) >= oldest)
    rate_ok = ~rate | has  # RATE_RULE: a rate needs its interval
    checks = (good, site_ok, finite, sign_ok, size_ok, ts_ok, interval_ok, rate_ok)
    good = np.logical_and.reduce(checks)
    if rate.any():
        # a rate's quantity: its value times the interval's hours (``contract.rate_hours``)
        hours = np.where(has & rate, ts - np.where(has, start, ts), 0) / 3_600_000
        out.value = np.where(rate, value * hours, value)
    if not good.all():
        _reject_bad(out, good, checks, catalog, ref, oldest, limits)
        out.select(good)
    out.start[out.start == NO_START] = -1  # what the windows read as "no interval"


#: Rejected readings of one envelope whose reasons the contract's scalar rules spell out;
#: the others are named by the batch check that failed (exact, but not worded per reading).
#: Bounds a bad envelope's cost to about its decode: 100,000 bad readings explained one by
#: one cost ~0.5 s more, and a burst of them would hold a batch past the stall watchdog.
MAX_EXPLAINED_READINGS = 1000
#: What each batch check of ``_judge`` refuses, in its order (the first failing one names it).
_CHECK_RULES = (
    "meter unknown here, or its unit, carrier or quality not accepted",
    "meter of another site",
    "value is not finite",
    "negative value for a meter that cannot run backwards",
    "value above the meter's plausible maximum",
    "timestamp ahead of the record time, negative or beyond the restatement horizon",
    "interval start out of range or the interval longer than 24 h",
    f"unit {RATE_RULE}",
)


def _reject_bad(
    out: DecodedBatch,
    good: np.ndarray,
    checks: tuple[np.ndarray, ...],
    catalog: MeterVectors,
    ref: np.ndarray,
    oldest: np.ndarray,
    limits: Limits,
) -> None:
    """Reject the readings ``good`` refuses: the first ``MAX_EXPLAINED_READINGS`` of each
    envelope with the contract's own reason, the rest with the failed check's name."""
    bad = np.flatnonzero(~good)
    envs = out.env[bad]
    order = np.argsort(envs, kind="stable")
    first = np.searchsorted(envs[order], envs[order], side="left")
    rank = np.empty(bad.size, np.int64)
    rank[order] = np.arange(bad.size) - first
    explained = rank < MAX_EXPLAINED_READINGS
    for i in bad[explained].tolist():
        out.reject_reading(i, _reason(catalog, out, i, int(ref[i]), int(oldest[i]), limits))
    rest = bad[~explained]
    if not rest.size:
        return
    # the rest, as index arrays per (envelope, failed check): no Python object per reading
    failed = np.argmin(np.stack([c[rest] for c in checks]), axis=0)  # the first False
    key = out.env[rest] * len(checks) + failed
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    for k, part in zip(keys.tolist(), np.split(order, starts[1:]), strict=True):
        env = out.envelopes[k // len(checks)]
        rule = (
            f"{_CHECK_RULES[k % len(checks)]} (reason not spelled out past "
            f"{MAX_EXPLAINED_READINGS} rejected readings of an envelope)"
        )
        out.counted.append(
            CountedRejects(env.record, rule, out.reading_index[rest[part]], env.readings)
        )


# orjson reads integers outside [-2**63, 2**64) as floats; msgspec keeps them integers
_JSON_INT_MIN, _JSON_INT_MAX = -(2**63), 2**64
_START_DICT = methodcaller("get", "start", NO_START)
_START_STRUCT = attrgetter("start")
_FROM_DICT = (
    itemgetter("ts"),
    itemgetter("value"),
    itemgetter("meter", "unit", "carrier", "quality"),
)
_FROM_STRUCT = (
    attrgetter("ts"),
    attrgetter("value"),
    attrgetter("meter", "unit", "carrier", "quality"),
)
_TS_LIMIT = TS_LIMIT
# readings turned into columns at once: big enough to amortise the per-call overhead, small
# enough for the just-decoded objects to still be in cache (a reading is ~0.5 KB of objects)
_CHUNK = 8192
_VALUE_LIMIT = INT_LIMIT


@dataclass
class _Columns:
    ts: np.ndarray
    value: np.ndarray
    code: np.ndarray  # index into ``_Lookup`` arrays, -1 when not a known valid combination
    start: np.ndarray  # interval start, -1 where the reading gives none


def _columns(
    readings: list[Any], lookup: _Lookup, catalog: MeterVectors, typed: bool = False
) -> _Columns | None:
    """Columns of structurally valid readings; None if any reading is not (then slow path).

    A missing field raises KeyError, a reading that is not an object TypeError, an
    unhashable field (a list, an object) TypeError in the lookup: all send the caller to a
    finer path. Types are checked over whole columns (``set(map(type, ...))``), in C.
    """
    n = len(readings)
    get_ts, get_value, get_key = _FROM_STRUCT if typed else _FROM_DICT
    try:
        if typed:
            # msgspec has typed them already (ts an int, value an int or a float): straight
            # into arrays, without a list per column. An int beyond int64 is structural:
            # np.fromiter refuses it for ts; for values, only a figure that reads as 2**63
            # or more in float can be one, and then the exact check runs on the objects.
            ts_a = np.fromiter(map(get_ts, readings), np.int64, n)  # OverflowError > int64
            start_a = np.fromiter(map(_START_STRUCT, readings), np.int64, n)
            value_a = np.fromiter(map(get_value, readings), np.float64, n)
            if (
                n
                and np.abs(value_a).max() >= _VALUE_LIMIT
                and _int_beyond_int64(list(map(get_value, readings)))
            ):
                return None
        else:
            ts = list(map(get_ts, readings))
            values = list(map(get_value, readings))
            vt = set(map(type, values))
            if set(map(type, ts)) != _INT or not vt <= _NUMBER:
                return None
            if (
                int in vt
                and (max(values) >= _VALUE_LIMIT or min(values) <= -_VALUE_LIMIT)
                # only an int out of int64 is structural; a huge float beside an int is a
                # plausibility reject later (the slow path accepts it: its columns must exist)
                and _int_beyond_int64(values)
            ):
                return None
            ts_a = np.array(ts, np.int64)  # OverflowError beyond int64
            starts = list(map(_START_DICT, readings))
            if set(map(type, starts)) - _INT:
                return None
            start_a = np.array(starts, np.int64)
            value_a = np.array(values, np.float64)
        if n and (ts_a.max() >= _TS_LIMIT or ts_a.min() <= -_TS_LIMIT):
            return None
        if n and (start_a.max() >= _TS_LIMIT or _start_below_range(start_a)):
            return None
        code = np.fromiter(map(lookup.codes.__getitem__, map(get_key, readings)), np.int64, n)
    except (KeyError, TypeError, OverflowError):
        return None
    missed = np.flatnonzero(code < 0)
    if missed.size:
        # combinations not seen before (a new meter or quality, another unit the twin
        # converts) are settled once each and remembered if valid; invalid ones stay -1
        # and the caller says why, reading by reading
        keys = [get_key(readings[i]) for i in missed.tolist()]
        learnt = {k: lookup.learn(catalog, *k) for k in set(keys)}
        code[missed] = [learnt[k] for k in keys]
    return _Columns(ts_a, value_a, code, start_a)


def _start_below_range(start: np.ndarray) -> bool:
    """An explicit start at or below -2**62 (``NO_START``, the absent one, lies below too)."""
    return bool(start.min() <= -_TS_LIMIT and ((start <= -_TS_LIMIT) & (start != NO_START)).any())


def _int_beyond_int64(values: list[Any]) -> bool:
    return any(type(v) is int and not -_VALUE_LIMIT < v < _VALUE_LIMIT for v in values)


def _decode_groups(
    groups: list[tuple[int, list[Any]]],
    lookup: _Lookup,
    catalog: MeterVectors,
    out: DecodedBatch,
    typed: bool,
) -> list[tuple[np.ndarray, np.ndarray, _Columns]]:
    """(envelope ids, reading indexes, columns) for the structurally valid readings.

    ``typed``: the readings are msgspec structs; an envelope of them that still fails (an
    integer beyond int64, a timestamp beyond 2**62) is judged on its plain JSON objects.
    """
    lengths = np.fromiter((len(g[1]) for g in groups), np.int64, len(groups))
    envs = np.fromiter((g[0] for g in groups), np.int64, len(groups))
    if len(groups) == 1:
        every = groups[0][1]
    else:
        every = []
        for _, readings in groups:
            every.extend(readings)
    cols = _columns(every, lookup, catalog, typed)
    if cols is not None:
        starts = np.cumsum(lengths) - lengths
        ridx = np.arange(len(every), dtype=np.int64) - np.repeat(starts, lengths)
        return [(np.repeat(envs, lengths), ridx, cols)]
    parts = []
    for e, group in groups:
        readings = out.envelopes[e].body["readings"] if typed else group
        cols = _columns(readings, lookup, catalog)
        if cols is not None:
            n = len(readings)
            parts.append((np.full(n, e, np.int64), np.arange(n, dtype=np.int64), cols))
            continue
        env = out.envelopes[e]
        keep: list[Any] = []
        index: list[int] = []
        past: dict[str, list[int]] = {}  # problem -> indices, past MAX_EXPLAINED_READINGS
        for i, r in enumerate(readings):
            problem = reading_problem(r)
            if problem:
                if i - len(index) >= MAX_EXPLAINED_READINGS:
                    past.setdefault(problem, []).append(i)
                    continue
                reason = shape_reason(i, problem)
                out.rejects.append(
                    Reject(env.record, reason, index=i, reading=r, envelope=env.body)
                )
                continue
            keep.append(r)
            index.append(i)
        out.counted.extend(
            CountedRejects(env.record, p, np.array(ix, np.int64), len(readings))
            for p, ix in past.items()
        )
        if keep:
            cols = _columns(keep, lookup, catalog)
            assert cols is not None, "readings that passed the slow path are structurally valid"
            parts.append((np.full(len(keep), e, np.int64), np.array(index, np.int64), cols))
    return parts


class _Codes(dict[tuple[str, str, str, str], int]):
    """A miss is -1 (new or invalid combination): hits stay in C, ``map(codes.__getitem__)``."""

    def __missing__(self, key: tuple[str, str, str, str]) -> int:
        return -1


class _Lookup:
    """(meter, unit, carrier, quality) -> meter index, factor row and quality code.

    Only valid combinations are remembered (at most meters x accepted units x qualities),
    learnt the first time they are seen: after that, validating a reading and finding its
    pricing row is one dict lookup on a tuple of strings whose hashes are cached.
    """

    def __init__(self) -> None:
        self.codes = _Codes()
        self.meters: list[int] = []
        self.rows: list[int] = []
        self.qualities: list[int] = []
        self.rates: list[bool] = []  # the unit is a rate (integrated over the interval)
        # index 0 is a placeholder gathered for readings without a valid code (masked out)
        self._arrays = (
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(1, np.int8),
            np.zeros(1, bool),
        )
        # how many combinations ``_arrays`` holds: its length cannot tell, since the
        # placeholder has the length of one learnt combination (that mix-up refused a
        # meter's first unit in a fresh process until a second combination was learnt)
        self._built = 0

    def learn(
        self, catalog: MeterVectors, meter: Any, unit: Any, carrier: Any, quality: Any
    ) -> int:
        """Code of a combination if valid (remembered), else -1 (the caller says why)."""
        if not all(isinstance(x, str) for x in (meter, unit, carrier, quality)):
            return -1
        key = (meter, unit, carrier, quality)
        k = self.codes.get(key)
        if k is not None:
            return k
        m = catalog.index.get(meter, -1)
        q = QUALITY_CODES.get(quality, -1)
        if m < 0 or q < 0 or catalog.carrier[m] != carrier:
            return -1
        row = catalog.resolve_unit(m, unit)
        if row is None:
            return -1
        k = len(self.meters)
        self.meters.append(m)
        self.rows.append(row)
        self.qualities.append(q)
        self.rates.append(is_rate_unit(unit))
        self.codes[key] = k
        return k

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(meter index, factor row, quality code, is a rate) per combination code."""
        if self._built != len(self.meters):
            self._built = len(self.meters)
            self._arrays = (
                np.array(self.meters, np.int64),
                np.array(self.rows, np.int64),
                np.array(self.qualities, np.int8),
                np.array(self.rates, bool),
            )
        return self._arrays


def _lookup(catalog: MeterVectors) -> _Lookup:
    cached: _Lookup | None = getattr(catalog, "_lookup", None)
    if cached is None:
        cached = _Lookup()
        catalog._lookup = cached  # type: ignore[attr-defined]
    return cached


def _meter_site_codes(catalog: MeterVectors, site_code: dict[tuple[str, str], int]) -> np.ndarray:
    cached: np.ndarray | None = getattr(catalog, "_meter_site_codes", None)
    if cached is None:
        cached = np.array(
            [site_code[(c, s)] for c, s in zip(catalog.cluster_of, catalog.site_of, strict=True)],
            dtype=np.int64,
        )
        catalog._meter_site_codes = cached  # type: ignore[attr-defined]
    return cached


class _SpecFacts:
    """A meter of the worker's index as the contract's rules see it (built for rejects only)."""

    __slots__ = ("_catalog", "_m", "allow_negative", "carrier", "max_value", "site", "units")

    def __init__(self, catalog: MeterVectors, m: int) -> None:
        spec = catalog.specs[m]
        self._catalog, self._m = catalog, m
        self.site, self.carrier = spec.site, spec.carrier
        self.allow_negative, self.max_value = spec.allow_negative, spec.max_value
        self.units = tuple(spec.units)

    def accepts(self, unit: str) -> bool:
        return self._catalog.resolve_unit(self._m, unit) is not None


def _reason(
    catalog: MeterVectors, batch: DecodedBatch, i: int, ref: int, oldest: int, limits: Limits
) -> str:
    """Why the batch checks refused reading ``i``: the contract's rules, on its plain JSON."""
    env = batch.envelopes[int(batch.env[i])]
    ri = int(batch.reading_index[i])
    r = env.body["readings"][ri]
    problem = reading_problem(r)
    if problem:
        # a field of the wrong (hashable) type fails the batch's one lookup; it is named as
        # the slow path names it, whichever path the envelope took
        return shape_reason(ri, problem)
    m = catalog.index.get(r["meter"], -1)
    reason = reading_fault(
        r,
        ri,
        _SpecFacts(catalog, m) if m >= 0 else None,
        site=env.site,
        cluster=env.cluster,
        ref_ms=ref,
        oldest_ms=oldest,
        limits=limits,
        intervals=env.v2,
    )
    if reason is not None:
        return reason
    # Every rule passed, so the batch check and the rules disagree: a bug, named as such
    # rather than blamed on a rule that held (the reading is kept in the dead letter).
    log.error("reading %d of %r: rejected by the batch checks, but no rule fails", ri, r["meter"])
    return (
        f"reading {ri} (meter {r['meter']!r}): rejected by the batch checks although every "
        "rule passes (a worker bug)"
    )
