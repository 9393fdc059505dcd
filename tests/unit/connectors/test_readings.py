"""The reading contract: one bad reading is rejected with a reason, its neighbours pass."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from twin.readings import (
    KAFKA_HEADERS,
    MAX_FUTURE_MS,
    SCHEMA_VERSION,
    MeterIndex,
    Quality,
    encode_envelope,
    envelope_json_schema,
    validate_envelope,
    validate_readings,
)

NOW = 1_780_000_000_000
SCHEMA_FILE = Path(__file__).parents[3] / "schemas" / "readings-1.schema.json"


def good(meter: str = "bf-gas", **over: Any) -> dict[str, Any]:
    r = {
        "meter": meter,
        "ts": NOW - 60_000,
        "value": 12.5,
        "unit": "MWh",
        "carrier": "natural_gas",
        "quality": "measured",
    }
    r.update(over)
    return r


def envelope(items: list[dict[str, Any]], **over: Any) -> bytes:
    doc = {
        "schema": SCHEMA_VERSION,
        "cluster": "minicluster",
        "site": "steelworks",
        "source": "test/unit",
        "sent_at": NOW,
        "readings": items,
    }
    doc.update(over)
    return orjson.dumps(doc)


def test_good_envelope_is_accepted_whole(mini_index: MeterIndex) -> None:
    readings = [
        good(),
        good("bf-coke", unit="t", carrier="coke", value=3.0),
        good("mill-power", unit="kWh", carrier="electricity", quality="gap_filled"),
    ]
    result = validate_envelope(envelope(readings), mini_index, now=NOW)
    assert result.rejected == []
    assert [r["meter"] for r in result.accepted] == ["bf-gas", "bf-coke", "mill-power"]
    assert result.accepted[2]["quality"] is Quality.GAP_FILLED
    assert (result.cluster, result.site, result.source) == (
        "minicluster",
        "steelworks",
        "test/unit",
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            good("mill-power", carrier="electricity", unit="t"),
            "unit 't' not accepted",
        ),
        (good(unit="kW"), "unit 'kW' is a rate (a power or a flow): it must give the interval"),
        (good(unit="tCO2"), "unit 'tCO2' not accepted"),  # a CO2 mass is no fuel quantity
        (good(unit="m3"), "unit 'm3' not accepted"),  # a gas volume states its conditions
        (good(unit="  "), "unit '  ' not accepted"),
        (good(value=None), "field 'value' must be a number"),
        (good(value="12.5"), "field 'value' must be a number"),
        (good(value=True), "field 'value' must be a number"),
        (good(value=-1.0), "negative value -1.0 for a meter that cannot run backwards"),
        (good(ts=NOW + MAX_FUTURE_MS + 1000), "ahead of the record time"),
        (good(ts=1_700_000_000), "beyond the restatement horizon"),
        (good(ts=1.5e12 + 0.5), "field 'ts' must be an integer"),
        (good("no-such-meter"), "unknown meter 'no-such-meter' in cluster 'minicluster'"),
        (good("berth1-shore", carrier="shore_power"), "belongs to site 'port', not 'steelworks'"),
        (good(carrier="coke", unit="t"), "carrier 'coke' does not match the meter's 'natural_gas'"),
        (good(carrier="unobtainium"), "carrier 'unobtainium' does not match"),
        (good(quality="guessed"), "quality 'guessed' not one of"),
        ({"meter": "bf-gas", "ts": NOW}, "lacks field(s) value, unit, carrier, quality"),
    ],
)
def test_one_bad_reading_is_rejected_alone(
    mini_index: MeterIndex, bad: dict[str, Any], reason: str
) -> None:
    result = validate_envelope(envelope([good(), bad, good(value=1.0)]), mini_index, now=NOW)
    assert [r["value"] for r in result.accepted] == [12.5, 1.0]
    assert len(result.rejected) == 1
    position, why, raw = result.rejected[0]
    assert position == 1
    assert reason in why
    assert raw == bad


def test_nan_and_infinity_reject_only_that_reading(mini_index: MeterIndex) -> None:
    """A connector handing over a NaN or an infinity loses that reading alone. (Spelt as
    NaN/Infinity literals in a message, which no JSON encoder here writes, they make the
    message malformed, as the stream worker's decoders find it: see twin.contract.)"""
    accepted, rejected = validate_readings(
        [good(value=math.nan), good(), good(value=math.inf)],
        site="steelworks",
        index=mini_index,
        now=NOW,
    )
    assert len(accepted) == 1
    assert [r.position for r in rejected] == [0, 2]
    assert all("finite" in r.reason for r in rejected)
    doc = json.loads(envelope([good(), good(), good()]))
    doc["readings"][0]["value"] = math.nan
    raw = json.dumps(doc).encode()  # writes a NaN literal
    result = validate_envelope(raw, mini_index, now=NOW)
    assert result.envelope_rejected and "malformed JSON" in result.rejected[0].reason


def test_unknown_fields_are_ignored(mini_index: MeterIndex) -> None:
    """A newer connector's extra field costs nothing, at the edge as in the worker."""
    result = validate_envelope(envelope([good(extra=1)], colour="red"), mini_index, now=NOW)
    assert result.rejected == []
    assert "extra" not in result.accepted[0]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (envelope([good()], schema="readings/0"), "unsupported schema 'readings/0'"),
        (envelope([good()], cluster="rotterdam"), "unknown cluster 'rotterdam'"),
        (envelope([good()], site="moon-base"), "unknown site 'moon-base'"),
        (envelope([good()], sent_at="yesterday"), "field 'sent_at' must be an integer"),
        (envelope([good()], readings={"a": 1}), "field 'readings' must be a non-empty list"),
    ],
)
def test_unreadable_envelope_is_rejected_once_with_its_bytes(
    mini_index: MeterIndex, raw: bytes, reason: str
) -> None:
    result = validate_envelope(raw, mini_index, now=NOW)
    assert result.accepted == []
    assert result.envelope_rejected
    assert len(result.rejected) == 1
    assert result.rejected[0].position is None
    assert reason in result.rejected[0].reason
    assert result.rejected[0].raw_bytes() == raw


def test_without_an_index_only_context_free_rules_apply() -> None:
    result = validate_envelope(envelope([good("anything"), good(value=-3.0)]), None, now=NOW)
    assert [r["meter"] for r in result.accepted] == ["anything"]
    assert "negative" in result.rejected[0].reason


def test_encode_round_trips_and_headers_name_the_schema(mini_index: MeterIndex) -> None:
    accepted = validate_envelope(envelope([good(), good(value=2.0)]), mini_index, now=NOW).accepted
    raw = encode_envelope(
        cluster="minicluster", site="steelworks", source="x/y", readings=accepted, sent_at=NOW
    )
    again = validate_envelope(raw, mini_index, now=NOW)
    assert again.accepted == accepted
    assert orjson.loads(raw)["readings"][0]["carrier"] == "natural_gas"
    assert orjson.loads(raw)["readings"][0]["quality"] == "measured"
    assert dict(KAFKA_HEADERS) == {
        "content-type": b"application/json",
        "clustertwin-schema": b"readings/1",
    }


def test_published_json_schema_matches_the_model() -> None:
    on_disk = json.loads(SCHEMA_FILE.read_text())
    assert on_disk == json.loads(json.dumps(envelope_json_schema())), (
        "schemas/readings-1.schema.json is stale: regenerate it (see schemas/README.md)"
    )
    reading = on_disk["$defs"]["Reading"]
    assert set(reading["required"]) == {"meter", "ts", "value", "unit", "carrier", "quality"}
    assert on_disk["properties"]["schema"]["const"] == "readings/1"


def test_hot_path_dict_and_documented_model_agree(mini_index: MeterIndex) -> None:
    from pydantic import TypeAdapter

    from twin.readings import IntervalReading, Reading, ReadingDict

    fast = TypeAdapter(ReadingDict).json_schema()
    model = IntervalReading.model_json_schema()
    assert fast["required"] == model["required"] == Reading.model_json_schema()["required"]
    for name, spec in fast["properties"].items():
        mine = {k: v for k, v in spec.items() if k not in ("title", "description")}
        theirs = {
            k: v for k, v in model["properties"][name].items() if k not in ("title", "description")
        }
        if name == "start":  # optional: the model says so with a null default
            assert theirs.pop("default") is None
            assert {"type": "integer"} in theirs.pop("anyOf") and not theirs
            assert mine == {"type": "integer"}
            continue
        assert mine == theirs, name
    result = validate_envelope(envelope([good()]), mini_index, now=NOW)
    assert Reading.model_validate(result.accepted[0]).value == 12.5


def test_meter_index_refuses_duplicate_ids() -> None:
    from twin.readings import MeterInfo

    with pytest.raises(ValueError, match="appears twice"):
        MeterIndex("c", [MeterInfo("m", "a", "coke"), MeterInfo("m", "b", "coke")])


def test_published_readings_2_schema_matches_the_model() -> None:
    path = SCHEMA_FILE.with_name("readings-2.schema.json")
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(envelope_json_schema("readings/2"))), (
        "schemas/readings-2.schema.json is stale: regenerate it (see schemas/README.md)"
    )
    assert on_disk["properties"]["schema"]["const"] == "readings/2"


def test_readings_2_intervals_are_judged_and_readings_1_refuses_them(
    mini_index: MeterIndex,
) -> None:
    ts = NOW - 60_000
    items = [
        good(start=ts - 900_000),
        good(start=ts),
        good(start=ts - 90_000_000),
        good(start=-1),
    ]
    result = validate_envelope(envelope(items, schema="readings/2"), mini_index, now=NOW)
    assert [r["start"] for r in result.accepted] == [ts - 900_000]
    reasons = [r.reason for r in result.rejected]
    assert "not before its end" in reasons[0] and "longer than the 24 h limit" in reasons[1]
    assert "is negative" in reasons[2]
    # in readings/1 ``start`` is not a field: the reading stays an instant, as the worker
    # reads it (and re-encoded, it stays readings/1)
    v1 = validate_envelope(envelope([good(start=ts - 900_000)]), mini_index, now=NOW)
    assert not v1.rejected and "start" not in v1.accepted[0]
    assert (
        orjson.loads(encode_envelope(cluster="c", site="s", source="x", readings=result.accepted))[
            "schema"
        ]
        == "readings/2"
    )
