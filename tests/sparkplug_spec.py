"""A Sparkplug B edge node written from the specification, for the connector's tests.

Independent of the connector's hand-written codec: payloads are built with Google's protobuf
runtime from a descriptor stated here field by field after the Eclipse Sparkplug 3.0
``sparkplug_b.proto`` (Payload, Metric, PropertySet, PropertyValue; the field numbers are
the specification's, the file itself is not copied). If the connector's decoder disagreed
with protobuf about any of these fields, the tests comparing readings would fail.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# Sparkplug datatype codes (specification 6.4.16)
INT32, INT64, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 7, 8, 9, 10, 11, 12


def _message_classes() -> tuple[Any, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tests_sparkplug_b.proto", package="tests.spb", syntax="proto2"
    )
    payload = fdp.message_type.add(name="Payload")

    def add(
        msg: Any,
        name: str,
        number: int,
        ftype: int,
        *,
        repeated: bool = False,
        type_name: str | None = None,
        oneof: int | None = None,
    ) -> None:
        f = msg.field.add(name=name, number=number, type=ftype)
        f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof

    pv = payload.nested_type.add(name="PropertyValue")
    pv.oneof_decl.add(name="value")
    add(pv, "type", 1, _F.TYPE_UINT32)
    add(pv, "is_null", 2, _F.TYPE_BOOL)
    for name, number, ftype in (
        ("int_value", 3, _F.TYPE_UINT32),
        ("long_value", 4, _F.TYPE_UINT64),
        ("float_value", 5, _F.TYPE_FLOAT),
        ("double_value", 6, _F.TYPE_DOUBLE),
        ("boolean_value", 7, _F.TYPE_BOOL),
        ("string_value", 8, _F.TYPE_STRING),
    ):
        add(pv, name, number, ftype, oneof=0)
    ps = payload.nested_type.add(name="PropertySet")
    add(ps, "keys", 1, _F.TYPE_STRING, repeated=True)
    add(
        ps,
        "values",
        2,
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".tests.spb.Payload.PropertyValue",
    )
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    add(metric, "name", 1, _F.TYPE_STRING)
    add(metric, "alias", 2, _F.TYPE_UINT64)
    add(metric, "timestamp", 3, _F.TYPE_UINT64)
    add(metric, "datatype", 4, _F.TYPE_UINT32)
    add(metric, "is_historical", 5, _F.TYPE_BOOL)
    add(metric, "is_transient", 6, _F.TYPE_BOOL)
    add(metric, "is_null", 7, _F.TYPE_BOOL)
    add(metric, "properties", 9, _F.TYPE_MESSAGE, type_name=".tests.spb.Payload.PropertySet")
    for name, number, ftype in (
        ("int_value", 10, _F.TYPE_UINT32),
        ("long_value", 11, _F.TYPE_UINT64),
        ("float_value", 12, _F.TYPE_FLOAT),
        ("double_value", 13, _F.TYPE_DOUBLE),
        ("boolean_value", 14, _F.TYPE_BOOL),
        ("string_value", 15, _F.TYPE_STRING),
        ("bytes_value", 16, _F.TYPE_BYTES),
    ):
        add(metric, name, number, ftype, oneof=0)
    add(payload, "timestamp", 1, _F.TYPE_UINT64)
    add(
        payload, "metrics", 2, _F.TYPE_MESSAGE, repeated=True, type_name=".tests.spb.Payload.Metric"
    )
    add(payload, "seq", 3, _F.TYPE_UINT64)
    add(payload, "uuid", 4, _F.TYPE_STRING)
    add(payload, "body", 5, _F.TYPE_BYTES)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("tests.spb.Payload")
    return message_factory.GetMessageClass(desc), desc


PayloadPB, _DESC = _message_classes()


@dataclass
class M:
    """A metric as the test means it: name, alias, datatype, value and its options."""

    name: str
    alias: int
    datatype: int
    value: Any = None
    ts: int | None = None
    is_null: bool = False
    quality: int | None = None  # the ``Quality`` property (OPC DA code), if any


def _set_value(pb: Any, datatype: int, value: Any) -> None:
    if datatype in (INT32,):
        pb.int_value = value & 0xFFFFFFFF  # two's complement in uint32, as the spec says
    elif datatype == UINT32:
        pb.int_value = value
    elif datatype in (INT64, UINT64):
        pb.long_value = value & 0xFFFFFFFFFFFFFFFF
    elif datatype == FLOAT:
        pb.float_value = value
    elif datatype == DOUBLE:
        pb.double_value = value
    elif datatype == BOOLEAN:
        pb.boolean_value = value
    elif datatype == STRING:
        pb.string_value = value
    else:
        raise ValueError(f"test encoder: datatype {datatype}")


def encode(
    metrics: list[M], *, seq: int | None, ts: int, birth: bool, by_name: bool = False
) -> bytes:
    """A Payload: births carry name, alias and datatype; data the alias only (spec 6.4.x)."""
    p = PayloadPB()
    p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for m in metrics:
        pb = p.metrics.add()
        if birth or by_name:
            pb.name = m.name
        if not by_name:
            pb.alias = m.alias
        if birth:
            pb.datatype = m.datatype
        if m.ts is not None:
            pb.timestamp = m.ts
        if m.quality is not None:
            pb.properties.keys.append("Quality")
            q = pb.properties.values.add()
            q.type = INT32
            q.int_value = m.quality
        if m.is_null:
            pb.is_null = True
        else:
            _set_value(pb, m.datatype, m.value)
    return bytes(p.SerializeToString())


def decode(data: bytes) -> Any:
    p = PayloadPB()
    p.ParseFromString(data)
    return p


@dataclass
class Sent:
    """One message the edge node published, and whether a correct host makes readings of it."""

    topic: str
    metrics: list[M]
    counted: bool
    device: str | None


@dataclass
class EdgeNode:
    """An edge node (one device under it) publishing to a real broker, QoS 1, in order.

    ``log`` is what was sent; ``rebirths`` counts the NCMD ``Node Control/Rebirth`` requests
    it received (decoded with protobuf, checked to be the boolean true the spec asks).
    """

    host: str
    port: int
    group: str
    node: str
    device: str
    bd_seq: int = 0
    seq: int = 0
    log: list[Sent] = field(default_factory=list)
    rebirths: int = 0
    rebirth_event: threading.Event = field(default_factory=threading.Event)
    client: Any = None

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.node}"
        return f"{base}/{device}" if device else base

    def _death(self) -> bytes:
        p = PayloadPB()
        p.timestamp = int(time.time() * 1000)
        m = p.metrics.add()
        m.name, m.datatype, m.long_value = "bdSeq", UINT64, self.bd_seq
        return bytes(p.SerializeToString())

    def connect(self) -> None:
        """A new MQTT session: NDEATH with this bdSeq as the will (spec 7.1)."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{self.group}-{self.node}-{self.bd_seq}",
            clean_session=True,
        )
        client.max_inflight_messages_set(1)  # in order, even around a redelivery
        client.will_set(self.topic("NDEATH"), self._death(), qos=1)
        client.on_message = self._on_command
        connected = threading.Event()
        client.on_connect = lambda c, *_a: (
            c.subscribe(self.topic("NCMD"), qos=1),
            connected.set(),
        )
        client.connect(self.host, self.port, 30)
        client.loop_start()
        assert connected.wait(10), "edge node: no CONNACK"
        time.sleep(0.2)  # the NCMD subscription's SUBACK
        self.client = client

    def _on_command(self, _c: Any, _u: Any, msg: Any) -> None:
        p = decode(bytes(msg.payload))
        for m in p.metrics:
            if m.name == "Node Control/Rebirth" and m.WhichOneof("value") == "boolean_value":
                assert m.boolean_value is True
                self.rebirths += 1
                self.rebirth_event.set()

    def publish(
        self,
        kind: str,
        metrics: list[M],
        *,
        counted: bool,
        device: str | None = None,
        seq: int | None = None,
        raw: bytes | None = None,
    ) -> bytes:
        """Publish with the next seq (or the ``seq`` given, to break the sequence)."""
        birth = kind.endswith("BIRTH")
        if seq is None:
            seq = self.seq
            self.seq = (self.seq + 1) % 256
        extra = [M("bdSeq", 1000, UINT64, self.bd_seq)] if kind == "NBIRTH" else []
        body = raw or encode(extra + metrics, seq=seq, ts=int(time.time() * 1000), birth=birth)
        topic = self.topic(kind, device)
        self.client.publish(topic, body, qos=1).wait_for_publish(10)
        self.log.append(Sent(topic, metrics, counted, device))
        return body

    def birth(self, node_metrics: list[M], device_metrics: list[M]) -> None:
        self.seq = 0
        rebirth = M("Node Control/Rebirth", 999, BOOLEAN, False)
        self.publish("NBIRTH", [*node_metrics, rebirth], counted=True)
        self.publish("DBIRTH", device_metrics, counted=True, device=self.device)

    def wait_rebirth(self, timeout: float = 15.0) -> None:
        assert self.rebirth_event.wait(timeout), "no rebirth request on the NCMD topic"
        self.rebirth_event.clear()

    def die(self) -> None:
        """A clean disconnect: NDEATH published first, as the spec asks of an edge node."""
        self.client.publish(self.topic("NDEATH"), self._death(), qos=1).wait_for_publish(10)
        self.log.append(Sent(self.topic("NDEATH"), [], False, None))
        self.client.disconnect()
        self.client.loop_stop()
        self.bd_seq += 1

    def close(self) -> None:
        """End the test's session without a will (a clean disconnect sends none)."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
