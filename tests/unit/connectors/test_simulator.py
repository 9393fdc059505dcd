"""The simulator: deterministic, realistic in shape and size, and never ahead of the clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest

from connectors.sdk.base import Sample
from connectors.simulator import ClusterSimulator, SimulatorConfig, SimulatorConnector
from connectors.simulator.connector import parse_start
from connectors.simulator.profiles import DAY_MS, HOUR_MS, Shape, shape_for
from twin.model import load_cluster
from twin.readings import MeterIndex, now_ms, validate_readings

from .conftest import MINI

HOUR_STEP = 3600
T0 = int(datetime(2025, 3, 3, tzinfo=UTC).timestamp() * 1000)  # a Monday
K0 = T0 // (HOUR_STEP * 1000)


def sim(**over: object) -> ClusterSimulator:
    cfg = SimulatorConfig.model_validate(
        {"connector": "simulator", "name": "t", "cluster": str(MINI), "step_s": HOUR_STEP, **over}
    )
    return ClusterSimulator(load_cluster(MINI), cfg)


def row(s: ClusterSimulator, meter: str) -> int:
    return [p.meter for p in s.profiles].index(meter)


def test_same_seed_same_values_whatever_the_window() -> None:
    a, b = sim(seed=7), sim(seed=7)
    _, whole, _, _ = a.values(K0, 48)
    _, first, _, _ = b.values(K0, 20)
    _, rest, _, _ = b.values(K0 + 20, 28)
    np.testing.assert_array_equal(whole, np.concatenate([first, rest], axis=1))
    _, other, _, _ = sim(seed=8).values(K0, 48)
    assert not np.allclose(whole, other)


def test_a_simulated_year_adds_up_to_the_models_annual_quantities() -> None:
    s = sim(seed=3, outage_rate=0.0, gap_rate=0.0)
    _, values, _, _ = s.values(K0, 365 * 24)
    for i, p in enumerate(s.profiles):
        assert values[i].sum() == pytest.approx(p.annual_quantity, rel=0.08), p.meter


def test_shapes_differ_by_kind_of_site() -> None:
    s = sim(seed=1, outage_rate=0.0, gap_rate=0.0, noise=0.0)
    ts, values, _, _ = s.values(K0, 14 * 24)
    hours = (ts % DAY_MS) // HOUR_MS
    weekday = ((ts // DAY_MS) + 3) % 7
    furnace = values[row(s, "bf-gas")]
    mill = values[row(s, "mill-power")]  # rolling mill: a shift workshop
    shore = values[row(s, "berth1-shore")]
    assert furnace.max() / furnace.min() < 1.25  # 24/7 process
    weekday_day = mill[(weekday < 5) & (hours >= 8) & (hours < 20)].mean()
    weekend = mill[weekday >= 5].mean()
    assert weekday_day > 3 * weekend
    assert shore.max() > 5 * np.median(shore[shore < np.median(shore) * 1.01])  # ship calls
    assert shape_for("electricity", "pv", "electronics") is Shape.SOLAR


def test_outages_and_gaps_show_up_as_standby_load_and_estimated_readings() -> None:
    s = sim(seed=5, outage_rate=1.0, gap_rate=1.0)
    _, values, estimated, _ = s.values(K0, 7 * 24)
    furnace = values[row(s, "bf-gas")]
    assert furnace.min() < 0.1 * np.median(furnace)
    assert estimated.any() and not estimated.all()


def test_fault_injection_makes_readings_the_contract_rejects(mini_index: MeterIndex) -> None:
    s = sim(seed=2, fault_rate=0.2)
    samples = [x for x in s.samples(K0, 50) if isinstance(x, Sample)]
    by_site: dict[str, list[dict[str, object]]] = {}
    for x in samples:
        info = mini_index.get(x.meter)
        assert info is not None
        by_site.setdefault(info.site, []).append(
            {
                "meter": x.meter,
                "ts": x.ts,
                "value": x.value,
                "unit": x.unit,
                "carrier": x.carrier,
                "quality": x.quality,
            }
        )
    rejected = []
    for site, raws in by_site.items():
        _ok, bad = validate_readings(raws, site=site, index=mini_index, now=T0 + 50 * 3_600_000)
        rejected += bad
    assert 0.1 * len(samples) < len(rejected) < 0.3 * len(samples)
    reasons = " ".join(r.reason for r in rejected)
    assert "finite" in reasons and "negative" in reasons and "ahead of the record time" in reasons


def test_parse_start_forms() -> None:
    assert parse_start("now", 10_000_000) == 10_000_000
    assert parse_start("now-2h", 10_000_000) == 10_000_000 - 7_200_000
    assert parse_start("2025-03-03T00:00:00Z", 0) == T0
    with pytest.raises(ValueError):
        SimulatorConfig(connector="simulator", name="x", cluster="c", start="yesterday")


def test_catch_up_at_speed_then_never_stamps_the_future(mini_index: MeterIndex) -> None:
    cfg = SimulatorConfig(
        connector="simulator", name="t", cluster=str(MINI), step_s=60, start="now-30m", speedup=0
    )
    conn = SimulatorConnector(cfg, mini_index)

    async def take() -> list[list[Sample]]:
        out = []
        async for batch in conn.stream():
            out.append([x for x in batch if isinstance(x, Sample)])
            if sum(len(b) for b in out) >= 30 * len(mini_index):
                break
        return out

    started = now_ms()
    batches = asyncio.run(asyncio.wait_for(take(), 90))
    ts = [x.ts for b in batches for x in b]
    assert ts == sorted(ts)
    assert max(ts) <= now_ms()
    assert min(ts) >= started - 31 * 60_000
    per_meter = {
        m.meter: [x.ts for b in batches for x in b if x.meter == m.meter] for m in mini_index
    }
    for series in per_meter.values():
        assert np.all(np.diff(series) == 60_000)  # no gap, no repeat


def test_a_resumed_simulator_continues_where_the_last_run_stopped(
    mini_index: MeterIndex, tmp_path
) -> None:
    def connector(resume: bool) -> SimulatorConnector:
        cfg = SimulatorConfig.model_validate(
            {
                "connector": "simulator",
                "name": "t",
                "cluster": str(MINI),
                "step_s": 60,
                "start": "now-30m",
                "speedup": 0,
                "max_chunk_steps": 5,
                "resume": resume,
                "buffer": {"dir": str(tmp_path)},
            }
        )
        return SimulatorConnector(cfg, mini_index)

    async def first_batch_then_close(conn: SimulatorConnector) -> list[int]:
        stream = conn.stream()
        batch = await stream.__anext__()
        await stream.__anext__()  # hands the first batch on: its position is saved
        await stream.aclose()
        await conn.close()
        return sorted({x.ts for x in batch if isinstance(x, Sample)})

    first = asyncio.run(first_batch_then_close(connector(resume=True)))
    second = asyncio.run(first_batch_then_close(connector(resume=True)))
    # the first run handed on two batches of 5 intervals: the second run starts after both
    assert min(second) == max(first) + (5 + 1) * 60_000
    fresh = asyncio.run(first_batch_then_close(connector(resume=False)))
    assert min(fresh) == min(first)  # without resume every run begins at `start`
