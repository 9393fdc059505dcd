"""The reading contract: what a connector publishes and what the stream processor accepts.

Readings travel in *envelopes* (one Kafka message = the readings of one poll of one site)
because a Faust worker's cost is per Kafka message, not per reading. An envelope is judged
reading by reading: one bad sample is rejected with a reason while its neighbours go through,
so a flaky sensor never costs a site its data. Connectors (at the edge) and the stream
processor (centrally) apply the same rules from this module, so "valid" means one thing.

Pure pydantic and orjson: no I/O here. Wire format (``readings/1``)::

    {"schema": "readings/1", "cluster": "dunkirk", "site": "<site id>",
     "source": "<connector/instance>", "sent_at": <epoch ms>,
     "readings": [{"meter": "<meter id>", "ts": <epoch ms UTC>, "value": <float>,
                   "unit": "<unit>", "carrier": "<carrier>",
                   "quality": "measured" | "estimated" | "gap_filled"}, ...]}

Kafka: topic ``readings``, key = site id (UTF-8) so a site's readings stay ordered, headers
``content-type: application/json`` and ``clustertwin-schema: readings/1``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    NamedTuple,
    NotRequired,  # pydantic needs it on Python < 3.12
)

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from twin.carriers import Carrier, unit_is_compatible

SCHEMA_VERSION: Final = "readings/1"
#: readings/2: a reading may say which interval it measures (``start``, its end is ``ts``).
SCHEMA_V2: Final = "readings/2"
SCHEMA_VERSIONS: Final = (SCHEMA_VERSION, SCHEMA_V2)
CONTENT_TYPE = "application/json"
SCHEMA_HEADER = "clustertwin-schema"
#: Kafka headers every envelope carries (kafka-python's ``(str, bytes)`` form).
KAFKA_HEADERS: list[tuple[str, bytes]] = [
    ("content-type", CONTENT_TYPE.encode()),
    (SCHEMA_HEADER, SCHEMA_VERSION.encode()),
]
#: Clocks drift and gateways batch, but a reading from the future is a broken clock.
MAX_FUTURE_MS = 5 * 60 * 1000
#: Older than this is a unit error (seconds sent as ms) or an uninitialised clock,
#: not history: no cluster has metered data from before 2000-01-01T00:00:00Z.
OLDEST_TS_MS = 946_684_800_000
#: A reading's interval spans at most a day; a longer one is split at the source.
MAX_INTERVAL_MS = 86_400_000
#: An envelope larger than this is a producer bug; Kafka's own limit is set above it.
MAX_READINGS_PER_ENVELOPE = 50_000

Identifier = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=200)]


class Quality(StrEnum):
    """How much to trust a value: targets are reported on measured data."""

    MEASURED = "measured"
    ESTIMATED = "estimated"
    GAP_FILLED = "gap_filled"


Unit = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"\S")]


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False))
class ReadingDict(TypedDict):
    """A validated reading as the hot path carries it: a plain dict, JSON-ready as is.

    Same fields and constraints as ``Reading`` (a test keeps them equal); validating into
    dicts is about four times faster than building model instances, and connectors and the
    stream processor handle readings by the hundred thousand per second.
    """

    meter: Identifier
    ts: StrictInt
    value: StrictFloat
    unit: Unit
    carrier: Carrier
    quality: Quality
    start: NotRequired[StrictInt]


class Reading(BaseModel):
    """One metered quantity of one energy carrier at one instant (the documented schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    meter: Identifier = Field(description="Meter id, unique within the cluster.")
    ts: StrictInt = Field(description="Measurement time, epoch milliseconds UTC.")
    # Strict: "12.5" in a JSON payload means the producer stringified numbers; reject, not guess.
    value: StrictFloat = Field(description="Quantity in `unit`; finite.")
    unit: Unit = Field(
        description="Unit of `value`, compatible with the carrier (e.g. kW, MWh, Nm3/h, t/h)."
    )
    carrier: Carrier = Field(description="Energy carrier metered.")
    quality: Quality = Field(description="measured, estimated or gap_filled.")


class IntervalReading(Reading):
    """A readings/2 reading: it may say which interval it measures."""

    start: StrictInt | None = Field(
        default=None,
        description="Start of the interval the quantity was measured over, epoch ms UTC "
        "(`ts` is its end; at most 24 h). The stream shares it among the 1-min windows it "
        "covers in proportion to their overlap. Absent: the quantity of an instant, `ts`.",
    )


class Envelope(BaseModel):
    """A batch of readings from one poll of one site: the value of one Kafka message."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["readings/1"] = Field(
        default=SCHEMA_VERSION, alias="schema", description="Contract version."
    )
    cluster: Identifier = Field(description="Cluster id, e.g. dunkirk.")
    site: Identifier = Field(description="Site id; also the Kafka message key.")
    source: Identifier = Field(description="Connector name/instance that produced the readings.")
    sent_at: StrictInt = Field(description="When the envelope was built, epoch ms UTC.")
    readings: list[Reading] = Field(max_length=MAX_READINGS_PER_ENVELOPE)


class EnvelopeV2(Envelope):
    """readings/2: readings/1 with intervals. Both versions are accepted."""

    schema_: Literal["readings/2"] = Field(  # type: ignore[assignment]
        default=SCHEMA_V2, alias="schema", description="Contract version."
    )
    readings: list[IntervalReading] = Field(max_length=MAX_READINGS_PER_ENVELOPE)  # type: ignore[assignment]


def envelope_json_schema(version: str = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of a wire format version, as published in
    ``schemas/readings-<n>.schema.json``."""
    model = EnvelopeV2 if version == SCHEMA_V2 else Envelope
    n = version.rsplit("/", 1)[1]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://clustertwin.dev/schemas/readings-{n}.schema.json"
    schema["title"] = f"ClusterTwin readings envelope ({version})"
    return schema


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What the edge must know about a meter to judge its readings."""

    meter: str
    site: str
    carrier: str
    unit: str | None = None
    #: Bidirectional meters (grid export, on-site generation) may read below zero.
    allow_negative: bool = False


class MeterIndex:
    """Meters of one cluster by id: the reference every reading is checked against."""

    def __init__(self, cluster: str, meters: Iterable[MeterInfo]) -> None:
        self.cluster = cluster
        self._meters: dict[str, MeterInfo] = {}
        for m in meters:
            if m.meter in self._meters:
                raise ValueError(f"meter id {m.meter!r} appears twice in cluster {cluster!r}")
            self._meters[m.meter] = m
        self._sites = frozenset(m.site for m in self._meters.values())

    def get(self, meter: str) -> MeterInfo | None:
        return self._meters.get(meter)

    def __contains__(self, meter: object) -> bool:
        return meter in self._meters

    def __iter__(self) -> Iterator[MeterInfo]:
        return iter(self._meters.values())

    def __len__(self) -> int:
        return len(self._meters)

    @property
    def sites(self) -> frozenset[str]:
        return self._sites

    def meters_of(self, site: str) -> list[MeterInfo]:
        return [m for m in self._meters.values() if m.site == site]

    @classmethod
    def from_cluster(cls, cluster: Any) -> MeterIndex:
        """Build from a domain ``Cluster`` (cluster -> sites -> assets -> meters)."""
        infos: list[MeterInfo] = []
        for site in cluster.sites:
            for asset in site.assets:
                for meter in asset.meters:
                    infos.append(
                        MeterInfo(
                            meter=str(meter.id),
                            site=str(site.id),
                            carrier=str(_enum_value(meter.carrier)),
                            unit=_opt_str(getattr(meter, "unit", None)),
                            allow_negative=_allows_negative(meter),
                        )
                    )
        return cls(str(cluster.id), infos)


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _allows_negative(meter: Any) -> bool:
    for attr in ("allow_negative", "bidirectional", "allows_negative"):
        v = getattr(meter, attr, None)
        if isinstance(v, bool):
            return v
    return False


class Rejection(NamedTuple):
    """A reading (or, with ``position`` None, a whole envelope) that did not pass, and why."""

    position: int | None
    reason: str
    raw: Any

    def raw_bytes(self) -> bytes:
        """The original material, as bytes for a dead-letter message."""
        if isinstance(self.raw, bytes | bytearray | memoryview):
            return bytes(self.raw)
        try:
            return orjson.dumps(self.raw)
        except TypeError:
            return repr(self.raw).encode()


@dataclass(slots=True)
class EnvelopeResult:
    """Outcome of validating one envelope: good readings go on, bad ones go to dead-letter."""

    cluster: str | None = None
    site: str | None = None
    source: str | None = None
    sent_at: int | None = None
    accepted: list[ReadingDict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def envelope_rejected(self) -> bool:
        """True when the envelope itself was unreadable (nothing could be accepted)."""
        return any(r.position is None for r in self.rejected)


_READING = TypeAdapter(ReadingDict)
_READINGS = TypeAdapter(list[ReadingDict])


def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "reading"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_COMPATIBLE: dict[tuple[str, str], bool] = {}


def _compatible(carrier: Carrier, unit: str) -> bool:
    """unit_is_compatible, memoised: a connector sees the same few pairs millions of times."""
    key = (carrier, unit)  # a StrEnum hashes and compares as its string value
    ok = _COMPATIBLE.get(key)
    if ok is None:
        if len(_COMPATIBLE) > 10_000:  # junk units from a broken producer must not grow this
            _COMPATIBLE.clear()
        ok = _COMPATIBLE[key] = unit_is_compatible(carrier, unit)
    return ok


def check_reading(
    reading: ReadingDict, *, site: str, index: MeterIndex | None, now: int
) -> str | None:
    """The rules beyond the schema, shared by the edge and the stream processor.

    Returns the reason the reading is rejected, or None when it is good.
    """
    # (Carrier is a StrEnum: it compares and formats as its value; ``.value`` is slow here.)
    carrier, unit, ts, meter = reading["carrier"], reading["unit"], reading["ts"], reading["meter"]
    if not _compatible(carrier, unit):
        return f"unit {unit!r} is not a unit of {carrier!s}"
    if ts > now + MAX_FUTURE_MS:
        ahead = (ts - now) / 60_000
        return f"ts {ts} is {ahead:.1f} min in the future (limit 5 min): check the clock"
    if ts < OLDEST_TS_MS:
        return f"ts {ts} is before 2000-01-01 (seconds sent as milliseconds?)"
    start = reading.get("start")
    if start is not None:
        if start < 0:
            return f"interval start {start} is negative"
        if start >= ts:
            return f"interval start {start} is not before its end (ts {ts})"
        if ts - start > MAX_INTERVAL_MS:
            hours = (ts - start) / 3_600_000
            return (
                f"interval of {hours:.1f} h is longer than the 24 h limit (split it at the source)"
            )
    allow_negative = False
    if index is not None:
        info = index.get(meter)
        if info is None:
            return f"unknown meter {meter!r} in cluster {index.cluster!r}"
        if info.site != site:
            return f"meter {meter!r} belongs to site {info.site!r}, not {site!r}"
        if info.carrier != carrier:
            return f"meter {meter!r} meters {info.carrier}, not {carrier!s}"
        allow_negative = info.allow_negative
    if reading["value"] < 0 and not allow_negative:
        return f"negative value {reading['value']} is impossible for {carrier!s} meter {meter!r}"
    return None


def validate_readings(
    raws: Sequence[Any],
    *,
    site: str,
    index: MeterIndex | None,
    now: int | None = None,
    intervals: bool = True,
) -> tuple[list[ReadingDict], list[Rejection]]:
    """Validate raw readings (decoded JSON objects) one by one; keep the good ones in order.

    ``intervals``: whether a reading may carry ``start`` (readings/2); in a readings/1
    envelope it is refused, as the stream would not read it."""
    now = now_ms() if now is None else now

    accepted: list[ReadingDict] = []
    rejected: list[Rejection] = []
    errors: dict[int, str] = {}
    try:
        # One pydantic call for the whole batch is several times faster than one per reading;
        # only when something is wrong do we pay for finding out which one.
        checked: list[ReadingDict | None] = list(_READINGS.validate_python(raws))
    except ValidationError:
        checked = []
        for i, raw in enumerate(raws):
            try:
                checked.append(_READING.validate_python(raw))
            except ValidationError as exc:
                checked.append(None)
                errors[i] = _format_error(exc)
    for i, reading in enumerate(checked):
        if reading is None:
            rejected.append(Rejection(i, errors[i], raws[i]))
            continue
        reason = check_reading(reading, site=site, index=index, now=now)
        if reason is None and not intervals and "start" in reading:
            reason = f"start: an interval needs schema {SCHEMA_V2!r}"
        if reason is None:
            accepted.append(reading)
        else:
            rejected.append(Rejection(i, reason, raws[i]))
    return accepted, rejected


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # stdlib json writes NaN/Infinity literals that orjson refuses; decoding them lets
        # the bad reading be rejected alone instead of taking its whole envelope down.
        return json.loads(raw)


def validate_envelope(
    raw: bytes, index: MeterIndex | None, *, now: int | None = None
) -> EnvelopeResult:
    """Decode and judge one Kafka message value.

    Envelope-level faults (not JSON, wrong schema version, other cluster, unknown site) reject
    the whole message once, with ``position`` None and the original bytes; otherwise every reading
    is accepted or rejected on its own.
    """
    result = EnvelopeResult()
    try:
        doc = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        result.rejected.append(Rejection(None, f"envelope is not JSON: {exc}", raw))
        return result
    if not isinstance(doc, dict):
        result.rejected.append(Rejection(None, "envelope is not a JSON object", raw))
        return result
    problems: list[str] = []
    schema = doc.get("schema")
    if schema not in SCHEMA_VERSIONS:
        problems.append(f"schema: expected {SCHEMA_VERSION!r} or {SCHEMA_V2!r}, got {schema!r}")
    for key in ("cluster", "site", "source"):
        v = doc.get(key)
        if not isinstance(v, str) or not v:
            problems.append(f"{key}: must be a non-empty string")
    sent_at = doc.get("sent_at")
    if isinstance(sent_at, bool) or not isinstance(sent_at, int):
        problems.append("sent_at: must be an integer (epoch ms)")
    readings = doc.get("readings")
    if not isinstance(readings, list):
        problems.append("readings: must be a list")
    elif len(readings) > MAX_READINGS_PER_ENVELOPE:
        problems.append(f"readings: {len(readings)} > {MAX_READINGS_PER_ENVELOPE} per envelope")
    extra = set(doc) - {"schema", "cluster", "site", "source", "sent_at", "readings"}
    if extra:
        problems.append(f"unexpected envelope fields: {sorted(extra)}")
    if not problems and index is not None:
        if doc["cluster"] != index.cluster:
            problems.append(f"cluster: {doc['cluster']!r} is not {index.cluster!r}")
        elif doc["site"] not in index.sites:
            problems.append(f"site: unknown site {doc['site']!r} in cluster {index.cluster!r}")
    if problems:
        result.rejected.append(Rejection(None, "; ".join(problems), raw))
        return result
    result.cluster, result.site = doc["cluster"], doc["site"]
    result.source, result.sent_at = doc["source"], sent_at
    assert isinstance(readings, list)
    result.accepted, result.rejected = validate_readings(
        readings, site=doc["site"], index=index, now=now, intervals=schema == SCHEMA_V2
    )
    return result


def schema_for(readings: Iterable[Mapping[str, Any]]) -> str:
    """The contract version an envelope of these readings needs: readings/2 only when one
    of them carries an interval, so readers of readings/1 keep working."""
    return SCHEMA_V2 if any("start" in r for r in readings) else SCHEMA_VERSION


def encode_envelope(
    *,
    cluster: str,
    site: str,
    source: str,
    readings: Iterable[ReadingDict | Reading | Mapping[str, Any]],
    sent_at: int | None = None,
) -> bytes:
    """Serialise an envelope to its wire bytes (orjson: the hot path of every connector).

    Validated readings are dicts whose carrier/quality are StrEnums, which orjson writes as
    their string values, so they go out without any conversion.
    """
    items = [
        r.model_dump(mode="json", exclude_none=True) if isinstance(r, Reading) else r
        for r in readings
    ]
    return orjson.dumps(
        {
            "schema": schema_for(items),
            "cluster": cluster,
            "site": site,
            "source": source,
            "sent_at": now_ms() if sent_at is None else sent_at,
            "readings": items,
        }
    )
