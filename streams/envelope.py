"""Decode and validate a batch of reading envelopes at once.

Per-message Python work is the pipeline's ceiling, so each envelope costs one orjson decode
and a handful of C-level list operations (``map(itemgetter)``, ``zip``); every semantic check
(known meter of this site, accepted unit, carrier, quality, finite and plausible value,
timestamp near the record's own timestamp) runs once over the whole batch with numpy.
Only envelopes that fail the cheap structural check take the reading-by-reading slow path,
so one bad reading costs its envelope a slower decode, never its neighbours.

Timestamps are judged against the Kafka record timestamp, not the wall clock, so a replay of
the same records makes the same decisions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from streams.catalog import QUALITIES, MeterCatalog

SCHEMA = "readings/1"
FIELDS = ("meter", "ts", "value", "unit", "carrier", "quality")
_get_fields = itemgetter(*FIELDS)
QUALITY_CODES = {q: i for i, q in enumerate(sorted(QUALITIES))}
QUALITY_NAMES = sorted(QUALITIES)
_INT = {int}
_NUMBER = {int, float}


@dataclass(frozen=True)
class Limits:
    """What a plausible envelope looks like; judged per record, deterministic on replay."""

    max_message_bytes: int = 8 * 1024 * 1024
    max_readings: int = 100_000
    max_future_ms: int = 5 * 60 * 1000
    max_age_ms: int = 400 * 24 * 3600 * 1000


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
        once fixed.
        """
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
        hs += [
            # the connectors' edge validation names its reason header so; same meaning
            ("clustertwin-reason", self.reason.encode("utf-8", "replace")[:2000]),
            ("clustertwin-dl-kind", kind.encode()),
            ("clustertwin-dl-reason", self.reason.encode("utf-8", "replace")[:2000]),
            ("clustertwin-dl-topic", self.record.topic.encode()),
            ("clustertwin-dl-partition", str(self.record.partition).encode()),
            ("clustertwin-dl-offset", str(self.record.offset).encode()),
            ("clustertwin-dl-time", str(int(time.time() * 1000)).encode()),
        ]
        if self.index is not None:
            hs.append(("clustertwin-dl-reading-index", str(self.index).encode()))
        return hs


@dataclass
class Envelope:
    """A valid envelope header; its accepted readings live in the batch arrays."""

    record: Record
    cluster: str
    site: str
    source: str
    body: dict[str, Any]


@dataclass
class DecodedBatch:
    envelopes: list[Envelope] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # one entry per candidate reading (structurally valid), aligned arrays
    env: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    reading_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    meter: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    row: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))

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

    def select(self, mask: np.ndarray) -> None:
        for name in ("env", "reading_index", "meter", "row", "ts", "value", "quality"):
            setattr(self, name, getattr(self, name)[mask])


def _envelope_problem(body: Any, record: Record, catalog: MeterCatalog, limits: Limits) -> str:
    if not isinstance(body, dict):
        return f"envelope is not a JSON object (got {type(body).__name__})"
    if body.get("schema") != SCHEMA:
        return f"unsupported schema {body.get('schema')!r} (expected {SCHEMA!r})"
    cluster, site = body.get("cluster"), body.get("site")
    if not isinstance(cluster, str) or cluster not in catalog.clusters:
        return f"unknown cluster {cluster!r}"
    if not isinstance(site, str) or not catalog.has_site(cluster, site):
        return f"unknown site {site!r} in cluster {cluster!r}"
    if record.key is not None and record.key != site.encode():
        # The site's state lives on the partition its key hashes to; a mismatched key would
        # put its readings on another partition and break per-site ordering and de-duplication.
        return f"Kafka key {record.key!r} does not match site {site!r}"
    if not isinstance(body.get("source"), str):
        return "field 'source' must be a string (the connector's name)"
    sent_at = body.get("sent_at")
    if type(sent_at) is not int:
        return "field 'sent_at' must be an integer (epoch ms)"
    readings = body.get("readings")
    if not isinstance(readings, list) or not readings:
        return "field 'readings' must be a non-empty list"
    if len(readings) > limits.max_readings:
        return f"{len(readings)} readings in one envelope (limit {limits.max_readings})"
    return ""


def _reading_problem(r: Any) -> str:
    """Structural check of one reading (the slow path); semantic checks come later."""
    if not isinstance(r, dict):
        return f"reading is not a JSON object (got {type(r).__name__})"
    missing = [f for f in FIELDS if f not in r]
    if missing:
        return f"reading lacks field(s) {', '.join(missing)}"
    if not isinstance(r["meter"], str):
        return "field 'meter' must be a string"
    if type(r["ts"]) is not int:
        return "field 'ts' must be an integer (epoch ms UTC)"
    if not -(2**62) < r["ts"] < 2**62:
        return f"timestamp {r['ts']} out of range"
    if type(r["value"]) not in (int, float):
        return f"field 'value' must be a number (got {type(r['value']).__name__})"
    if type(r["value"]) is int and not -(2**63) < r["value"] < 2**63:
        return f"value {r['value']} out of range"
    for name in ("unit", "carrier", "quality"):
        if not isinstance(r[name], str):
            return f"field {name!r} must be a string"
    return ""


def decode_batch(
    records: Sequence[Record], catalog: MeterCatalog, limits: Limits | None = None
) -> DecodedBatch:
    """Decode records; structurally and semantically invalid parts land in ``rejects``."""
    limits = limits or Limits()
    out = DecodedBatch()
    envs: list[int] = []
    ridx: list[int] = []
    ts: list[int] = []
    values: list[float] = []
    units: list[str] = []
    carriers: list[str] = []
    quals: list[str] = []
    meter_codes: list[int] = []
    unit_codes: list[int] = []
    carrier_codes: list[int] = []
    quality_codes: list[int] = []
    codes = _codes(catalog)
    index_get = catalog.index.get
    unit_get = codes.unit.get
    carrier_get = codes.carrier.get
    quality_get = QUALITY_CODES.get
    for record in records:
        raw = record.value
        if not raw:
            out.rejects.append(Reject(record, "empty message"))
            continue
        if len(raw) > limits.max_message_bytes:
            out.rejects.append(
                Reject(record, f"message of {len(raw)} bytes (limit {limits.max_message_bytes})")
            )
            continue
        for hk, hv in record.headers:
            if hk == "clustertwin-schema" and hv != SCHEMA.encode():
                out.rejects.append(Reject(record, f"unsupported schema header {hv!r}"))
                break
        else:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                out.rejects.append(Reject(record, f"malformed JSON: {exc}"))
                continue
            problem = _envelope_problem(body, record, catalog, limits)
            if problem:
                out.rejects.append(Reject(record, problem))
                continue
            e = len(out.envelopes)
            out.envelopes.append(
                Envelope(record, body["cluster"], body["site"], body["source"], body)
            )
            readings = body["readings"]
            n = len(readings)
            fast = True
            try:
                rows = list(map(_get_fields, readings))
                m, t, v, u, c, q = zip(*rows, strict=True)
                vt = set(map(type, v))
                if (
                    set(map(type, t)) != _INT
                    or not vt <= _NUMBER
                    or (int in vt and (max(v) >= 2**63 or min(v) <= -(2**63)))
                    or max(t) >= 2**62
                    or min(t) <= -(2**62)
                ):
                    fast = False
                else:
                    # dict lookups in C; an unhashable field (a list, an object) raises
                    # TypeError and sends the envelope down the slow path
                    mi = list(map(index_get, m, repeat(-1, n)))
                    uc = list(map(unit_get, u, repeat(-1, n)))
                    cc = list(map(carrier_get, c, repeat(-1, n)))
                    qc = list(map(quality_get, q, repeat(-1, n)))
            except (KeyError, TypeError):
                fast = False
            if fast:
                envs.extend([e] * n)
                ridx.extend(range(n))
                meter_codes.extend(mi)
                ts.extend(t)
                values.extend(v)
                units.extend(u)
                unit_codes.extend(uc)
                carriers.extend(c)
                carrier_codes.extend(cc)
                quals.extend(q)
                quality_codes.extend(qc)
                continue
            for i, r in enumerate(readings):
                problem = _reading_problem(r)
                if problem:
                    out.rejects.append(
                        Reject(record, f"reading {i}: {problem}", index=i, reading=r, envelope=body)
                    )
                    continue
                envs.append(e)
                ridx.append(i)
                meter_codes.append(index_get(r["meter"], -1))
                ts.append(r["ts"])
                values.append(r["value"])
                units.append(r["unit"])
                unit_codes.append(unit_get(r["unit"], -1))
                carriers.append(r["carrier"])
                carrier_codes.append(carrier_get(r["carrier"], -1))
                quals.append(r["quality"])
                quality_codes.append(quality_get(r["quality"], -1))

    if not envs:
        return out
    out.env = np.array(envs, dtype=np.int64)
    out.reading_index = np.array(ridx, dtype=np.int64)
    out.meter = np.array(meter_codes, dtype=np.int64)
    out.ts = np.array(ts, dtype=np.int64)
    out.value = np.array(values, dtype=np.float64)
    out.quality = np.array(quality_codes, dtype=np.int8)

    # --- semantic checks, whole batch at once -------------------------------------------
    n = len(envs)
    known = out.meter >= 0
    safe_meter = np.where(known, out.meter, 0)
    site_ok = np.zeros(n, dtype=bool)
    # meter must belong to the envelope's site: compare per envelope via site codes
    site_code = {key: k for k, key in enumerate(catalog.sites)}
    meter_site = _meter_site_codes(catalog, site_code)
    env_site = np.array(
        [site_code[(env.cluster, env.site)] for env in out.envelopes], dtype=np.int64
    )
    site_ok = known & (meter_site[safe_meter] == env_site[out.env])
    # units: fast compare with the meter's primary unit; others looked up one by one
    unit_match = codes.meter_unit[safe_meter] == np.array(unit_codes, dtype=np.int64)
    out.row = safe_meter.copy()
    unit_ok = unit_match.copy()
    for j in np.flatnonzero(~unit_match & known).tolist():
        unit_row = catalog.resolve_unit(int(safe_meter[j]), units[j])
        if unit_row is not None:
            out.row[j] = unit_row
            unit_ok[j] = True
    carrier_ok = codes.meter_carrier[safe_meter] == np.array(carrier_codes, dtype=np.int64)
    quality_ok = out.quality >= 0
    finite = np.isfinite(out.value)
    sign_ok = (out.value >= 0) | catalog.allow_negative[safe_meter]
    size_ok = np.abs(out.value) <= catalog.max_value[safe_meter]
    ref = np.array([env.record.timestamp for env in out.envelopes], dtype=np.int64)[out.env]
    ts_ok = (
        (out.ts >= 0) & (out.ts <= ref + limits.max_future_ms) & (out.ts >= ref - limits.max_age_ms)
    )
    good = site_ok & unit_ok & carrier_ok & quality_ok & finite & sign_ok & size_ok & ts_ok
    if not good.all():
        for i in np.flatnonzero(~good).tolist():
            out.reject_reading(
                i,
                _semantic_reason(
                    catalog,
                    out,
                    i,
                    units[i],
                    carriers[i],
                    quals[i],
                    bool(known[i]),
                    bool(site_ok[i]),
                    bool(unit_ok[i]),
                    int(ref[i]),
                    limits,
                ),
            )
        out.select(good)
    return out


@dataclass
class _Codes:
    """Small-integer codes of units and carriers, per catalog, for vectorised comparisons."""

    unit: dict[str, int]
    carrier: dict[str, int]
    meter_unit: np.ndarray
    meter_carrier: np.ndarray


def _codes(catalog: MeterCatalog) -> _Codes:
    cached: _Codes | None = getattr(catalog, "_codes", None)
    if cached is None:
        unit = {u: k for k, u in enumerate(sorted(set(catalog.primary_unit)))}
        carrier = {c: k for k, c in enumerate(sorted(set(catalog.carrier)))}
        cached = _Codes(
            unit,
            carrier,
            np.array([unit[u] for u in catalog.primary_unit], dtype=np.int64),
            np.array([carrier[c] for c in catalog.carrier], dtype=np.int64),
        )
        catalog._codes = cached  # type: ignore[attr-defined]
    return cached


def _meter_site_codes(catalog: MeterCatalog, site_code: dict[tuple[str, str], int]) -> np.ndarray:
    cached: np.ndarray | None = getattr(catalog, "_meter_site_codes", None)
    if cached is None:
        cached = np.array(
            [site_code[(c, s)] for c, s in zip(catalog.cluster_of, catalog.site_of, strict=True)],
            dtype=np.int64,
        )
        catalog._meter_site_codes = cached  # type: ignore[attr-defined]
    return cached


def _semantic_reason(
    catalog: MeterCatalog,
    batch: DecodedBatch,
    i: int,
    unit: str,
    carrier: str,
    quality: str,
    known: bool,
    site_ok: bool,
    unit_ok: bool,
    ref: int,
    limits: Limits,
) -> str:
    env = batch.envelopes[int(batch.env[i])]
    ri = int(batch.reading_index[i])
    meter = env.body["readings"][ri]["meter"]
    prefix = f"reading {ri} (meter {meter!r}): "
    if not known:
        return prefix + "unknown meter"
    m = int(batch.meter[i])
    spec = catalog.specs[m]
    if not site_ok:
        return prefix + f"meter belongs to site {spec.site!r}, not {env.site!r}"
    if not unit_ok:
        return prefix + f"unit {unit!r} not accepted (accepts {', '.join(spec.units)})"
    if carrier != spec.carrier:
        return prefix + f"carrier {carrier!r} does not match the meter's {spec.carrier!r}"
    if quality not in QUALITY_CODES:
        return prefix + f"quality {quality!r} not one of {', '.join(QUALITY_NAMES)}"
    value = float(batch.value[i])
    if not math.isfinite(value):
        return prefix + f"value {value} is not finite"
    if value < 0 and not spec.allow_negative:
        return prefix + f"negative value {value} for a meter that cannot run backwards"
    if abs(value) > spec.max_value:
        return prefix + f"value {value} above the meter's plausible maximum {spec.max_value}"
    t = int(batch.ts[i])
    if t > ref + limits.max_future_ms:
        return prefix + f"timestamp {t} is {(t - ref) / 1000:.0f} s ahead of the record time"
    return prefix + f"timestamp {t} too old or negative (record time {ref})"
