"""Sparkplug B: the hand-written codec against Google's protobuf, and the host rules."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from clustertwin.commands.connector import connector as cli
from connectors.mqtt import MqttConfig, MqttConnector
from connectors.mqtt.sparkplug import SparkplugConfig, SparkplugSession
from connectors.mqtt.sparkplug_wire import WireError, decode_payload
from connectors.sdk.base import BadSample, Sample
from tests.sparkplug_spec import (
    BOOLEAN,
    DOUBLE,
    FLOAT,
    INT32,
    INT64,
    STRING,
    UINT32,
    UINT64,
    M,
    decode,
    encode,
)
from twin.model import load_cluster
from twin.readings import MeterIndex

MINI = Path(__file__).parent / "mini-cluster.yaml"

G, N, D = "plant", "gw1", "plc1"


def test_decoder_agrees_with_protobuf_on_every_scalar_type() -> None:
    metrics = [
        M("i32", 1, INT32, -5, ts=11),
        M("i64", 2, INT64, -(2**40)),
        M("u32", 3, UINT32, 2**32 - 1),
        M("u64", 4, UINT64, 2**64 - 1),
        M("f", 5, FLOAT, 12.25),
        M("d", 6, DOUBLE, 0.1),
        M("b", 7, BOOLEAN, True),
        M("s", 8, STRING, "é/x"),
        M("n", 9, DOUBLE, is_null=True),
        M("q", 10, DOUBLE, 3.5, quality=192),
    ]
    p = decode_payload(encode(metrics, seq=200, ts=1_767_225_600_000, birth=True))
    assert (p.seq, p.timestamp) == (200, 1_767_225_600_000)
    got = [(m.name, m.alias, m.datatype, m.value, m.is_null) for m in p.metrics]
    assert got == [
        ("i32", 1, INT32, 2**32 - 5, False),
        ("i64", 2, INT64, 2**64 - 2**40, False),
        ("u32", 3, UINT32, 2**32 - 1, False),
        ("u64", 4, UINT64, 2**64 - 1, False),
        ("f", 5, FLOAT, 12.25, False),
        ("d", 6, DOUBLE, 0.1, False),
        ("b", 7, BOOLEAN, True, False),
        ("s", 8, STRING, "é/x", False),
        ("n", 9, DOUBLE, None, True),
        ("q", 10, DOUBLE, 3.5, False),
    ]
    assert p.metrics[0].timestamp == 11
    assert p.metrics[9].properties["Quality"].value == 192


def test_rebirth_request_is_what_protobuf_reads_as_the_spec_command() -> None:
    from connectors.mqtt.sparkplug import rebirth_request

    p = decode(rebirth_request(now_ms=42))
    assert p.timestamp == 42
    [m] = p.metrics
    assert (m.name, m.datatype, m.WhichOneof("value"), m.boolean_value) == (
        "Node Control/Rebirth",
        BOOLEAN,
        "boolean_value",
        True,
    )


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_truncated_payload_is_a_wire_error(cut: int) -> None:
    body = encode([M("d", 6, DOUBLE, 0.1)], seq=1, ts=5, birth=True)
    with pytest.raises(WireError):
        decode_payload(body[:-cut])


def test_random_bytes_never_crash_the_decoder() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        with contextlib.suppress(WireError):
            decode_payload(blob)


def _cfg(**extra: object) -> SparkplugConfig:
    return SparkplugConfig.model_validate(
        {
            "group": G,
            "metrics": [
                {"node": N, "metric": "Power", "meter": "mill-power"},
                {"node": N, "device": D, "metric": "Gas", "meter": "bf-gas", "unit": "MWh"},
            ],
            **extra,
        }
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _msg(
    session: SparkplugSession,
    kind: str,
    metrics: list[M],
    seq: int | None,
    device: str | None = None,
    ts: int = 1000,
) -> tuple[list[object], int, list[str]]:
    topic = f"spBv1.0/{G}/{kind}/{N}" + (f"/{device}" if device else "")
    body = encode(metrics, seq=seq, ts=ts, birth=kind.endswith("BIRTH"), by_name=kind == "NDEATH")
    out = session.handle(topic, body, 5)
    return out.items, len(out.commands), out.unavailable


POWER, GAS = M("Power", 1, DOUBLE, 0.0), M("Gas", 2, FLOAT, 0.0)


def _born(session: SparkplugSession) -> None:
    _msg(session, "NBIRTH", [M("bdSeq", 9, UINT64, 3), POWER], 0)
    _msg(session, "DBIRTH", [GAS], 1, device=D)


def _values(items: list[object]) -> list[tuple[str, float, str]]:
    return [(s.meter, s.value, s.quality) for s in items if isinstance(s, Sample)]


def test_data_by_alias_uses_the_birth_datatypes_and_mapping() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    items, cmds, _ = _msg(s, "DDATA", [M("Gas", 2, FLOAT, 2.5, quality=64)], 2, device=D)
    assert _values(items) == [("bf-gas", 2.5, "estimated")] and cmds == 0
    assert isinstance(items[0], Sample) and items[0].unit == "MWh"
    items, _, _ = _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 3)
    assert _values(items) == [("mill-power", 7.0, "measured")]


def test_data_before_birth_is_ignored_and_rebirth_asked_once_per_retry_interval() -> None:
    clock = Clock()
    s = SparkplugSession(_cfg(rebirth_retry_s=5), clock)
    items, cmds, _ = _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 4)
    assert cmds == 1 and isinstance(items[0], BadSample) and "before" in items[0].reason
    assert _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 5)[1] == 0
    clock.t = 6
    assert _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 6)[1] == 1
    assert s.stale() == [f"{G}/{N}"]


def test_seq_gap_drops_aliases_until_the_next_birth() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    items, cmds, _ = _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 3)  # 2 was lost
    assert cmds == 1 and "seq 3 where 2 was due" in items[0].reason  # type: ignore[attr-defined]
    items, _, _ = _msg(s, "NDATA", [M("Power", 1, DOUBLE, 8.0)], 4)
    assert _values(items) == []  # not guessed from the old birth
    _born(s)
    assert _values(_msg(s, "NDATA", [M("Power", 1, DOUBLE, 9.0)], 2)[0]) == [
        ("mill-power", 9.0, "measured")
    ]


def test_redelivered_message_is_dropped_silently() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    topic = f"spBv1.0/{G}/NDATA/{N}"
    body = encode([M("Power", 1, DOUBLE, 7.0)], seq=2, ts=9, birth=False)
    assert _values(s.handle(topic, body, 0).items) == [("mill-power", 7.0, "measured")]
    again = s.handle(topic, body, 0)
    assert (again.items, again.commands) == ([], [])


def test_seq_wraps_after_255() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    got = []
    for i in range(2, 600):
        got += _values(_msg(s, "NDATA", [M("Power", 1, DOUBLE, float(i))], i % 256, ts=i)[0])
    assert [v for _m, v, _q in got] == [float(i) for i in range(2, 600)]


def test_null_bad_and_stale_quality_are_reasons_not_readings() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    for seq, m in enumerate(
        [
            M("Power", 1, DOUBLE, is_null=True),
            M("Power", 1, DOUBLE, 1.0, quality=0),
            M("Power", 1, DOUBLE, 1.0, quality=500),
        ],
        start=2,
    ):
        items, cmds, _ = _msg(s, "NDATA", [m], seq)
        assert cmds == 0 and len(items) == 1 and isinstance(items[0], BadSample)
        assert items[0].meter == "mill-power"


def test_death_reports_unavailable_and_old_wills_are_ignored() -> None:
    s = SparkplugSession(_cfg())
    _born(s)
    _i, _c, unavailable = _msg(s, "DDEATH", [], 2, device=D)
    assert unavailable and "plc1" in unavailable[0] and s.stale() == [f"{G}/{N}/{D}"]
    assert _msg(s, "NDEATH", [M("bdSeq", 9, UINT64, 2)], None)[2] == []  # older session
    _i, _c, unavailable = _msg(s, "NDEATH", [M("bdSeq", 9, UINT64, 3)], None)
    assert unavailable and "bdSeq 3" in unavailable[0] and s.stale() == [f"{G}/{N}"]
    assert _msg(s, "NDEATH", [M("bdSeq", 9, UINT64, 3)], None)[2] == []  # told once


def test_unmapped_nodes_and_commands_are_left_alone() -> None:
    s = SparkplugSession(_cfg())
    out = s.handle(f"spBv1.0/{G}/NDATA/other", b"\x08\x01", 0)
    assert (out.items, out.commands) == ([], [])
    out = s.handle(f"spBv1.0/{G}/NCMD/{N}", b"", 0)
    assert (out.items, out.commands) == ([], [])


def test_config_errors_name_the_bad_item() -> None:
    base = {"connector": "mqtt", "name": "x", "cluster": "c"}
    with pytest.raises(ValidationError, match="topics and sparkplug"):
        MqttConfig.model_validate(base)
    bad = {
        "group": G,
        "metrics": [
            {"node": N, "metric": "a", "meter": "m"},
            {"node": "a/b", "metric": "a", "meter": "m"},
        ],
    }
    with pytest.raises(ValidationError, match=r"sparkplug.metrics\[1\].node"):
        MqttConfig.model_validate({**base, "sparkplug": bad})
    dup = {"group": G, "metrics": [{"node": N, "metric": "a", "meter": "m"}] * 2}
    with pytest.raises(ValidationError, match=r"metrics\[1\]: maps the same metric as .*\[0\]"):
        MqttConfig.model_validate({**base, "sparkplug": dup})
    nogroup = {"metrics": [{"node": N, "metric": "a", "meter": "m"}]}
    with pytest.raises(ValidationError, match=r"metrics\[0\]: no group"):
        MqttConfig.model_validate({**base, "sparkplug": nogroup})


def test_metered_mappings_are_checked() -> None:
    base = {"connector": "mqtt", "name": "x", "cluster": "c"}

    def sparkplug(*metrics: dict[str, object]) -> dict[str, object]:
        return {**base, "sparkplug": {"group": G, "metrics": list(metrics)}}

    rate = {"node": N, "metric": "p", "meter": "m", "mode": "rate"}
    with pytest.raises(ValidationError, match="mode rate needs the rate's unit"):
        MqttConfig.model_validate(sparkplug(rate))
    with pytest.raises(ValidationError, match="not a rate"):
        MqttConfig.model_validate(sparkplug({**rate, "unit": "MWh"}))
    with pytest.raises(ValidationError, match="only for mode counter"):
        MqttConfig.model_validate(sparkplug({**rate, "unit": "kW", "rollover_at": 10}))
    counter = {"node": N, "metric": "e", "meter": "m", "mode": "counter"}
    with pytest.raises(ValidationError, match=r"metrics\[1\]: meter 'm' is metered .*one baseline"):
        MqttConfig.model_validate(sparkplug(counter, {**rate, "unit": "kW"}))
    cfg = MqttConfig.model_validate(sparkplug({**rate, "unit": "kW"}))
    assert cfg.sparkplug is not None and cfg.sparkplug.metrics[0].published_unit() == "MWh"


def test_a_started_host_asks_every_mapped_node_for_a_rebirth_once() -> None:
    clock = [100.0]
    s = SparkplugSession(_cfg(), clock=lambda: clock[0])
    asked = s.start_requests()
    assert [t for t, _b in asked] == [f"spBv1.0/{G}/NCMD/{N}"]
    # data already queued for the session comes next: dead-lettered, but no second request
    # within rebirth_retry_s of the first
    items, cmds, _ = _msg(s, "NDATA", [M("Power", 1, DOUBLE, 7.0)], 4)
    assert cmds == 0 and isinstance(items[0], BadSample) and "before" in items[0].reason


SAMPLE = Path(__file__).parents[3] / "connectors" / "mqtt" / "sample-sparkplug.yaml"


def test_sparkplug_sample_lints_and_unknown_meters_are_named() -> None:
    result = CliRunner().invoke(cli, ["lint", str(SAMPLE)])
    assert result.exit_code == 0 and "ok (" in result.output, result.output
    cfg = MqttConfig.model_validate(
        {"connector": "mqtt", "name": "x", "cluster": str(MINI), "sparkplug": _cfg().model_dump()}
    )
    cfg.sparkplug.metrics[1].meter = "no-such-meter"  # type: ignore[union-attr]
    index = MeterIndex.from_cluster(load_cluster(MINI))
    assert MqttConnector.check_config(cfg, index) == [
        "sparkplug.metrics[1].meter: unknown meter 'no-such-meter' in cluster 'minicluster'"
    ]
