"""The priced topic: what the stream worker publishes is what the alerting worker needs.

The alerting worker reads the stream worker's priced readings instead of decoding and
pricing ``readings`` itself; it must raise the same alerts, byte for byte, and stay exact
under the stream worker's own replays.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import orjson
import pytest

from streams.alerting.model import Alert
from streams.alerting.simulate import (
    HOUR_MS,
    fault_scenario,
    records,
    replay_in_memory,
    stream_stage,
)
from streams.alerting.stage import AlertStage
from streams.meter_vectors import MeterVectors
from streams.priced import PricedGroup, priced_topic, split_records
from tests.unit.streams.dict_table import DictTable

START = (int(time.time() * 1000) // HOUR_MS - 20 * 24) * HOUR_MS


def _group(n: int = 5) -> PricedGroup:
    return PricedGroup(
        "c",
        "s",
        41,
        1_700_000_000_000,
        ["m1", "m2"],
        (np.arange(n) % 2).astype(np.int32),
        np.arange(n, dtype=np.int64) * 60_000,
        np.linspace(1.0, 2.0, n),
        np.linspace(0.1, 0.2, n),
        np.arange(n, dtype=np.int64) // 2 + 40,
        source=3,
    )


def test_a_group_survives_its_encoding() -> None:
    g = _group()
    back = PricedGroup.decode(g.encode())
    assert (back.cluster, back.site, back.max_offset, back.seen_at, back.meters) == (
        "c",
        "s",
        41,
        1_700_000_000_000,
        ["m1", "m2"],
    )
    assert back.source == 3
    for name in ("meter", "ts", "value", "tco2e", "offset"):
        assert np.array_equal(getattr(back, name), getattr(g, name)), name
    empty = PricedGroup.decode(_group(0).encode())
    assert len(empty) == 0 and empty.max_offset == 41
    assert priced_topic("readings") == "readings-priced"


def test_a_truncated_or_foreign_message_is_refused() -> None:
    raw = _group().encode()
    with pytest.raises(ValueError):
        PricedGroup.decode(raw[:-3])
    with pytest.raises(ValueError):
        PricedGroup.decode(raw.replace(b"priced/1", b"priced/9"))


def test_big_batches_are_cut_between_records_only() -> None:
    offset = np.repeat(np.arange(5), 3)
    cuts = split_records(offset, limit=7)
    assert [(c.start, c.stop) for c in cuts] == [(0, 6), (6, 12), (12, 15)]
    # a record bigger than the limit stays whole
    assert [(c.start, c.stop) for c in split_records(np.repeat([1, 2], [10, 2]), 7)] == [
        (0, 10),
        (10, 12),
    ]


def _dump(events: list[Alert]) -> list[dict[str, Any]]:
    return [e.model_dump(exclude={"emitted_at"}) for e in events]


@pytest.mark.parametrize("batch", [37, 500])
def test_priced_messages_raise_exactly_the_alerts_the_readings_raised(batch: int) -> None:
    sc = fault_scenario(START, hours=24 if batch == 37 else 60)
    direct = asyncio.run(replay_in_memory([sc], batch=batch))
    priced = asyncio.run(replay_in_memory([sc], batch=batch, via_priced=True))
    assert direct and _dump(priced) == _dump(direct)


def _stage(catalog: MeterVectors, sent: list[Alert]) -> AlertStage:
    from streams.alerting.engine import AlertEngine

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        if topic == "alerts":
            sent.append(Alert.from_json(value))

    async def write(lines: Any) -> None:
        return None

    return AlertStage(AlertEngine(catalog), DictTable(), DictTable(), send, write)


def test_a_stream_worker_replay_changes_nothing() -> None:
    """The stream worker publishes a batch again after a crash (before its states were
    stored): the readings carry their record offsets, so the alerting state skips them."""
    sc = fault_scenario(START, hours=26)
    catalog = sc.sim.catalog()
    recs = records([sc])

    async def go(replayed: bool) -> list[Alert]:
        sent: list[Alert] = []
        stage, feed = _stage(catalog, sent), stream_stage(catalog)
        for i in range(0, len(recs), 400):
            messages = await feed(recs[i : i + 400])
            await stage.process_priced(messages)
            if replayed:
                await stage.process_priced(messages)
        return sent

    once, twice = asyncio.run(go(False)), asyncio.run(go(True))
    assert once and _dump(twice) == _dump(once)


def test_meters_the_worker_does_not_know_are_not_judged() -> None:
    sc = fault_scenario(START, hours=3)
    catalog = sc.sim.catalog()
    known = MeterVectors([s for s in catalog.specs if not s.meter.endswith("-grid")])
    sent: list[Alert] = []
    stage = _stage(known, sent)

    recs = records([sc])

    async def go() -> None:
        feed = stream_stage(catalog)
        for i in range(0, len(recs), 300):
            await stage.process_priced(await feed(recs[i : i + 300]))

    asyncio.run(go())
    assert stage.counters.readings > 0
    assert not [e for e in sent if e.scope.meter.endswith("-grid")]
    tables = stage.sites
    assert isinstance(tables, DictTable)
    assert {m for v in tables.data.values() for m in orjson.loads(v)["m"]} <= set(known.index)


def test_wall_clock_silence_waits_for_readings_the_stream_worker_has_not_priced() -> None:
    sc = fault_scenario(START, hours=3)
    catalog = sc.sim.catalog()
    sent: list[Alert] = []
    stage = _stage(catalog, sent)
    recs = records([sc])
    end = START + 3 * HOUR_MS

    async def go() -> None:
        feed = stream_stage(catalog)
        await stage.process_priced(await feed(recs))
        applied: dict[int, int] = {}
        # readings wait in Kafka behind the last one priced: not silence
        await stage.tick(
            end + HOUR_MS, lambda p: True, lambda p, off: applied.setdefault(p, off) < 0
        )
        assert sent == [] and set(applied) == {r.partition for r in recs}
        last = {r.partition: r.offset for r in recs}
        await stage.tick(end + HOUR_MS, lambda p: True, lambda p, off: off == last[p])

    asyncio.run(go())
    silent = {e.scope.meter for e in sent if e.kind.value == "meter_silent" and e.event == "open"}
    assert silent == {m.meter for s in sc.sim.sites for m in s.meters}
