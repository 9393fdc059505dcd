"""Sparkplug B (Eclipse Sparkplug 3.0) for the MQTT connector: births, deaths, aliases, seq.

An edge node announces its metrics in NBIRTH/DBIRTH (name, alias, datatype, current value)
and then reports them by alias only in NDATA/DDATA. A reading can therefore only be made
while the birth that defines the aliases is known and every message since has been seen:

- **seq** runs 0-255 per edge node over all its messages but NDEATH. A gap (or a reordering)
  means a message was lost, possibly a birth that redefined the aliases: the node's aliases
  are forgotten, nothing is decoded until it is born again, and a rebirth is asked for with
  the ``Node Control/Rebirth`` NCMD, as the specification says a host application does.
  A message repeated with the same seq and bytes (QoS 1 redelivery) is dropped silently.
- **data before a birth** (the connector started after the node) is ignored with a reason on
  the dead-letter topic, and a rebirth is asked for; requests are spaced by
  ``rebirth_retry_s`` so a chatty node is not flooded with commands.
- **NDEATH/DDEATH** make the node's (device's) metrics stale. No reading is invented for a
  stale metric (no last value carried forward): the connector reports the source
  unavailable (``SourceUnavailable``, counted in ``source_reconnects`` with the death as
  ``last_error``) and publishes that node's metrics again from its next birth. An NDEATH
  whose bdSeq is not the current birth's is an old session's will and is ignored.

Quality: ``is_null`` and a ``Quality`` property of BAD (OPC DA 0x00 bits) or STALE (500)
mean the source has no current value: dead-letter with the reason, never a reading.
Uncertain (0x40 bits) becomes ``estimated``; good, or no quality property, ``measured``.

The session is touched only from paho's network thread; it outlives the MQTT connection
(the connector keeps it across reconnects, and the persistent session fills the gap).

**Restarts.** Nothing of the session is persisted: the specification has a host application
that (re)starts trust no alias, seq or bdSeq it may have learnt, and ask for the births
(:meth:`SparkplugSession.start_requests`, sent once per process). What survives is the
connector's own metering: metrics mapped ``mode: counter`` or ``rate`` come out as
:class:`Snapshot` s, which the connector turns into intervals with the SDK's ``Metering``,
whose baselines live in the state store beside the disk buffer; the first birth after the
restart closes the interval across it, counted once.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.mqtt.sparkplug_wire import (
    NUMERIC_TYPES,
    DataType,
    Metric,
    Payload,
    WireError,
    decode_payload,
    encode_payload,
    signed,
)
from connectors.sdk.base import BadSample, Item, Sample
from twin.carriers import UnitError, rate_quantity_unit
from twin.readings import Quality

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
QUALITY_PROPERTY = "Quality"
_STALE_QUALITY = 500
_SEQ_MOD = 256
_DUP_WINDOW = 32  # recent messages remembered per node to recognise a redelivery
#: characters the specification forbids in group, edge node and device ids
_ID_FORBIDDEN = frozenset("+/#")

_NODE_TYPES = {"NBIRTH", "NDEATH", "NDATA", "NCMD"}
_DEVICE_TYPES = {"DBIRTH", "DDEATH", "DDATA", "DCMD"}


class SparkplugMetric(BaseModel):
    """One Sparkplug metric mapped to one meter."""

    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(default=None, description="default: sparkplug.group")
    node: str = Field(min_length=1, description="edge node id")
    device: str | None = Field(default=None, description="device id; none: a node metric")
    metric: str = Field(min_length=1, description="metric name as in the birth certificate")
    meter: str = Field(min_length=1)
    unit: str | None = Field(
        default=None, description="default: the meter's; mode rate: the rate's (kW, t/h)"
    )
    carrier: str | None = Field(default=None, description="default: the meter's")
    mode: Literal["value", "counter", "rate"] = Field(
        default="value",
        description="counter: a cumulative total, publish the increase; rate: a power or "
        "flow, publish its integral (the SDK's metering, state kept across restarts)",
    )
    rollover_at: float | None = Field(default=None, gt=0, description="counter: wraps here")
    max_increase_per_h: float | None = Field(
        default=None, gt=0, description="counter: most it counts in an hour (plausibility)"
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> SparkplugMetric:
        if self.mode != "counter" and (self.rollover_at or self.max_increase_per_h):
            raise ValueError("rollover_at, max_increase_per_h: only for mode counter")
        if self.mode == "rate":
            if self.unit is None:
                raise ValueError("unit: mode rate needs the rate's unit (kW, t/h, Nm3/h)")
            try:
                rate_quantity_unit(self.unit)
            except UnitError as exc:
                raise ValueError(f"unit: {exc}") from exc
        return self

    def published_unit(self) -> str | None:
        """The unit of what reaches ``readings``: a rate's integral is a quantity."""
        return rate_quantity_unit(self.unit)[0] if self.mode == "rate" and self.unit else self.unit


class SparkplugConfig(BaseModel):
    """``sparkplug:`` section of the MQTT connector's config."""

    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(default=None, description="default group id of the mappings")
    metrics: list[SparkplugMetric] = Field(min_length=1)
    rebirth_retry_s: float = Field(
        default=10.0, gt=0, le=3600, description="least time between two rebirth requests"
    )

    @model_validator(mode="after")
    def _ids_and_uniqueness(self) -> SparkplugConfig:
        seen: dict[tuple[str, str, str | None, str], int] = {}
        metered: dict[str, int] = {}
        for i, m in enumerate(self.metrics):
            where = f"sparkplug.metrics[{i}]"
            group = m.group or self.group
            if group is None:
                raise ValueError(f"{where}: no group (give sparkplug.group or its own group)")
            for what, ident in (("group", group), ("node", m.node), ("device", m.device)):
                if ident is not None and (not ident or _ID_FORBIDDEN & set(ident)):
                    raise ValueError(
                        f"{where}.{what}: {ident!r} is not a Sparkplug id (empty, or has + / #)"
                    )
            key = (group, m.node, m.device, m.metric)
            if key in seen:
                raise ValueError(f"{where}: maps the same metric as sparkplug.metrics[{seen[key]}]")
            seen[key] = i
            if m.mode != "value" and metered.setdefault(m.meter, i) != i:
                raise ValueError(
                    f"{where}: meter {m.meter!r} is metered (mode {m.mode}) by "
                    f"sparkplug.metrics[{metered[m.meter]}] already: one baseline per meter"
                )
        return self

    def group_of(self, m: SparkplugMetric) -> str:
        group = m.group or self.group
        assert group is not None  # the validator saw to it
        return group

    def subscriptions(self) -> list[str]:
        return sorted({f"{NAMESPACE}/{self.group_of(m)}/#" for m in self.metrics})


@dataclass(slots=True)
class Snapshot:
    """A counter or rate metric's value, for the connector to meter: in the event loop,
    not paho's thread, because the state it implies is checkpointed right before the
    readings are handed on."""

    mapping: SparkplugMetric
    sample: Sample


@dataclass(slots=True)
class Outcome:
    """What one MQTT message gave: items for the runner (snapshots for the metering),
    commands to publish (topic, body), and the reasons the source is now (partly)
    unavailable."""

    items: list[Item | Snapshot] = field(default_factory=list)
    commands: list[tuple[str, bytes]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Catalog:
    """What a birth taught: alias -> name, and each name's datatype (data messages should
    not repeat it, says the specification)."""

    aliases: dict[int, str] = field(default_factory=dict)
    datatypes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_birth(cls, p: Payload) -> _Catalog:
        cat = cls()
        for m in p.metrics:
            if m.name is None:
                continue
            if m.alias is not None:
                cat.aliases[m.alias] = m.name
            if m.datatype is not None:
                cat.datatypes[m.name] = m.datatype
        return cat


@dataclass(slots=True)
class _Device:
    catalog: _Catalog
    born: bool = True


@dataclass(slots=True)
class _Node:
    born: bool = False
    bd_seq: int | None = None
    seq: int = 0
    catalog: _Catalog = field(default_factory=_Catalog)
    devices: dict[str, _Device] = field(default_factory=dict)
    birth: bytes | None = None  # digest of the current NBIRTH
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    rebirth_asked: float | None = None


@dataclass(slots=True)
class _Message:
    topic: str
    kind: str
    group: str
    node_id: str
    device: str | None
    node: _Node
    payload: Payload
    raw: bytes
    received_ms: int

    def ignored(self, why: str) -> BadSample:
        return BadSample(f"sparkplug {self.topic}: {why}", self.raw)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def metric_quality(m: Metric) -> str | None:
    """The reading quality a metric's ``Quality`` property gives; None: no current value."""
    prop = m.properties.get(QUALITY_PROPERTY)
    if prop is None or prop.is_null or isinstance(prop.value, bool):
        return Quality.MEASURED.value
    if not isinstance(prop.value, int):
        return Quality.MEASURED.value
    code = signed(prop.value, prop.type)
    if code == _STALE_QUALITY:
        return None
    bits = code & 0xC0
    if bits == 0xC0:
        return Quality.MEASURED.value
    return Quality.ESTIMATED.value if bits == 0x40 else None


def metric_number(m: Metric, datatype: int | None) -> float:
    """The metric's value as a float; ValueError naming why there is none."""
    if datatype not in NUMERIC_TYPES:
        known = datatype is not None and datatype in DataType._value2member_map_
        name = DataType(datatype).name if known and datatype is not None else str(datatype)
        raise ValueError(f"datatype {name} is not a number")
    value = m.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"no numeric value (value field {m.value_field})")
    return float(signed(value, datatype) if isinstance(value, int) else value)


class SparkplugSession:
    """The host-application side of Sparkplug B for the mapped edge nodes."""

    def __init__(
        self, config: SparkplugConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self._map = {(config.group_of(m), m.node, m.device, m.metric): m for m in config.metrics}
        self._wanted = {(g, n) for g, n, _d, _m in self._map}
        self._nodes: dict[tuple[str, str], _Node] = {}

    def start_requests(self) -> list[tuple[str, bytes]]:
        """A rebirth request to every mapped edge node, for a host that has just started:
        the specification has a (re)started host application trust no alias it may have
        learnt before and ask for the births instead. Spaces later requests like any."""
        now = self.clock()
        for key in sorted(self._wanted):
            self._nodes.setdefault(key, _Node()).rebirth_asked = now
        return [(f"{NAMESPACE}/{g}/NCMD/{n}", rebirth_request()) for g, n in sorted(self._wanted)]

    @staticmethod
    def owns(topic: str) -> bool:
        return topic.startswith(NAMESPACE + "/")

    def stale(self) -> list[str]:
        """Mapped nodes and devices whose metrics are not current (dead, or never born)."""
        out = []
        for g, n in sorted(self._wanted):
            node = self._nodes.get((g, n))
            if node is None or not node.born:
                out.append(f"{g}/{n}")
                continue
            out += [f"{g}/{n}/{d}" for d, dev in sorted(node.devices.items()) if not dev.born]
        return out

    def handle(self, topic: str, payload: bytes, received_ms: int) -> Outcome:
        out = Outcome()
        parts = topic.split("/")
        if len(parts) < 3 or parts[1] == "STATE":  # host applications' STATE: not ours
            return out
        kind = parts[2]
        if not (
            (len(parts) == 4 and kind in _NODE_TYPES) or (len(parts) == 5 and kind in _DEVICE_TYPES)
        ):
            out.items.append(BadSample(f"sparkplug {topic}: not a Sparkplug B topic", payload))
            return out
        group, node_id = parts[1], parts[3]
        if (group, node_id) not in self._wanted or kind in ("NCMD", "DCMD"):
            return out  # a node nothing is mapped from, or commands (ours among them)
        node = self._nodes.setdefault((group, node_id), _Node())
        try:
            decoded = decode_payload(payload)
        except WireError as exc:
            out.items.append(BadSample(f"sparkplug {topic}: undecodable payload: {exc}", payload))
            if kind != "NDEATH":  # a lost message all the same: the sequence is broken
                self._forget(node, group, node_id, out)
            return out
        msg = _Message(
            topic,
            kind,
            group,
            node_id,
            parts[4] if len(parts) == 5 else None,
            node,
            decoded,
            payload,
            received_ms,
        )
        getattr(self, "_on_" + kind.lower())(msg, out)
        return out

    # -- the message types -------------------------------------------------------------

    def _on_nbirth(self, msg: _Message, out: Outcome) -> None:
        digest = _digest(msg.raw)
        if msg.node.born and msg.node.birth == digest:
            return  # the same birth delivered again
        p = msg.payload
        if p.seq is None:
            out.items.append(msg.ignored("NBIRTH without seq"))
            return
        bd = next((m for m in p.metrics if m.name == BDSEQ_METRIC), None)
        node = _Node(born=True, seq=p.seq % _SEQ_MOD, bd_seq=_int_or_none(bd), birth=digest)
        node.catalog = _Catalog.of_birth(p)
        node.recent[node.seq] = digest
        self._nodes[(msg.group, msg.node_id)] = msg.node = node
        self._readings(msg, node.catalog, out)

    def _on_dbirth(self, msg: _Message, out: Outcome) -> None:
        assert msg.device is not None
        if self._in_sequence(msg, out):
            dev = _Device(_Catalog.of_birth(msg.payload))
            msg.node.devices[msg.device] = dev
            self._readings(msg, dev.catalog, out)

    def _on_ndata(self, msg: _Message, out: Outcome) -> None:
        if self._in_sequence(msg, out):
            self._readings(msg, msg.node.catalog, out)

    def _on_ddata(self, msg: _Message, out: Outcome) -> None:
        assert msg.device is not None
        if not self._in_sequence(msg, out):
            return
        dev = msg.node.devices.get(msg.device)
        if dev is None or not dev.born:
            out.items.append(msg.ignored("DDATA before the device's birth: ignored"))
            self._forget(msg.node, msg.group, msg.node_id, out)  # devices rebirth with the node
            return
        self._readings(msg, dev.catalog, out)

    def _on_ndeath(self, msg: _Message, out: Outcome) -> None:
        node = msg.node
        names = node.catalog.aliases
        bd = _int_or_none(
            next(
                (
                    m
                    for m in msg.payload.metrics
                    if (m.name or names.get(m.alias or -1)) == BDSEQ_METRIC
                ),
                None,
            )
        )
        if not node.born or (bd is not None and node.bd_seq is not None and bd != node.bd_seq):
            return  # dead already, or the will of an earlier session
        node.born = False
        for dev in node.devices.values():
            dev.born = False
        out.unavailable.append(
            f"sparkplug edge node {msg.group}/{msg.node_id} died (NDEATH, bdSeq {bd}): its "
            "metrics are stale until it is born again"
        )

    def _on_ddeath(self, msg: _Message, out: Outcome) -> None:
        assert msg.device is not None
        if not self._in_sequence(msg, out):
            return
        dev = msg.node.devices.get(msg.device)
        if dev is None or not dev.born:
            return
        dev.born = False
        out.unavailable.append(
            f"sparkplug device {msg.group}/{msg.node_id}/{msg.device} died (DDEATH): its "
            "metrics are stale until it is born again"
        )

    # -- rules shared by the types ----------------------------------------------------------

    def _in_sequence(self, msg: _Message, out: Outcome) -> bool:
        """Whether the message follows the last one; handles the three ways it may not."""
        node, seq = msg.node, msg.payload.seq
        if not node.born:
            out.items.append(msg.ignored(f"{msg.kind} before the node's birth: ignored"))
            self._forget(node, msg.group, msg.node_id, out)
            return False
        digest = _digest(msg.raw)
        if seq is not None and node.recent.get(seq) == digest:
            return False  # redelivered (QoS 1): seen already
        expected = (node.seq + 1) % _SEQ_MOD
        if seq != expected:
            out.items.append(
                msg.ignored(
                    f"seq {seq} where {expected} was due (messages lost or reordered): "
                    "ignored, aliases dropped until the next birth"
                )
            )
            self._forget(node, msg.group, msg.node_id, out)
            return False
        node.seq = expected
        node.recent[expected] = digest
        node.recent.move_to_end(expected)
        while len(node.recent) > _DUP_WINDOW:
            node.recent.popitem(last=False)
        return True

    def _forget(self, node: _Node, group: str, node_id: str, out: Outcome) -> None:
        """Treat the node as unborn and ask it to be born again (spaced requests)."""
        node.born = False
        node.catalog = _Catalog()
        node.devices.clear()
        now = self.clock()
        retry = self.config.rebirth_retry_s
        if node.rebirth_asked is not None and now - node.rebirth_asked < retry:
            return
        node.rebirth_asked = now
        out.commands.append((f"{NAMESPACE}/{group}/NCMD/{node_id}", rebirth_request()))

    def _readings(self, msg: _Message, catalog: _Catalog, out: Outcome) -> None:
        """A sample (or a reason why none) per mapped metric of a birth or data message."""
        for m in msg.payload.metrics:
            name = m.name
            if name is None and m.alias is not None:
                name = catalog.aliases.get(m.alias)
            if name is None:
                out.items.append(
                    msg.ignored(f"alias {m.alias} is not in the birth: ignored, rebirth requested")
                )
                self._forget(msg.node, msg.group, msg.node_id, out)
                return
            mapping = self._map.get((msg.group, msg.node_id, msg.device, name))
            if mapping is None:
                continue
            datatype = m.datatype if m.datatype is not None else catalog.datatypes.get(name)
            item = _sample(mapping, m, name, datatype, msg)
            if mapping.mode != "value" and isinstance(item, Sample):
                out.items.append(Snapshot(mapping, item))
            else:
                out.items.append(item)


def _int_or_none(m: Metric | None) -> int | None:
    if m is None or isinstance(m.value, bool) or not isinstance(m.value, int):
        return None
    return m.value


def _sample(
    mapping: SparkplugMetric, m: Metric, name: str, datatype: int | None, msg: _Message
) -> Item:
    ts = m.timestamp if m.timestamp is not None else msg.payload.timestamp
    raw = orjson.dumps(
        {
            "topic": msg.topic,
            "metric": name,
            "alias": m.alias,
            "timestamp": ts,
            "datatype": datatype,
            "is_null": m.is_null,
            "value": m.value if not isinstance(m.value, bytes) else m.value.hex(),
        }
    )
    where = f"sparkplug {msg.topic} metric {name!r}"
    if m.is_null:
        return BadSample(f"{where}: is_null, the source has no value", raw, mapping.meter)
    quality = metric_quality(m)
    if quality is None:
        return BadSample(f"{where}: quality BAD or STALE, not a reading", raw, mapping.meter)
    try:
        value = metric_number(m, datatype)
    except ValueError as exc:
        return BadSample(f"{where}: {exc}", raw, mapping.meter)
    return Sample(
        mapping.meter,
        ts if ts is not None else msg.received_ms,
        value,
        mapping.unit,
        mapping.carrier,
        quality=quality,
        raw=raw,
    )


def rebirth_request(now_ms: int | None = None) -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    return encode_payload(
        Payload(
            timestamp=now_ms if now_ms is not None else time.time_ns() // 1_000_000,
            metrics=[Metric(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, value=True)],
        )
    )
