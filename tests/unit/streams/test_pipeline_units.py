"""The stream worker's batch logic without a broker: validation, windows, replay, lateness.

The stages take a dict-backed table and record what they would write and send, so each rule
can be checked on hand-made envelopes. The real-server proofs are in
tests/integration/streams.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from streams.cluster_stage import ClusterStage
from streams.delivery import Topics
from streams.envelope import Record, decode_batch
from streams.meter_vectors import NANO, CatalogError, MeterSpec, MeterVectors, offline_price
from streams.sink import window_line
from streams.site_stage import SiteStage
from streams.windows import SiteState, WindowUpdate
from tests.unit.streams.dict_table import DictTable
from tests.unit.streams.linestore import LineStore, nano
from twin import deadletter

NOW = int(time.time() * 1000)
T0 = NOW - 3 * 3600_000
T0 -= T0 % 3600_000  # an hour boundary, three hours back


def catalog() -> MeterVectors:
    specs = [
        # scope 1 by gas as well: CO2, CH4, N2O, other, biogenic memo, captured (t per MWh)
        MeterSpec(
            "gas-a",
            "a",
            "c",
            "natural_gas",
            {"MWh": (1.0, (0.2, 0.0, 0.0, 0.0, 0.19, 0.0001, 0.00003, 0.0, 0.04, 0.01))},
        ),
        MeterSpec(
            "elec-a",
            "a",
            "c",
            "electricity",
            {"kWh": (0.001, (0.0, 0.00005, 0.00002, 0.0))},
            allow_negative=True,
            canonical=(1.0, (0.0, 0.05, 0.02, 0.0)),
        ),
        MeterSpec("gas-b", "b", "c", "natural_gas", {"MWh": (1.0, (0.2, 0.0, 0.0, 0.0))}),
    ]
    scales = {("electricity", "MWh"): 1.0, ("electricity", "kWh"): 0.001}
    return MeterVectors(specs, unit_scale=lambda c, u: scales.get((c, u)))


def reading(meter: str, ts: int, value: Any, unit: str = "MWh", carrier: str = "natural_gas"):
    return {
        "meter": meter,
        "ts": ts,
        "value": value,
        "unit": unit,
        "carrier": carrier,
        "quality": "measured",
    }


def record(site: str, readings: list[Any], offset: int, partition: int = 0, **env: Any) -> Record:
    body = {
        "schema": "readings/1",
        "cluster": "c",
        "site": site,
        "source": "unit-test",
        "sent_at": NOW,
        "readings": readings,
        **env,
    }
    return Record("readings", partition, offset, NOW, site.encode(), orjson.dumps(body))


class Harness:
    def __init__(self, grace_ms: int = 60_000) -> None:
        self.lines: list[str] = []
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.table = DictTable()
        self.catalog = catalog()

        self.store = LineStore()

        async def write(lines):
            lines = list(lines)
            self.lines.extend(lines)
            self.store.feed(lines)

        async def send(topic, key, value, headers):
            self.sent.append((topic, key, value, headers))

        self.stage = SiteStage(
            self.catalog,
            self.table,
            write,
            send,
            Topics("dl", "late", "cu"),
            "unit",
            grace_ms,
            store=self.store,
        )

    def run(self, records: list[Record]) -> Any:
        return asyncio.run(self.stage.process(records))

    def state(self, site: str) -> SiteState:
        raw = self.table.get(site.encode())
        assert raw is not None
        return SiteState.loads(raw)

    def topic(self, name: str) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
        return [s for s in self.sent if s[0] == name]


def test_one_bad_reading_goes_to_deadletter_with_reason_and_neighbours_survive():
    h = Harness()
    rec = record(
        "a",
        [
            reading("gas-a", T0 + 1000, 2.5),
            reading("gas-a", T0 + 2000, "12"),  # a string
            reading("gas-a", T0 + 3000, -1.0),  # a gas meter cannot run backwards
            reading("nope", T0 + 4000, 1.0),
            reading("gas-a", NOW + 3600_000, 1.0),  # an hour in the future
            reading("gas-a", T0 + 5000, 1.5),
        ],
        offset=0,
    )
    h.run([rec])
    dl = h.topic("dl")
    assert len(dl) == 1, dl  # one dead letter for the envelope, its 4 bad readings grouped
    grouped = deadletter.read(dl[0][3])
    assert (grouped.rejected, grouped.readings, grouped.complete) == (4, 6, True)
    by_index = {i: why for why, ix in grouped.groups.items() for i in ix}
    assert sorted(by_index) == [1, 2, 3, 4]
    assert "must be a number" in by_index[1]
    assert "negative value" in by_index[2]
    assert "unknown meter" in by_index[3]
    assert "ahead of the record time" in by_index[4]
    assert "4 of 6 readings rejected" in grouped.reason
    headers = dict(dl[0][3])
    assert headers["clustertwin-dl-partition"] == b"0" and headers["clustertwin-dl-offset"] == b"0"
    # the envelope travels whole, its original bytes: replayable once fixed (the good
    # readings in it are repeats then, counted once)
    assert dl[0][2] == rec.value
    st = h.state("a")
    assert st.accepted == 2
    assert st.sw[("natural_gas", "1m", T0)][:2] == [4_000_000_000, 800_000_000]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1,2]", "not a JSON object"),
        (orjson.dumps({"schema": "readings/3"}), "unsupported schema"),
        (
            orjson.dumps(
                {
                    "schema": "readings/1",
                    "cluster": "c",
                    "site": "zz",
                    "source": "x",
                    "sent_at": 1,
                    "readings": [],
                }
            ),
            "unknown site",
        ),
        (
            orjson.dumps(
                {
                    "schema": "readings/1",
                    "cluster": "c",
                    "site": "a",
                    "source": "x",
                    "sent_at": 1,
                    "readings": [],
                }
            ),
            "non-empty list",
        ),
        (b"", "empty message"),
        ("\udcff".encode("utf-8", "surrogatepass"), "malformed JSON"),
    ],
)
def test_a_wholly_malformed_message_goes_to_deadletter_whole(raw, why):
    rec = Record("readings", 2, 7, NOW, b"a", raw, [("content-type", b"application/json")])
    batch = decode_batch([rec], catalog())
    assert len(batch.rejects) == 1
    reject = batch.rejects[0]
    assert why in reject.reason
    assert reject.payload() == raw  # the original bytes, untouched
    headers = dict(reject.headers())
    assert headers["content-type"] == b"application/json"
    assert headers["clustertwin-dl-offset"] == b"7"


def test_key_must_match_the_site():
    rec = record("a", [reading("gas-a", T0, 1.0)], 0)
    rec = Record(rec.topic, 0, 0, NOW, b"b", rec.value)
    batch = decode_batch([rec], catalog())
    assert "does not match site" in batch.rejects[0].reason


def test_other_units_of_the_carrier_are_converted_and_priced_exactly():
    h = Harness()
    h.run(
        [
            record(
                "a",
                [
                    reading("elec-a", T0 + 1, 1500.0, "kWh", "electricity"),
                    reading("elec-a", T0 + 2, 0.25, "MWh", "electricity"),
                    reading("elec-a", T0 + 3, 2.0, "GJ", "electricity"),  # not convertible here
                ],
                0,
            )
        ]
    )
    st = h.state("a")
    vec = st.sw[("electricity", "1m", T0)]
    assert vec[0] == 1_750_000_000  # 1.75 MWh in nano-MWh
    assert vec[2] == round(1500.0 * 0.00005 * NANO) + round(0.25 * 0.05 * NANO)
    assert len(h.topic("dl")) == 1


def test_replayed_records_are_not_counted_twice():
    h = Harness()
    recs = [record("a", [reading("gas-a", T0 + i * 1000, 1.0 + i)], i) for i in range(10)]
    h.run(recs[:6])
    h.run(recs[3:])  # a crash replays 3..5
    st = h.state("a")
    assert st.sw[("natural_gas", "1m", T0)][-1] == 10
    assert st.sw[("natural_gas", "1m", T0)][0] == sum(round((1.0 + i) * NANO) for i in range(10))
    assert h.stage.counters.replayed == 3


def test_a_state_older_than_the_cursor_still_skips_by_site_offset():
    h = Harness()
    recs = [record("a", [reading("gas-a", T0 + i * 1000, 1.0)], i) for i in range(4)]
    h.run(recs)
    # forget the cursor (as if its changelog record had not landed): the site offset still
    # recognises the records it already holds
    h.table.delete(SiteStage.cursor_key(0), 0)
    h.run(recs)
    assert h.state("a").sw[("natural_gas", "1m", T0)][-1] == 4


def test_a_gap_in_offsets_is_held_back_and_sought_again():
    h = Harness()
    h.run([record("a", [reading("gas-a", T0, 1.0)], 0)])
    held, seeks = h.run(
        [record("a", [reading("gas-a", T0 + 2000, 1.0)], 2), record("b", [], 5, partition=1)]
    )
    assert [r.offset for r in held] == [2] and seeks == {0: 1}
    # when the skipped record arrives, both go through in order
    held, seeks = h.run(
        [
            record("a", [reading("gas-a", T0 + 1000, 1.0)], 1),
            record("a", [reading("gas-a", T0 + 2000, 1.0)], 2),
        ]
    )
    assert not held and not seeks
    assert h.state("a").sw[("natural_gas", "1m", T0)][-1] == 3


def test_a_repeat_is_a_duplicate_and_an_older_reading_counts():
    h = Harness()
    h.run(
        [
            record("a", [reading("gas-a", T0 + 1000, 1.0), reading("gas-a", T0 + 1000, 1.0)], 0),
            record("a", [reading("gas-a", T0 + 500, 1.0), reading("gas-a", T0 + 2000, 1.0)], 1),
            record("a", [reading("gas-a", T0 + 2000, 1.0)], 2),
        ]
    )
    st = h.state("a")
    # T0+1000 once, T0+500 (older than the newest, not a repeat), T0+2000 once
    assert st.sw[("natural_gas", "1m", T0)][-1] == 3
    assert st.duplicates == 2
    assert st.last["gas-a"][0] == T0 + 2000  # the newest stays the newest
    assert h.topic("dl") == []  # a repeat loses nothing: it is counted, not dead-lettered


def _point(h: Harness, measurement: str, start: int, **tags: str) -> dict[str, str]:
    found = [
        f
        for t, ts, f in h.store.series(measurement)
        if ts == start and all(t.get(k) == v for k, v in tags.items())
    ]
    assert len(found) == 1, (measurement, start, tags, found)
    return found[0]


def test_a_late_reading_restates_its_closed_windows_and_the_year_to_date():
    h = Harness(grace_ms=30_000)
    h.run([record("a", [reading("gas-a", T0 + 10_000, 1.0)], 0)])
    # the elec meter lags; gas moves 2 minutes on: the first minute closes (grace 30 s)
    h.run([record("a", [reading("gas-a", T0 + 125_000, 1.0)], 1)])
    st = h.state("a")
    assert ("natural_gas", "1m", T0) not in st.sw
    assert any(
        "complete=true" in line and "res=1m" in line and line.endswith(str(T0)) for line in h.lines
    )
    h.run([record("a", [reading("elec-a", T0 + 20_000, 5.0, "kWh", "electricity")], 2)])
    assert h.topic("late") == [] and h.topic("dl") == []
    st = h.state("a")
    assert st.late == 1 and st.accepted == 3
    # the closed 1-min windows are rewritten (same series, same time), final
    site_1m = _point(h, "site_window", T0, site="a", carrier="electricity", res="1m")
    assert site_1m["complete"] == "true" and site_1m["readings"] == "1i"
    assert nano(site_1m["energy_mwh"]) == round(0.005 * NANO)
    # the meter's hour holds it too, and is written once that hour closes
    assert st.mw[("elec-a", "1h", T0)][-1] == 1
    assert not h.store.series("meter_window")
    # the open 15-min window now holds the three readings
    assert st.sw[("electricity", "15m", T0)][-1] == 1 and st.sw[("natural_gas", "15m", T0)][-1] == 2
    # the year to date has it, and the restatement is recorded with old and new figures
    year = [v for (_, c), v in st.ytd.items() if c == "electricity"]
    assert year and year[0][0] == round(0.005 * NANO)
    (restated,) = [f for _, _, f in h.store.series("restatement")]
    assert restated["readings_added"] == "1i" and nano(restated["old_energy_mwh"]) == 0


def test_a_late_repeat_of_a_stored_reading_is_a_duplicate():
    h = Harness(grace_ms=30_000)
    h.run([record("a", [reading("gas-a", T0 + 10_000, 1.0)], 0)])
    h.run([record("a", [reading("gas-a", T0 + 300_000, 1.0)], 1)])
    h.run([record("a", [reading("gas-a", T0 + 10_000, 1.0)], 2)])  # its minute has closed
    st = h.state("a")
    assert st.duplicates == 1 and st.late == 0
    assert st.sw[("natural_gas", "15m", T0)][-1] == 2


def test_a_reading_beyond_the_horizon_is_dead_lettered_saying_so():
    h = Harness()
    old = T0 - 3 * 366 * 86_400_000
    h.run([record("a", [reading("gas-a", old, 1.0), reading("gas-a", T0, 1.0)], 0)])
    (dl,) = h.topic("dl")
    assert b"beyond the restatement horizon" in dict(dl[3])["clustertwin-dl-reason"]


def test_idle_flush_closes_a_silent_sites_windows_by_its_clusters_event_time():
    h = Harness(grace_ms=30_000)
    h.run([record("a", [reading("gas-a", T0 + 10_000, 1.0)], 0)])
    h.stage.first_batch = time.monotonic() - 100
    h.stage.last_activity["a"] = time.monotonic() - 100
    # readings three hours old (a replay): the wall clock closes nothing, however long
    # the site has been quiet
    assert asyncio.run(h.stage.flush_idle(10, caught_up=lambda p: True, now_ms=NOW)) == 0
    # another site of the cluster moves event time on: site a's first minute closes
    h.run([record("b", [reading("gas-b", T0 + 600_000, 1.0)], 0, partition=1)])
    h.stage.last_activity["a"] = time.monotonic() - 100
    assert asyncio.run(h.stage.flush_idle(10, caught_up=lambda p: False, now_ms=NOW)) == 0
    assert asyncio.run(h.stage.flush_idle(10, caught_up=lambda p: True, now_ms=NOW)) == 1
    st = h.state("a")
    assert ("natural_gas", "1m", T0) not in st.sw and ("natural_gas", "15m", T0) in st.sw


def test_a_paused_replay_sees_time_pass_at_the_wall_clocks_pace():
    h = Harness(grace_ms=30_000)
    h.run([record("a", [reading("gas-a", T0 + 10_000, 1.0)], 0)])
    h.stage.first_batch = time.monotonic() - 100
    h.stage.last_activity["a"] = time.monotonic() - 100
    # the record came at NOW for a reading at T0 + 10 s: the lag stays, the clock moves
    assert asyncio.run(h.stage.flush_idle(10, caught_up=lambda p: True, now_ms=NOW + 20_000)) == 0
    assert asyncio.run(h.stage.flush_idle(10, caught_up=lambda p: True, now_ms=NOW + 90_000)) == 1
    assert ("natural_gas", "1m", T0) not in h.state("a").sw


def test_cluster_windows_are_the_sum_of_site_windows_and_replays_overwrite():
    h = Harness()
    h.run(
        [
            record("a", [reading("gas-a", T0 + 1000, 1.5)], 0),
            record("b", [reading("gas-b", T0 + 1000, 2.25)], 0, partition=1),
        ]
    )
    updates = [(0, s[2]) for s in h.topic("cu")]
    lines: list[str] = []

    async def write(ls):
        lines.extend(ls)

    stage = ClusterStage(h.catalog, DictTable(), write, "unit", 3600_000)
    asyncio.run(stage.process(updates))
    asyncio.run(stage.process(updates))  # at-least-once: the same summaries again
    twin = stage.twin_json("c")
    assert twin["windows"]["1m"]["total"]["energy_mwh"] == 3.75
    assert twin["windows"]["1m"]["total"]["readings"] == 2
    assert sorted(twin["windows"]["1m"]["sites_reporting"]) == ["a", "b"]
    assert any(
        line.startswith("cluster_window,") and _field(line, "energy_mwh") == 3.75 for line in lines
    )


def _field(line: str, name: str) -> float:
    """A float field of a line-protocol point, as InfluxDB reads it (``3750000000e-9`` too)."""
    fields = dict(kv.split("=", 1) for kv in line.split(" ")[1].split(","))
    return float(fields[name])


def test_pricing_is_exact_and_order_independent():
    cat = catalog()
    import numpy as np

    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1000, 5000).round(6)
    rows = np.zeros(values.size, dtype=np.int64)
    priced = cat.price(rows, values)
    assert priced[:, 0].sum() == priced[::-1, 0].sum()
    expected = [offline_price(cat, "gas-a", "MWh", float(v)) for v in values[:50]]
    assert priced[:50].tolist() == expected


def test_line_protocol_escapes_tags_and_uses_window_start():
    u = WindowUpdate(
        "site", "c", "a b,c", "", "natural_gas", "15m", 900_000, [1, 2, 3, 4, 5, *[0] * 6, 6], True
    )
    line = window_line("live", u)
    assert line.startswith(
        "site_window,twin=live,cluster=c,site=a\\ b\\,c,carrier=natural_gas,res=15m "
    )
    assert line.endswith(" 900000") and "complete=true" in line and "readings=6i" in line


def test_a_site_id_in_two_clusters_is_refused_by_name():
    """The worker keys readings and state by site id: two clusters' sites of one id would
    be summed together, so the catalog refuses them (found with two real clusters)."""
    specs = [
        MeterSpec("ch-a", "chemicals", "teda", "natural_gas", {"MWh": (1.0, (0.2, 0.0, 0.0, 0.0))}),
        MeterSpec("ch-b", "chemicals", "rotterdam", "natural_gas", {"MWh": (1.0, (0.2, 0, 0, 0))}),
    ]
    with pytest.raises(CatalogError, match="'chemicals' is in clusters 'teda' and 'rotterdam'"):
        MeterVectors(specs)


def test_catalog_round_trips_and_rejects_bad_records(tmp_path):
    cat = catalog()
    path = tmp_path / "cat.json"
    path.write_text(cat.to_json())
    again = MeterVectors.from_file(path)
    assert [s.meter for s in again.specs] == [s.meter for s in cat.specs]
    assert (again.factors[: len(cat.specs)] == cat.factors[: len(cat.specs)]).all()
    path.write_text('[{"meter": "x"}]')
    with pytest.raises(CatalogError, match="meter record #0"):
        MeterVectors.from_file(path)
    with pytest.raises(CatalogError, match="duplicate meter"):
        MeterVectors([cat.specs[0], cat.specs[0]])
