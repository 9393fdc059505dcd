"""The alert engine and stage over simulated clusters, in accelerated event time (no servers)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest

from streams.alerting.config import AlertConfig, AlertConfigError
from streams.alerting.engine import AlertEngine, ClusterAlertState, SiteAlertState
from streams.alerting.model import Alert, Kind
from streams.alerting.simulate import (
    HOUR_MS,
    FlatFault,
    SimCluster,
    SimMeter,
    SimSite,
    fault_scenario,
    noise_scenario,
    records,
    replay_in_memory,
)
from streams.alerting.stage import AlertStage
from streams.envelope import Record
from tests.unit.streams.dict_table import DictTable

START = (int(time.time() * 1000) // HOUR_MS - 20 * 24) * HOUR_MS


def _opens(events: list[Alert]) -> list[tuple[str, str]]:
    return sorted((e.kind.value, e.scope.label) for e in events if e.event == "open")


@pytest.fixture(scope="module")
def fault_events() -> list[Alert]:
    return asyncio.run(replay_in_memory([fault_scenario(START)]))


def test_injected_faults_open_exactly_the_expected_alerts(fault_events: list[Alert]) -> None:
    sc = fault_scenario(START)
    assert _opens(fault_events) == sorted((k, s) for k, s, _, _ in sc.expected)
    by_id: dict[str, list[Alert]] = {}
    for e in fault_events:
        by_id.setdefault(e.id, []).append(e)
    for kind, scope, f_start, f_end in sc.expected:
        (evs,) = [v for v in by_id.values() if (v[0].kind.value, v[0].scope.label) == (kind, scope)]
        kinds = [e.event for e in evs]
        assert kinds[0] == "open" and kinds[-1] == "resolve"
        assert kinds.count("open") == 1 and kinds.count("resolve") == 1
        opened, resolved = evs[0].opened, evs[-1].resolved
        assert resolved is not None
        # detected during the fault (within 3 h), resolved within 2 h of its end
        assert f_start <= opened <= f_start + 3 * HOUR_MS, (kind, (opened - f_start) / HOUR_MS)
        assert f_end <= resolved <= f_end + 2 * HOUR_MS, (kind, (resolved - f_end) / HOUR_MS)
        assert evs[0].explanation and scope.split("/")[-1] in evs[0].explanation


def test_detection_delays_of_data_and_shift_alerts(fault_events: list[Alert]) -> None:
    sc = fault_scenario(START)
    opened = {(e.kind.value, e.scope.label): e.opened for e in fault_events if e.event == "open"}
    silent = sc.expected[0]
    # silent: 5 intervals after the last reading (the meter stopped right after it)
    assert opened[silent[:2]] - silent[2] <= 5 * 60_000
    shift = sc.expected[1]
    assert opened[shift[:2]] - shift[2] <= 3 * AlertConfig().step_ms


def test_data_and_emission_alerts_are_kept_apart(fault_events: list[Alert]) -> None:
    for e in fault_events:
        assert e.category.value == ("data" if e.kind.value.startswith("meter_") else "emission")
    # the silent and flat meters did not raise any emission alert at their sites
    sites = {e.scope.site for e in fault_events if e.category.value == "emission"}
    assert sites <= {"fsite0", ""}


def test_no_alert_on_a_week_of_noise() -> None:
    events = asyncio.run(replay_in_memory([noise_scenario(START, days=7)]))
    assert events == []


@pytest.mark.parametrize("batch", [37, 2000])
def test_same_alerts_whatever_the_batching(fault_events: list[Alert], batch: int) -> None:
    other = asyncio.run(replay_in_memory([fault_scenario(START)], batch=batch))

    def transitions(evs: list[Alert]) -> list[tuple[str, str, int, float | None]]:
        return sorted(
            (e.id, e.event, e.at, None if e.value is None else round(e.value, 6))
            for e in evs
            if e.event != "update"
        )

    assert transitions(other) == transitions(fault_events)
    # updates (how often depends on how the stream was cut) fall on the same hourly grid
    every = AlertConfig().update_every_s * 1000
    assert all((e.at - e.opened) % every == 0 for e in other if e.event == "update")


def test_partitions_consumed_one_after_another_give_the_same_alerts(
    fault_events: list[Alert],
) -> None:
    """A worker catching up may read a whole partition before the next: the cluster stage
    must wait for the slow sites instead of closing cluster buckets without them."""
    sc = fault_scenario(START)
    recs = sorted(records([sc]), key=lambda r: (r.partition, r.offset))
    other = asyncio.run(replay_in_memory([sc], recs=recs, batch=2000))

    def opens(evs: list[Alert]) -> list[tuple[str, str, int]]:
        return sorted((e.id, e.event, e.at) for e in evs if e.event in ("open", "resolve"))

    assert opens(other) == opens(fault_events)


def test_replayed_records_change_nothing() -> None:
    sc = fault_scenario(START, hours=34)
    recs = records([sc])
    # deliver every batch twice (at-least-once redelivery after a crash)
    doubled: list[Record] = []
    for i in range(0, len(recs), 300):
        doubled += recs[i : i + 300] * 2
    once = asyncio.run(replay_in_memory([sc], recs=recs, batch=300))
    twice = asyncio.run(replay_in_memory([sc], recs=doubled, batch=600))
    assert [(e.id, e.event) for e in twice] == [(e.id, e.event) for e in once]


def test_state_roundtrip() -> None:
    sc = fault_scenario(START, hours=31)
    catalog = sc.sim.catalog()
    engine = AlertEngine(catalog, None, sc.pathway_objects())
    sent: list[bytes] = []

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        sent.append(value)

    async def write(lines: Any) -> None:
        return None

    table = DictTable()
    stage = AlertStage(engine, table, DictTable(), send, write)
    asyncio.run(stage.process(records([sc])))
    for raw in table.data.values():
        st = SiteAlertState.loads(raw)
        assert st.dumps() == raw
    cl = ClusterAlertState("c", 0)
    cl.pending = {5: {"a": [1.0, 1]}}
    assert ClusterAlertState.loads(cl.dumps()).dumps() == cl.dumps()


def _site_engine() -> tuple[AlertEngine, SimCluster]:
    sim = SimCluster(
        "c",
        (
            SimSite(
                "s",
                (
                    SimMeter("m1", "natural_gas", 10.0),
                    SimMeter("m2", "natural_gas", 10.0),
                    SimMeter("m3", "electricity", 5.0),
                ),
            ),
        ),
        noise=0.01,
    )
    return AlertEngine(sim.catalog(), AlertConfig()), sim


def _arrays(sim: SimCluster, start: int, n: int, scale: dict[str, float]) -> tuple[Any, ...]:
    cat = sim.catalog()
    m, t, v = [], [], []
    for _site, _ts, body in sim.envelopes(start, n):
        for r in orjson.loads(body)["readings"]:
            m.append(cat.index[r["meter"]])
            t.append(r["ts"])
            v.append(r["value"] * scale.get(r["meter"], 1.0))
    mm, tt, vv = np.array(m), np.array(t, dtype=np.int64), np.array(v)
    return mm, tt, vv, vv * 0.2, np.arange(tt.size) + 1


def test_meter_jump_breaks_the_site_balance() -> None:
    engine, sim = _site_engine()
    st = SiteAlertState("c", "s", 0)
    m, t, v, e, off = _arrays(sim, START, 120, {})
    out = engine.process_site(st, m, t, v, e, off, int(off.max()))
    assert out.events == []
    # m2 reads 3x too much (a scaling fault), the others carry on
    m, t, v, e, off = _arrays(sim, START + 120 * 60_000, 30, {"m2": 3.0})
    out = engine.process_site(st, m, t, v, e, off + 1000, int(off.max()) + 1000)
    jumps = [a for a in out.events if a.kind is Kind.METER_JUMP]
    assert [(a.event, a.scope.meter) for a in jumps] == [("open", "m2")]
    m, t, v, e, off = _arrays(sim, START + 150 * 60_000, 30, {})
    out = engine.process_site(st, m, t, v, e, off + 2000, int(off.max()) + 2000)
    assert [(a.event, a.scope.meter) for a in out.events if a.kind is Kind.METER_JUMP] == [
        ("resolve", "m2")
    ]


def test_duplicates_and_bad_records_are_harmless() -> None:
    engine, sim = _site_engine()
    st = SiteAlertState("c", "s", 0)
    m, t, v, e, off = _arrays(sim, START, 60, {})
    # the same readings twice in one batch, shuffled: counted once, no silence, no flat line
    idx = np.random.default_rng(0).permutation(2 * t.size) % t.size
    out = engine.process_site(st, m[idx], t[idx], v[idx], e[idx], off[idx], int(off.max()))
    assert out.events == []
    assert st.meters["m1"][0] == int(t.max())

    async def go() -> list[Alert]:
        sent: list[Alert] = []

        async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
            if topic == "alerts":
                sent.append(Alert.from_json(value))

        async def write(lines: Any) -> None:
            return None

        stage = AlertStage(engine, DictTable(), DictTable(), send, write)
        bad = [
            Record("readings", 0, 0, START, b"s", b"{not json", []),
            Record("readings", 0, 1, START, b"s", b"", []),
        ]
        await stage.process(bad)
        return sent

    assert asyncio.run(go()) == []


def test_flatline_at_zero_is_an_idle_plant_not_a_stuck_meter() -> None:
    sim = SimCluster(
        "c",
        (SimSite("s", (SimMeter("m1", "natural_gas", 10.0),)),),
        faults=(FlatFault("m1", START, START + 10 * HOUR_MS),),
    )
    engine = AlertEngine(sim.catalog(), AlertConfig())
    st = SiteAlertState("c", "s", 0)
    m, t, v, e, off = _arrays(sim, START, 240, {})
    v[:] = 0.0
    out = engine.process_site(st, m, t, v, e * 0, off, int(off.max()))
    assert [a for a in out.events if a.kind is Kind.METER_FLATLINE] == []


def test_alert_counts_per_kind_are_one_open_one_resolve(fault_events: list[Alert]) -> None:
    c = Counter((e.kind.value, e.scope.label, e.event) for e in fault_events)
    assert all(n == 1 for (k, s, ev), n in c.items() if ev in ("open", "resolve"))


def test_config_errors_name_the_field(tmp_path: Any) -> None:
    p = tmp_path / "alerts.yaml"
    p.write_text("step_s: 10\nmargin_1h: -1\nbogus: 1\n")
    with pytest.raises(AlertConfigError) as exc:
        AlertConfig.from_yaml(p)
    msg = str(exc.value)
    assert "step_s" in msg and "margin_1h" in msg and "bogus" in msg
    p.write_text("step_s: 600\n")
    assert AlertConfig.from_yaml(p).step_ms == 600_000


def test_wall_clock_tick_finds_a_silent_site_only_when_caught_up() -> None:
    sc, stage, sent = _three_hours()
    end = START + 3 * HOUR_MS

    async def go() -> None:
        await stage.process(records([sc]))
        await stage.tick(end + HOUR_MS, lambda p: False)  # still catching up: judge nothing
        assert sent == []
        await stage.tick(end + HOUR_MS, lambda p: True)

    asyncio.run(go())
    silent = {e.scope.meter for e in sent if e.kind is Kind.METER_SILENT and e.event == "open"}
    assert silent == {m.meter for s in sc.sim.sites for m in s.meters}
    assert all(e.opened == end - 60_000 + 5 * 60_000 for e in sent)


def test_24h_drift_and_year_end_projection_open_and_resolve() -> None:
    from streams.alerting.engine import EngineOutput, ScopeState
    from streams.alerting.model import Scope
    from twin.targets import Baseline, Target, TargetPlan

    # pathway: 100 kt in 2020 down to 0 in 2050 (net zero), as the twin's TargetPlan builds it
    pathway = TargetPlan(
        baseline=Baseline(year=2020, tco2e=100_000.0),
        targets=(Target(year=2050, reduction_pct=100),),
    ).pathway()
    engine = AlertEngine(_site_engine()[0].catalog)
    sc, out = ScopeState(), EngineOutput()
    open_map: dict[str, dict[str, Any]] = {}
    step = engine.cfg.step_ms
    t0 = START - START % step
    rng = np.random.default_rng(4)
    events: list[tuple[str, str, float]] = []
    n_over, n_back = 4 * 24 * 12, 3 * 24 * 12
    for i in range(n_over + n_back):
        start = t0 + i * step
        year = 1970 + start / (365.2425 * 86_400_000)
        level = 1.12 if i < n_over else 0.9  # 12 % over the pathway, then 10 % under
        rate = pathway.at(year) / 8760 * level * (1 + 0.01 * rng.standard_normal())
        out = EngineOutput()
        engine.scope_step(
            sc, open_map, Scope(cluster="c"), pathway, start, rate * step / HOUR_MS, True, out
        )
        events += [
            (e.event, e.kind.value, (e.at - t0) / HOUR_MS)
            for e in out.events
            if e.event != "update"
        ]
    kinds = Counter((ev, k) for ev, k, _ in events)
    for k in ("pathway_drift_1h", "pathway_drift_24h", "projection_over_target"):
        assert kinds[("open", k)] == 1 and kinds[("resolve", k)] == 1, (k, events)
    opened = {k: h for ev, k, h in events if ev == "open"}
    # 45 min of data (75 % coverage) + 2 h above the margin
    assert 2.7 <= opened["pathway_drift_1h"] <= 3.5
    assert 24 <= opened["pathway_drift_24h"] <= 31  # 18 h of coverage + 6 h hold, or more


def _three_hours() -> tuple[Any, AlertStage, list[Alert]]:
    """Three hours of the fault scenario, a stage over dict tables, the alerts it sends."""
    sc = fault_scenario(START, hours=3)
    engine = AlertEngine(sc.sim.catalog(), None, sc.pathway_objects())
    sent: list[Alert] = []

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        if topic == "alerts":
            sent.append(Alert.from_json(value))

    async def write(lines: Any) -> None:
        return None

    stage = AlertStage(engine, DictTable(), DictTable(), send, write)
    return sc, stage, sent


def test_a_silence_whose_readings_arrive_late_resolves_saying_so() -> None:
    import dataclasses

    sc, stage, sent = _three_hours()
    recs = records([sc])
    first = [r for r in recs if r.timestamp < START + HOUR_MS]
    # the rest was held by the gateways and arrives an hour after it was taken
    rest = [
        dataclasses.replace(r, timestamp=START + 4 * HOUR_MS)
        for r in recs
        if r.timestamp >= START + HOUR_MS
    ]

    async def go() -> None:
        await stage.process(first)
        await stage.tick(START + 2 * HOUR_MS, lambda p: True)  # live, and nothing comes
        await stage.process(rest)

    asyncio.run(go())
    opened = {e.scope.meter for e in sent if e.kind is Kind.METER_SILENT and e.event == "open"}
    resolved = [e for e in sent if e.kind is Kind.METER_SILENT and e.event == "resolve"]
    assert opened and {e.scope.meter for e in resolved} == opened
    assert all("arrived late" in e.explanation for e in resolved), resolved[0].explanation


def test_a_replay_far_behind_the_wall_clock_finds_no_meter_silent() -> None:
    import dataclasses

    sc, stage, sent = _three_hours()
    now = int(time.time() * 1000)
    # last week replayed fast: every record is sent now, its readings are days old
    recs = [dataclasses.replace(r, timestamp=now) for r in records([sc])]
    half = len(recs) // 2

    async def go() -> None:
        await stage.process(recs[:half])
        await stage.tick(now + 30_000, lambda p: True)  # the replay pauses for 30 s
        await stage.process(recs[half:])
        await stage.tick(now + 60_000, lambda p: True)

    asyncio.run(go())
    silent = [e for e in sent if e.kind is Kind.METER_SILENT and e.event == "open"]
    # only the scenario's injected 2-hour stop, nothing opened by the wall clock
    assert {e.scope.meter for e in silent} <= {"fs1-gas0"}, [e.explanation for e in silent]
