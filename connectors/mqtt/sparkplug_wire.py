"""The Sparkplug B payload on the wire: the protobuf message ``Payload`` decoded and encoded
by hand.

Why by hand and not the ``protobuf`` package: the connector reads one message whose schema
is frozen by the Eclipse Sparkplug 3.0 specification (Payload, Metric, PropertySet,
PropertyValue: a dozen fields of four wire types), and writes one (the rebirth command).
Generated code ties the install to a protoc/runtime version pair, and shipping the spec's
``.proto`` brings an EPL-2.0 file (weak copyleft, its own notice) into an Apache-2.0 tree;
a page of varint arithmetic does neither. Field numbers below are the specification's
(``sparkplug_b.proto``). The tests check this codec against Google's implementation,
which encodes the tests' publisher.

What is not read: DataSet, Template, extension values and MetaData are skipped (a metric
carrying one has no number for a meter), as are unknown fields, as protobuf requires.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

# protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class WireError(ValueError):
    """The bytes are not a well-formed Sparkplug B payload."""


class DataType(IntEnum):
    """Sparkplug B datatype codes (specification section 6.4.16)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


#: signed integer types: Sparkplug carries them two's-complement in an unsigned field
_SIGNED_BITS: dict[int, int] = {
    DataType.INT8: 8,
    DataType.INT16: 16,
    DataType.INT32: 32,
    DataType.INT64: 64,
}
NUMERIC_TYPES = frozenset(
    {
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.UINT8,
        DataType.UINT16,
        DataType.UINT32,
        DataType.UINT64,
        DataType.FLOAT,
        DataType.DOUBLE,
    }
)

Scalar = int | float | bool | str | bytes


@dataclass(slots=True)
class PropertyValue:
    type: int | None = None
    is_null: bool = False
    value: Scalar | None = None


@dataclass(slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: dict[str, PropertyValue] = field(default_factory=dict)
    #: the decoded value; None when absent or of a kind this codec skips (DataSet, Template)
    value: Scalar | None = None
    #: protobuf field number the value came in (10 int_value ... 19 extension_value)
    value_field: int | None = None


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


def signed(value: int, datatype: int | None) -> int:
    """Undo two's complement for the signed types; an encoder may have sign-extended to 32
    or 64 bits or not, so only the type's own width is read."""
    bits = _SIGNED_BITS.get(datatype) if datatype is not None else None
    if bits is None:
        return value
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# -- decoding ----------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value): an int for varints, the raw bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos)
        elif wire == _I64:
            size = 8
        elif wire == _I32:
            size = 4
        else:  # groups (3, 4) are not in the schema, and wire types 6-7 do not exist
            raise WireError(f"field {number}: unsupported wire type {wire}")
        end = pos + size
        if end > len(buf):
            raise WireError(f"field {number}: {size} bytes announced, {len(buf) - pos} left")
        yield number, wire, buf[pos:end]
        pos = end


def _expect(number: int, wire: int, want: int, what: str) -> None:
    if wire != want:
        raise WireError(f"{what} (field {number}) has wire type {wire}, not {want}")


def _text(raw: int | bytes, number: int, what: str) -> str:
    if not isinstance(raw, bytes):
        raise WireError(f"{what} (field {number}) is not length-delimited")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} (field {number}) is not UTF-8") from exc


def _scalar(number: int, wire: int, raw: int | bytes, base: int) -> Scalar:
    """A oneof value whose fields start at ``base`` (int_value): Metric 10, Property 3."""
    slot = number - base
    if slot in (0, 1, 4):  # int_value uint32, long_value uint64, boolean_value
        _expect(number, wire, _VARINT, "value")
        assert isinstance(raw, int)
        return bool(raw) if slot == 4 else raw & (_U32 if slot == 0 else _U64)
    if slot == 2:
        _expect(number, wire, _I32, "float_value")
        assert isinstance(raw, bytes)
        return float(struct.unpack("<f", raw)[0])
    if slot == 3:
        _expect(number, wire, _I64, "double_value")
        assert isinstance(raw, bytes)
        return float(struct.unpack("<d", raw)[0])
    if slot == 5:
        return _text(raw, number, "string_value")
    _expect(number, wire, _LEN, "bytes_value")
    assert isinstance(raw, bytes)
    return raw


def _property_value(buf: bytes) -> PropertyValue:
    pv = PropertyValue()
    for number, wire, raw in _fields(buf):
        if number == 1 and wire == _VARINT:
            assert isinstance(raw, int)
            pv.type = raw
        elif number == 2 and wire == _VARINT:
            pv.is_null = bool(raw)
        elif 3 <= number <= 8:
            pv.value = _scalar(number, wire, raw, 3)
        # 9-11: property sets and extensions, not read
    return pv


def _property_set(buf: bytes) -> dict[str, PropertyValue]:
    keys: list[str] = []
    values: list[PropertyValue] = []
    for number, wire, raw in _fields(buf):
        if number == 1:
            keys.append(_text(raw, number, "PropertySet.keys"))
        elif number == 2:
            _expect(number, wire, _LEN, "PropertySet.values")
            assert isinstance(raw, bytes)
            values.append(_property_value(raw))
    if len(keys) != len(values):
        raise WireError(f"PropertySet: {len(keys)} keys for {len(values)} values")
    return dict(zip(keys, values, strict=True))


def _metric(buf: bytes) -> Metric:
    m = Metric()
    for number, wire, raw in _fields(buf):
        if number == 1:
            m.name = _text(raw, number, "Metric.name")
        elif number in (2, 3, 4, 5, 6, 7):
            _expect(number, wire, _VARINT, "Metric field")
            assert isinstance(raw, int)
            if number == 2:
                m.alias = raw
            elif number == 3:
                m.timestamp = raw
            elif number == 4:
                m.datatype = raw & _U32
            elif number == 5:
                m.is_historical = bool(raw)
            elif number == 6:
                m.is_transient = bool(raw)
            else:
                m.is_null = bool(raw)
        elif number == 9:
            _expect(number, wire, _LEN, "Metric.properties")
            assert isinstance(raw, bytes)
            m.properties = _property_set(raw)
        elif 10 <= number <= 16:
            m.value, m.value_field = _scalar(number, wire, raw, 10), number
        elif 17 <= number <= 19:  # DataSet, Template, extension: no number for a meter
            m.value, m.value_field = None, number
    return m


def decode_payload(data: bytes) -> Payload:
    """Parse a Sparkplug B ``Payload``; raises WireError naming what is malformed."""
    p = Payload()
    for number, wire, raw in _fields(data):
        if number == 1:
            _expect(number, wire, _VARINT, "Payload.timestamp")
            assert isinstance(raw, int)
            p.timestamp = raw
        elif number == 2:
            _expect(number, wire, _LEN, "Payload.metrics")
            assert isinstance(raw, bytes)
            p.metrics.append(_metric(raw))
        elif number == 3:
            _expect(number, wire, _VARINT, "Payload.seq")
            assert isinstance(raw, int)
            p.seq = raw
        elif number == 4:
            p.uuid = _text(raw, number, "Payload.uuid")
        elif number == 5:
            _expect(number, wire, _LEN, "Payload.body")
            assert isinstance(raw, bytes)
            p.body = raw
    return p


# -- encoding (what the connector sends: commands) -----------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    value &= _U64
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_key(out: bytearray, number: int, wire: int) -> None:
    _put_varint(out, number << 3 | wire)


def _put_bytes(out: bytearray, number: int, data: bytes) -> None:
    _put_key(out, number, _LEN)
    _put_varint(out, len(data))
    out += data


def _encode_metric(m: Metric) -> bytes:
    out = bytearray()
    if m.name is not None:
        _put_bytes(out, 1, m.name.encode())
    for number, v in ((2, m.alias), (3, m.timestamp), (4, m.datatype)):
        if v is not None:
            _put_key(out, number, _VARINT)
            _put_varint(out, v)
    if m.is_null:
        _put_key(out, 7, _VARINT)
        _put_varint(out, 1)
    value, dt = m.value, m.datatype
    if value is None or m.is_null:
        return bytes(out)
    if isinstance(value, bool):
        _put_key(out, 14, _VARINT)
        _put_varint(out, int(value))
    elif isinstance(value, int):
        wide = dt in (DataType.INT64, DataType.UINT64, DataType.DATETIME)
        _put_key(out, 11 if wide else 10, _VARINT)
        _put_varint(out, value & (_U64 if wide else _U32))
    elif isinstance(value, float):
        if dt == DataType.FLOAT:
            _put_key(out, 12, _I32)
            out += struct.pack("<f", value)
        else:
            _put_key(out, 13, _I64)
            out += struct.pack("<d", value)
    elif isinstance(value, str):
        _put_bytes(out, 15, value.encode())
    else:
        _put_bytes(out, 16, value)
    return bytes(out)


def encode_payload(p: Payload) -> bytes:
    """Serialise ``p`` (scalar metric values only: what a command carries)."""
    out = bytearray()
    if p.timestamp is not None:
        _put_key(out, 1, _VARINT)
        _put_varint(out, p.timestamp)
    for m in p.metrics:
        _put_bytes(out, 2, _encode_metric(m))
    if p.seq is not None:
        _put_key(out, 3, _VARINT)
        _put_varint(out, p.seq)
    if p.uuid is not None:
        _put_bytes(out, 4, p.uuid.encode())
    if p.body is not None:
        _put_bytes(out, 5, p.body)
    return bytes(out)
