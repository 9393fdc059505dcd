"""The reading contract: what a connector publishes and what the stream processor accepts.

Readings travel in *envelopes* (one Kafka message = the readings of one poll of one site)
because a Faust worker's cost is per Kafka message, not per reading. An envelope is judged
reading by reading: one bad sample is rejected with a reason while its neighbours go through,
so a flaky sensor never costs a site its data.

This module is the contract's public face for connectors (an out-of-tree plugin imports it
and ``connectors.sdk``, nothing else): the documented models and their JSON Schema, the edge's
meter index, the edge's scalar validation and the one envelope encoder. The vocabulary, the
limits and the rules themselves live in ``twin.contract``, which the stream worker's batch
decoder uses too, so both judge alike and give the same reasons.

Wire format (``readings/1``)::

    {"schema": "readings/1", "cluster": "dunkirk", "site": "<site id>",
     "source": "<connector/instance>", "sent_at": <epoch ms>,
     "readings": [{"meter": "<meter id>", "ts": <epoch ms UTC>, "value": <float>,
                   "unit": "<unit>", "carrier": "<carrier>",
                   "quality": "measured" | "estimated" | "gap_filled"}, ...]}

Kafka: topic ``readings``, key = site id (UTF-8) so a site's readings stay ordered, headers
``content-type: application/json`` and ``clustertwin-schema: readings/1``.
"""

from __future__ import annotations

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
    with_config,
)
from typing_extensions import TypedDict

from twin import contract
from twin.carriers import Carrier, unit_is_compatible
from twin.contract import (
    CONTENT_TYPE,
    DEFAULT_MAX_VALUE,
    MAX_FUTURE_MS,
    MAX_INTERVAL_MS,
    MAX_READINGS_PER_ENVELOPE,
    SCHEMA_HEADER,
    SCHEMA_V2,
    SCHEMAS,
    AnySite,
    Limits,
    NoIndex,
    envelope_problem,
    malformed,
    message_problem,
    reading_fault,
    reading_problem,
    shape_reason,
)

__all__ = [
    "CONTENT_TYPE",
    "KAFKA_HEADERS",
    "MAX_FUTURE_MS",
    "MAX_INTERVAL_MS",
    "MAX_READINGS_PER_ENVELOPE",
    "SCHEMA_HEADER",
    "SCHEMA_V2",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "Envelope",
    "EnvelopeResult",
    "EnvelopeV2",
    "IntervalReading",
    "Limits",
    "MeterIndex",
    "MeterInfo",
    "Quality",
    "Reading",
    "ReadingDict",
    "Rejection",
    "encode_envelope",
    "envelope_json_schema",
    "kafka_headers",
    "now_ms",
    "schema_for",
    "validate_envelope",
    "validate_readings",
]

SCHEMA_VERSION: Final = contract.SCHEMA_V1
SCHEMA_VERSIONS: Final = SCHEMAS


def kafka_headers(schema: str = SCHEMA_VERSION) -> list[tuple[str, bytes]]:
    """The headers of an envelope of ``schema`` (kafka-python's ``(str, bytes)`` form)."""
    return [("content-type", CONTENT_TYPE.encode()), (SCHEMA_HEADER, schema.encode())]


#: Kafka headers every readings/1 envelope carries.
KAFKA_HEADERS: list[tuple[str, bytes]] = kafka_headers()

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

    Same fields as ``Reading`` (a test keeps their schemas equal). Connectors handle readings
    by the hundred thousand per second, so an accepted reading stays a dict (no model
    instance); the rules that accept it are ``twin.contract``'s, not these annotations.
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
        description="Unit of `value`, compatible with the carrier (e.g. MWh, Nm3, t, or a rate: "
        "kW, Nm3/h, t/h). A rate is the mean over the reading's interval (readings/2 `start` "
        "to `ts`) and is refused without one. A CO2 mass (tCO2) only measures process_co2; a "
        "gas volume is Nm3 (0 degC) or Sm3 (15 degC), never a plain m3."
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
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS_PER_ENVELOPE)


class EnvelopeV2(Envelope):
    """readings/2: readings/1 with intervals. Both versions are accepted."""

    schema_: Literal["readings/2"] = Field(  # type: ignore[assignment]
        default=SCHEMA_V2, alias="schema", description="Contract version."
    )
    readings: list[IntervalReading] = Field(  # type: ignore[assignment]
        min_length=1, max_length=MAX_READINGS_PER_ENVELOPE
    )


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
    #: Above this a value is a unit or scaling error, as the worker judges it.
    max_value: float = DEFAULT_MAX_VALUE

    @property
    def units(self) -> tuple[str, ...]:
        return () if self.unit is None else (self.unit,)

    def accepts(self, unit: str) -> bool:
        """The declared unit, or any the twin converts to the carrier's canonical unit: what
        the worker's index (built from the same twin) prices."""
        return unit == self.unit or _compatible(self.carrier, unit)


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

    def has_cluster(self, cluster: str) -> bool:
        return cluster == self.cluster

    def has_site(self, cluster: str, site: str) -> bool:
        return cluster == self.cluster and site in self._sites

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
                            allow_negative=contract.allows_negative(meter),
                        )
                    )
        return cls(str(cluster.id), infos)


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_COMPATIBLE: dict[tuple[str, str], bool] = {}


def _compatible(carrier: str, unit: str) -> bool:
    """unit_is_compatible, memoised: a connector sees the same few pairs millions of times."""
    key = (carrier, unit)  # a StrEnum hashes and compares as its string value
    ok = _COMPATIBLE.get(key)
    if ok is None:
        if len(_COMPATIBLE) > 10_000:  # junk units from a broken producer must not grow this
            _COMPATIBLE.clear()
        ok = _COMPATIBLE[key] = unit_is_compatible(carrier, unit)
    return ok


_CARRIER_OF = {c.value: c for c in Carrier}
_QUALITY_OF = {q.value: q for q in Quality}
_ANY_SITE = AnySite()
_NO_INDEX = NoIndex(tuple(_CARRIER_OF), _compatible)


def _typed(raw: dict[str, Any], intervals: bool) -> ReadingDict:
    """An accepted reading as the hot path carries it: enums for carrier and quality (written
    as their values by orjson), the value a float, unknown fields left behind."""
    value = raw["value"]
    reading: ReadingDict = {
        "meter": raw["meter"],
        "ts": raw["ts"],
        "value": value if type(value) is float else float(value),
        "unit": raw["unit"],
        "carrier": _CARRIER_OF.get(raw["carrier"], raw["carrier"]),
        "quality": _QUALITY_OF[raw["quality"]],
    }
    if intervals and "start" in raw:
        reading["start"] = raw["start"]
    return reading


def validate_readings(
    raws: Sequence[Any],
    *,
    site: str,
    index: MeterIndex | None,
    now: int | None = None,
    intervals: bool = True,
    limits: Limits | None = None,
) -> tuple[list[ReadingDict], list[Rejection]]:
    """Judge raw readings (decoded JSON objects) one by one; keep the good ones in order.

    ``now`` is the reference time of the time rules (the wall clock by default: the record is
    being made now). Without an ``index`` only the rules that need no meter apply.
    ``intervals``: the envelope is readings/2, so a reading's ``start`` is read; in readings/1
    it is type-checked and dropped, the reading stays an instant (as the worker reads it).
    """
    now = now_ms() if now is None else now
    limits = limits or contract.LIMITS
    oldest = limits.horizon_start(now)
    cluster = "" if index is None else index.cluster
    accepted: list[ReadingDict] = []
    rejected: list[Rejection] = []
    for i, raw in enumerate(raws):
        problem = reading_problem(raw)
        if problem:
            rejected.append(Rejection(i, shape_reason(i, problem), raw))
            continue
        meter = _NO_INDEX if index is None else index.get(raw["meter"])
        reason = reading_fault(raw, i, meter, site, cluster, now, oldest, limits, intervals)
        if reason is None:
            accepted.append(_typed(raw, intervals))
        else:
            rejected.append(Rejection(i, reason, raw))
    return accepted, rejected


def validate_envelope(
    raw: bytes,
    index: MeterIndex | None,
    *,
    now: int | None = None,
    key: bytes | None = None,
    headers: Iterable[tuple[str, bytes]] = (),
    limits: Limits | None = None,
) -> EnvelopeResult:
    """Judge one Kafka record's value (and, given them, its key and headers) as the stream
    worker will.

    Faults of the message or the envelope (not JSON, wrong schema version, other cluster,
    unknown site, key not the site) reject the whole message once, with ``position`` None and
    the original bytes; otherwise every reading is accepted or rejected on its own.
    ``now``: the reference time (the worker uses the record's timestamp).
    """
    limits = limits or contract.LIMITS
    result = EnvelopeResult()
    problem = message_problem(raw, headers, limits)
    if not problem:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problem = malformed(exc)
        else:
            problem = envelope_problem(doc, _ANY_SITE if index is None else index, key, limits)
    if problem:
        result.rejected.append(Rejection(None, problem, raw))
        return result
    result.cluster, result.site = doc["cluster"], doc["site"]
    result.source, result.sent_at = doc["source"], doc["sent_at"]
    result.accepted, result.rejected = validate_readings(
        doc["readings"],
        site=doc["site"],
        index=index,
        now=now,
        intervals=doc["schema"] == SCHEMA_V2,
        limits=limits,
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
    schema: str | None = None,
) -> bytes:
    """Serialise an envelope to its wire bytes: the one encoder, the SDK's too.

    Validated readings are dicts whose carrier/quality are StrEnums, which orjson writes as
    their string values, so a list of them goes out without a per-reading conversion (this
    is the hot path of every connector). ``schema``: the caller already asked ``schema_for``
    (it names the Kafka header too).
    """
    if isinstance(readings, list) and all(type(r) is dict for r in readings):
        items: list[Any] = readings
    else:
        items = [
            r.model_dump(mode="json", exclude_none=True) if isinstance(r, Reading) else r
            for r in readings
        ]
    return orjson.dumps(
        {
            "schema": schema_for(items) if schema is None else schema,
            "cluster": cluster,
            "site": site,
            "source": source,
            "sent_at": now_ms() if sent_at is None else sent_at,
            "readings": items,
        }
    )
