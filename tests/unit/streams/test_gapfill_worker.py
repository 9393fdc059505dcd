"""The gap filler over the worker's real compute path: what it sends, when it does not, and
that its fills come back in, stand as ``gap_filled`` and give way to the real readings."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from streams.gapfill import FillDecl, GapFiller
from streams.windows import SiteState
from tests.unit.streams.test_arrival_orders import Worker, close_all, offline, stored
from tests.unit.streams.test_pipeline_units import T0, reading
from twin.gapfill import MrrConservative, Profile, RefReading

H = 3_600_000
DAY = 24 * H


class Reference:
    """``ReferenceStore`` over the worker's line store (what InfluxDB would hold)."""

    def __init__(self, w: Worker) -> None:
        self.w = w

    async def meter_readings(
        self, twin: str, cluster: str, site: str, meter: str, start: int, stop: int
    ) -> list[RefReading]:
        return [
            RefReading(ts, float(f["value"]), f["quality"].strip('"'))
            for tags, ts, f in self.w.store.series("meter_reading")
            if tags["meter"] == meter and tags["site"] == site and start <= ts < stop
        ]


def _filler(w: Worker, sent: list[dict[str, Any]]) -> GapFiller:
    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        assert topic == "readings" and key == b"a"
        sent.extend(orjson.loads(value)["readings"])

    decl = MrrConservative(method="mrr_conservative", every="1h", after="2h", reference_days=1)
    return GapFiller(
        {"a": [FillDecl("c", "a", "gas-a", "natural_gas", "MWh", decl)]},
        Reference(w),
        send,
        "readings",
        "t",
    )


def _state(w: Worker) -> SiteState:
    raw = w.site_table.get(b"a")
    assert raw is not None
    return SiteState.loads(raw)


def test_a_silent_meter_is_filled_by_mrr_then_replaced_by_its_recovered_readings() -> None:
    w = Worker(30_000, 600_000)
    base = T0 - 30 * H  # 30 hours of hourly readings, then 3 missing
    values = [10.0, 12.0, 11.0, 13.0, 14.0]
    real = [reading("gas-a", base + (k + 1) * H, values[k % 5]) for k in range(30)]
    for r in real:
        r["start"] = r["ts"] - H
    asyncio.run(w.deliver([("a", real)]))
    last = real[-1]["ts"]
    missing = [
        reading("gas-a", last + k * H, 20.0 + k) | {"start": last + (k - 1) * H} for k in (1, 2, 3)
    ]
    sent: list[dict[str, Any]] = []
    filler = _filler(w, sent)
    clocks = {"a": ("c", last, last)}
    state = lambda site: _state(w)  # noqa: E731

    async def run(now: int, caught_up: bool = True) -> int:
        return await filler.run(state, clocks, lambda p: caught_up, now_ms=now)

    # not while readings wait (or Kafka is away): nothing, however long the silence
    assert asyncio.run(run(last + 10 * H, caught_up=False)) == 0
    # due: ends missing for 2 h on the clock (the cluster clock is capped by now)
    assert asyncio.run(run(last + 3 * H)) == 1
    assert [r["ts"] for r in sent] == [last + H]
    # the reference: the 24 hourly readings before the interval, 10,12,11,13,14 repeating:
    # mean and sample sigma by hand over those 24 (4 full cycles + 10,12,11,13)
    ref = [values[k % 5] for k in range(6, 30)]
    mean = sum(ref) / 24
    sigma = (sum((x - mean) ** 2 for x in ref) / 23) ** 0.5
    assert abs(sent[0]["value"] - (mean + 2 * sigma)) < 1e-9
    assert sent[0]["quality"] == "gap_filled" and sent[0]["start"] == last
    again: list[dict[str, Any]] = []
    assert asyncio.run(_filler(w, again).run(state, clocks, lambda p: True, now_ms=last + 3 * H))
    assert again == sent  # deterministic: a second pass (or a restarted worker) sends the same
    asyncio.run(w.deliver([("a", sent + again)]))
    assert _state(w).fills["gas-a"].keys() == {last + H}
    # the next pass continues after the fill
    sent.clear()
    assert asyncio.run(run(last + 5 * H)) == 2
    assert [r["ts"] for r in sent] == [last + 2 * H, last + 3 * H]
    asyncio.run(w.deliver([("a", sent)]))
    share = _state(w).twin()["completeness"]
    assert sum(y["gap_filled"]["readings"] for y in share.values()) == 3
    assert _ytd_field(w, "gap_filled_readings") == "3i"
    gf = sum(float(y["gap_filled"]["tco2e"]) for y in share.values())
    total = gf + sum(float(y["measured"]["tco2e"]) for y in share.values())
    assert abs(float(_ytd_field(w, "gap_filled_share")) - gf / total) < 1e-12
    # the meter's data is recovered, out of order, hours late
    recovered = list(missing)
    random.Random(3).shuffle(recovered)
    asyncio.run(w.deliver([("a", recovered)]))
    asyncio.run(close_all(w))
    got = stored(w.store)
    want = offline(real + missing)
    assert {k: v for k, v in got.items() if k in want} == want
    assert not {k: v for k, v in got.items() if k not in want and any(v)}
    final = _state(w)
    assert not final.fills and final.replaced == 3
    assert sum(y["gap_filled"]["readings"] for y in final.twin()["completeness"].values()) == 0
    assert _ytd_field(w, "gap_filled_readings") == "0i"
    assert _ytd_field(w, "measured_readings") == "33i"


def _ytd_field(w: Worker, name: str) -> str:
    """A field of the newest site twin_ytd point (a year-boundary-free stream: one year)."""
    points = [(ts, f) for tags, ts, f in w.store.series("twin_ytd") if tags.get("site") == "a"]
    return max(points, key=lambda p: p[0])[1][name]


def test_a_gap_fill_file_names_the_bad_meter(tmp_path: Any) -> None:
    import pytest

    from streams.gapfill import GapFillFileError, declarations_from_file
    from tests.unit.streams.test_pipeline_units import catalog

    path = tmp_path / "gapfill.yaml"
    path.write_text(
        "meters:\n"
        "  gas-a: {method: last_good, every: 15m, after: 1h}\n"
        "  gas-b: {method: mrr_conservative, every: 15m}\n"
        "  nope: {method: last_good, every: 15m, after: 1h}\n"
    )
    with pytest.raises(GapFillFileError) as err:
        declarations_from_file(path, catalog())
    msg = str(err.value)
    assert "meter 'gas-b': after: Field required" in msg.replace("mrr_conservative.", "")
    assert "meter 'nope': not in the catalog" in msg
    path.write_text("meters:\n  gas-a: {method: last_good, every: 15m, after: 1h}\n")
    (decl,) = declarations_from_file(path, catalog())["a"]
    assert (decl.meter, decl.unit, decl.method.every_ms) == ("gas-a", "MWh", 15 * 60_000)


def test_a_silent_meter_is_filled_by_its_daily_profile_then_replaced() -> None:
    """Four days of hourly readings with a daily shape, 10 + hour + 2 x day, then three
    silent hours. Each fill is the mean of the same hour on the three days before
    (``profile``, reference_days 3): by hand, 10 + hour + 2 x (day - 2). The fills are
    published, stand as gap_filled, and the recovered readings replace them exactly."""
    w = Worker(30_000, 600_000)
    base = T0 - 96 * H

    def shape(ts: int) -> float:
        day, hour = divmod((ts - H - base) // H, 24)  # the interval [ts - 1h, ts)
        return 10.0 + hour + 2.0 * day

    real = [
        reading("gas-a", base + k * H, shape(base + k * H)) | {"start": base + (k - 1) * H}
        for k in range(1, 97)
    ]
    asyncio.run(w.deliver([("a", real)]))
    last = real[-1]["ts"]
    sent: list[dict[str, Any]] = []

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        assert topic == "readings" and key == b"a"
        body = orjson.loads(value)
        assert body["source"] == "clustertwin-gapfill"
        sent.extend(body["readings"])

    decl = Profile(method="profile", every="1h", after="2h", reference_days=3)
    filler = GapFiller(
        {"a": [FillDecl("c", "a", "gas-a", "natural_gas", "MWh", decl)]},
        Reference(w),
        send,
        "readings",
        "t",
    )
    clocks = {"a": ("c", last, last)}
    n = asyncio.run(filler.run(lambda s: _state(w), clocks, lambda p: True, now_ms=last + 5 * H))
    assert n == 3 and [r["ts"] for r in sent] == [last + H, last + 2 * H, last + 3 * H]
    for r in sent:
        day, hour = divmod((r["ts"] - H - base) // H, 24)
        assert r["value"] == 10.0 + hour + 2.0 * (day - 2)  # by hand
        same_hour = [x["value"] for x in real if (r["ts"] - x["ts"]) in (DAY, 2 * DAY, 3 * DAY)]
        assert len(same_hour) == 3 and r["value"] == sum(same_hour) / 3  # the rule, offline
        assert (r["quality"], r["start"], r["unit"]) == ("gap_filled", r["ts"] - H, "MWh")
    asyncio.run(w.deliver([("a", sent)]))
    share = _state(w).twin()["completeness"]
    assert sum(y["gap_filled"]["readings"] for y in share.values()) == 3
    recovered = [
        reading("gas-a", last + k * H, shape(last + k * H)) | {"start": last + (k - 1) * H}
        for k in (3, 1, 2)
    ]
    asyncio.run(w.deliver([("a", recovered)]))
    asyncio.run(close_all(w))
    got = stored(w.store)
    want = offline(real + recovered)
    assert {k: v for k, v in got.items() if k in want} == want
    assert not {k: v for k, v in got.items() if k not in want and any(v)}
    assert _state(w).replaced == 3 and not _state(w).fills


def test_a_profile_slot_without_reference_is_left_missing_and_the_next_filled() -> None:
    """The hour of the second silent interval was never measured on the days before: it is
    left missing, and the third is filled all the same (another slot of the day)."""
    w = Worker(30_000, 600_000)
    base = T0 - 72 * H
    real = [
        reading("gas-a", base + k * H, 5.0 + k % 24) | {"start": base + (k - 1) * H}
        for k in range(1, 73)
        if (T0 + 2 * H - (base + k * H)) % DAY  # no reading in the slot of T0 + 2h
    ]
    asyncio.run(w.deliver([("a", real)]))
    sent: list[dict[str, Any]] = []

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        sent.extend(orjson.loads(value)["readings"])

    decl = Profile(method="profile", every="1h", after="2h", reference_days=2)
    filler = GapFiller(
        {"a": [FillDecl("c", "a", "gas-a", "natural_gas", "MWh", decl)]},
        Reference(w),
        send,
        "readings",
        "t",
    )
    clocks = {"a": ("c", T0, T0)}
    assert asyncio.run(filler.run(lambda s: _state(w), clocks, lambda p: True, now_ms=T0 + 5 * H))
    assert [r["ts"] for r in sent] == [T0 + H, T0 + 3 * H]
    assert [r["value"] for r in sent] == [5.0 + (73 % 24), 5.0 + (75 % 24)]
