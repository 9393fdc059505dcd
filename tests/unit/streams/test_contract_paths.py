"""The contract's two paths judge alike: the same verdict and the same reason, everywhere.

A connector judges an envelope with ``twin.readings.validate_envelope`` (one reading at a
time, plain Python); the stream worker judges the Kafka record with
``streams.envelope.decode_batch`` (whole batches at once, numpy). Both must accept the same
readings, with the same figures, and refuse the same messages and readings with the same
reason text. Here they judge the reliability suite's 10,000 generated bad inputs, mixed into
good envelopes as that suite sends them, and a set of good and borderline inputs, against
the same meters and the same reference time (the record's timestamp is the edge's ``now``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import orjson
import pytest

from streams.envelope import Record, decode_batch
from streams.meter_vectors import MeterVectors
from streams.twinlink import catalog_from_clusters
from tests.reliability.badinput import Outgoing
from tests.unit.streams.conftest import BadPlan
from twin.carriers import UnitError, scale_to_canonical
from twin.contract import (
    MAX_FUTURE_MS,
    MAX_INTERVAL_MS,
    SCHEMA_V1,
    SCHEMA_V2,
    horizon_start,
    is_rate_unit,
    rate_hours,
)
from twin.model import parse_cluster
from twin.readings import KAFKA_HEADERS, MeterIndex, MeterInfo, validate_envelope

#: (reading index or None for the whole message, reason); accepted: (index, ts, value)
Verdict = tuple[list[tuple[int | None, str]], list[tuple[int, int, float]]]


def _unit_scale(carrier: str, unit: str) -> float | None:
    try:
        return float(scale_to_canonical(carrier, unit))
    except (UnitError, ValueError):
        return None


def _as_deployed(catalog: MeterVectors) -> MeterVectors:
    """The suite's meters as a worker built from the twin holds them: any unit the twin
    converts is accepted (as at the edge), and one meter may run backwards."""
    specs = [
        replace(s, canonical=next(iter(s.units.values())), allow_negative=i == 0)
        for i, s in enumerate(catalog.specs)
    ]
    return MeterVectors(specs, unit_scale=_unit_scale)


def _edge_index(catalog: MeterVectors, cluster: str) -> MeterIndex:
    """The edge's index of the same meters (what ``MeterIndex.from_cluster`` gives)."""
    return MeterIndex(
        cluster,
        [
            MeterInfo(
                s.meter,
                s.site,
                s.carrier,
                unit=next(iter(s.units)),
                allow_negative=s.allow_negative,
                max_value=s.max_value,
            )
            for s in catalog.specs
        ],
    )


def _stream(records: list[Record], catalog: MeterVectors) -> dict[int, Verdict]:
    """The worker's verdicts by record offset, decoding 64 records a batch as it does."""
    out: dict[int, Verdict] = {r.offset: ([], []) for r in records}
    for begin in range(0, len(records), 64):
        batch = decode_batch(records[begin : begin + 64], catalog)
        for rej in batch.rejects:
            out[rej.record.offset][0].append((rej.index, rej.reason))
        for k in range(batch.env.size):
            offset = batch.envelopes[int(batch.env[k])].record.offset
            out[offset][1].append(
                (int(batch.reading_index[k]), int(batch.ts[k]), float(batch.value[k]))
            )
    return out


def _edge(record: Record, index: MeterIndex) -> Verdict:
    assert record.value is not None
    result = validate_envelope(
        record.value, index, now=record.timestamp, key=record.key, headers=record.headers
    )
    refused = [(r.position, r.reason) for r in result.rejected]
    positions = {r.position for r in result.rejected}
    kept = (p for p in range(len(result.accepted) + len(refused)) if p not in positions)
    accepted = [(p, r["ts"], _quantity(r)) for p, r in zip(kept, result.accepted, strict=False)]
    return refused, accepted


def _quantity(r: Any) -> float:
    """The quantity of an accepted reading: the edge passes a rate on as it came, the worker
    integrates it over the interval (the contract's ``rate_hours``)."""
    value = float(r["value"])
    if is_rate_unit(r["unit"]):
        return value * rate_hours(r["start"], r["ts"])
    return value


def _differences(records: list[Record], catalog: MeterVectors, index: MeterIndex) -> list[str]:
    stream = _stream(records, catalog)
    diffs = []
    for record in records:
        edge = _edge(record, index)
        mine = (sorted(stream[record.offset][0], key=repr), sorted(stream[record.offset][1]))
        theirs = (sorted(edge[0], key=repr), sorted(edge[1]))
        if mine != theirs:
            diffs.append(f"record {record.offset}: stream {mine} != edge {theirs}")
    return diffs


def _records(plan: list[Outgoing], now: int) -> list[Record]:
    return [Record("readings", 0, i, now, o.key, o.value, o.headers) for i, o in enumerate(plan)]


def test_both_paths_judge_the_bad_inputs_alike(bad_plan: BadPlan) -> None:
    catalog = _as_deployed(bad_plan.catalog)
    records = _records(bad_plan.plan, bad_plan.now)
    stream = _stream(records, catalog)
    refused = sum(len(v[0]) for v in stream.values())
    accepted = sum(len(v[1]) for v in stream.values())
    assert refused > 9_000 and accepted > 7_000  # the inputs really are bad, and good, and judged
    diffs = _differences(records, catalog, _edge_index(catalog, bad_plan.cluster))
    assert not diffs, f"{len(diffs)} records judged differently, e.g.\n" + "\n".join(diffs[:5])


def _borderline(catalog: MeterVectors, cluster: str, now: int) -> list[Outgoing]:
    """Good and bad inputs at the edges of every limit, where two implementations of one
    rule part first."""
    site = catalog.clusters[cluster][0]
    spec = catalog.specs[catalog.sites[(cluster, site)][0]]  # the meter that may run backwards
    other = catalog.specs[catalog.sites[(cluster, site)][1]]
    unit = next(iter(spec.units))

    def r(**over: Any) -> dict[str, Any]:
        base = {
            "meter": spec.meter,
            "ts": now - 60_000,
            "value": 1.5,
            "unit": unit,
            "carrier": spec.carrier,
            "quality": "measured",
        }
        return {**base, **over}

    oldest = horizon_start(now)
    ts = now - 60_000
    readings = [
        r(),
        r(value=-2.5),  # a bidirectional meter
        r(meter=other.meter, unit=next(iter(other.units)), carrier=other.carrier, value=-2.5),
        r(value=7),  # an integer value
        r(value=2**53 + 1),
        r(value=spec.max_value),
        r(value=math.nextafter(spec.max_value, math.inf)),
        r(value=-spec.max_value),
        r(value=0.0),
        r(ts=now + MAX_FUTURE_MS),
        r(ts=now + MAX_FUTURE_MS + 1),
        r(ts=oldest),
        r(ts=oldest - 1),
        r(ts=0),
        r(ts=-1),
        r(quality="estimated"),
        r(quality="gap_filled"),
        r(quality=""),
        r(tag="an unknown field"),
        r(start=ts - 900_000),  # in readings/1: not read
        r(start="yesterday"),  # ... but type-checked
        r(unit="kWh") if spec.carrier != "electricity" else r(unit="MWh"),  # converted
        r(unit="kW"),
        r(carrier="steam"),
    ]
    interval = [
        r(unit="kW", start=ts - 900_000),  # a rate over its interval
        r(unit="MW", start=ts - 1, value=-2.5),
        r(unit="kW"),  # a rate without an interval
        r(unit="t/h", start=ts - 900_000),
        r(start=ts - 900_000),
        r(start=ts - MAX_INTERVAL_MS),
        r(start=ts - MAX_INTERVAL_MS - 1),
        r(start=ts - 1),
        r(start=ts),
        r(start=-1),
        r(start=0, ts=1),
        r(start=oldest, ts=oldest + 60_000),
        r(start=oldest - 1, ts=oldest + 60_000),
        r(start=2**62),
        r(),
    ]

    def envelope(items: list[Any], schema: str = SCHEMA_V1, **over: Any) -> bytes:
        body = {
            "schema": schema,
            "cluster": cluster,
            "site": site,
            "source": "borderline",
            "sent_at": now,
            "readings": items,
        }
        return orjson.dumps({**body, **over})

    key, headers = site.encode(), list(KAFKA_HEADERS)
    v2 = [("content-type", b"application/json"), ("clustertwin-schema", SCHEMA_V2.encode())]
    values = [
        (envelope(readings), headers),
        (envelope(interval, SCHEMA_V2), v2),
        (envelope(readings, SCHEMA_V2), v2),
        (envelope([]), headers),
        (envelope([r()], extra="ignored"), headers),
        (envelope([r()], source=""), headers),
        (envelope([r()], sent_at=2**63), headers),
        (envelope([r()], cluster=cluster.upper()), headers),
        (envelope([r()]), [("clustertwin-schema", b"readings/3")]),
        (envelope([r()]).replace(b'"measured"', b'"measur\\u0065d"'), headers),
        (b"", headers),
        (b"null", headers),
    ]
    return [Outgoing(key, value, list(h)) for value, h in values]


def test_both_paths_judge_good_and_borderline_inputs_alike(bad_plan: BadPlan) -> None:
    catalog = _as_deployed(bad_plan.catalog)
    plan = _borderline(catalog, bad_plan.cluster, bad_plan.now)
    records = _records(plan, bad_plan.now)
    stream = _stream(records, catalog)
    assert sum(len(v[1]) for v in stream.values()) >= 20  # good ones among them
    diffs = _differences(records, catalog, _edge_index(catalog, bad_plan.cluster))
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("when", ["2026-01-01T00:00:00Z", "2026-12-31T23:59:59Z"])
def test_the_horizon_is_the_same_for_both(bad_plan: BadPlan, when: str) -> None:
    """At either end of a reporting year, the edge's wall clock and the record time agree."""
    from datetime import datetime

    now = int(datetime.fromisoformat(when).timestamp() * 1000)
    catalog = _as_deployed(bad_plan.catalog)
    records = _records(_borderline(catalog, bad_plan.cluster, now), now)
    diffs = _differences(records, catalog, _edge_index(catalog, bad_plan.cluster))
    assert not diffs, "\n".join(diffs)


_TWIN_CLUSTER = {
    "id": "bidi",
    "name": "bidirectional and rate meters",
    "country": "FR",
    "grid_zone": "FR",
    "reference_year": 2026,
    "sites": [
        {
            "id": "works",
            "name": "works",
            "assets": [
                {
                    "id": "a",
                    "meters": [
                        # a grid connection that also exports
                        {"id": "grid", "carrier": "electricity", "unit": "kW",
                         "boundary": "import", "bidirectional": True},
                        {"id": "mill", "carrier": "electricity", "unit": "MWh",
                         "boundary": "import"},
                        {"id": "gas", "carrier": "natural_gas", "unit": "Nm3/h",
                         "boundary": "import", "calorific_basis": "gross"},
                    ],
                }
            ],
        }
    ],
}  # fmt: skip


def test_both_paths_built_from_the_twin_judge_bidirectional_and_rate_meters_alike() -> None:
    """The edge's index (``MeterIndex.from_cluster``) and the worker's
    (``catalog_from_clusters``) come from one cluster YAML declaring a bidirectional meter
    and rate units: both take the sign and rate rules from ``twin.contract``."""
    cluster = parse_cluster(_TWIN_CLUSTER, "inline")
    catalog = catalog_from_clusters([cluster])
    index = MeterIndex.from_cluster(cluster)
    now = int(__import__("time").time() * 1000)
    ts = now - 60_000

    def r(meter: str, value: float, unit: str, **over: Any) -> dict[str, Any]:
        carrier = "natural_gas" if meter == "gas" else "electricity"
        return {"meter": meter, "ts": ts, "value": value, "unit": unit, "carrier": carrier,
                "quality": "measured", **over}  # fmt: skip

    quarter = ts - 900_000
    readings = [
        r("grid", 2000.0, "kW", start=quarter),  # 0: 0.5 MWh imported
        r("grid", -800.0, "kW", start=quarter),  # 1: 0.2 MWh exported: accepted
        r("grid", -0.2, "MWh"),  # 2: bidirectional in a quantity unit too
        r("mill", -0.2, "MWh"),  # 3: refused: cannot run backwards
        r("grid", 2000.0, "kW"),  # 4: refused: a rate needs its interval
        r("gas", 3600.0, "Nm3/h", start=quarter),  # 5: 900 Nm3
        r("gas", 900.0, "Nm3"),  # 6: the same quantity as a quantity
        r("gas", 900.0, "m3"),  # 7: refused: a gas volume states its conditions
        r("gas", 9.0, "tCO2"),  # 8: refused: a CO2 mass is no gas quantity
        r("gas", -1.0, "Nm3"),  # 9: refused: not bidirectional
        r("gas", 1000.0, "kWh"),  # 10: energy on the meter's gross basis: 0.9 MWh NCV
    ]
    body = {"schema": SCHEMA_V2, "cluster": "bidi", "site": "works", "source": "t",
            "sent_at": now, "readings": readings}  # fmt: skip
    v2 = [("content-type", b"application/json"), ("clustertwin-schema", SCHEMA_V2.encode())]
    records = [Record("readings", 0, 0, now, b"works", orjson.dumps(body), v2)]
    assert not _differences(records, catalog, index), _differences(records, catalog, index)
    refused, accepted = _stream(records, catalog)[0]
    assert sorted(i for i, _ in refused) == [3, 4, 7, 8, 9]
    assert "rule rate.needs_interval" in dict(refused)[4]
    assert "cannot run backwards" in dict(refused)[3] and "cannot run backwards" in dict(refused)[9]
    quantities = {i: v for i, _, v in accepted}
    assert quantities == {0: 500.0, 1: -200.0, 2: -0.2, 5: 900.0, 6: 900.0, 10: 1000.0}
    # priced: the grid's export carries no scope 2 (not netted); the gas rate and quantity agree (a
    # volume is converted with the NCV), and its energy units are gross (0.90 to NCV)
    batch = decode_batch(records, catalog)
    priced = catalog.price(batch.row, batch.value) / 1e9
    by_index = dict(zip(batch.reading_index.tolist(), priced.tolist(), strict=True))
    assert by_index[0][0] == pytest.approx(0.5, rel=1e-9)  # MWh
    assert by_index[1][0] == pytest.approx(-0.2, rel=1e-9)
    assert by_index[0][2] > 0  # s2_location of the import
    assert by_index[1][2] == by_index[1][3] == 0  # an export is no credit (gross scope 2)
    assert by_index[2][2] == by_index[2][3] == 0
    assert by_index[5][0] == pytest.approx(900 * 0.75e-3 * 48.0 / 3.6, rel=1e-9)
    assert by_index[6] == by_index[5]
    assert by_index[10][0] == pytest.approx(0.9, rel=1e-9)
    # a compiled catalog file keeps the basis
    again = MeterVectors.from_records(orjson.loads(catalog.to_json()))
    assert [s.calorific_basis for s in again.specs] == ["net", "net", "gross"]
