"""readings/2 intervals: a reading of [start, ts) is shared among the 1-min windows it
covers, by the rule in ``streams.windows.split_intervals``; readings/1 stays an instant."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.meter_vectors import NANO
from streams.windows import NFIG, split_intervals
from tests.unit.streams.linestore import nano
from tests.unit.streams.test_pipeline_units import T0, Harness, reading, record
from twin import deadletter

MINUTE = 60_000


def reference_parts(start: int, ts: int, vec: list[int]) -> dict[int, list[int]]:
    """The rule, the obvious way, in Python integers: window start -> figures + count."""
    if start < 0:
        return {ts - ts % MINUTE: [*vec, 1]}
    out: dict[int, list[int]] = {}
    w = start - start % MINUTE
    last = (ts - 1) - (ts - 1) % MINUTE
    while w <= last:
        overlap = min(ts, w + MINUTE) - max(start, w)
        out[w] = [v * overlap // (ts - start) for v in vec] + [0]
        w += MINUTE
    end = out[last]
    for k in range(NFIG):
        end[k] += vec[k] - sum(p[k] for p in out.values())
    end[NFIG] = 1
    return out


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_vectorised_split_equals_the_rule_worked_in_integers(n: int, seed: int) -> None:
    rng = random.Random(seed)
    ts = np.array([T0 + rng.randrange(0, 3 * 3_600_000) for _ in range(n)], np.int64)
    start = np.array(
        [
            -1 if rng.random() < 0.3 else int(t) - rng.randrange(1, 86_400_000 // 4)
            for t in ts.tolist()
        ],
        np.int64,
    )
    priced = np.array(
        [[rng.randrange(-(10**15), 10**17) for _ in range(NFIG)] for _ in range(n)], np.int64
    )
    meter = np.arange(n, dtype=np.int64)
    m, t, figs = split_intervals(meter, ts, start, priced)
    got: dict[tuple[int, int], list[int]] = {}
    for mi, ti, f in zip(m.tolist(), t.tolist(), figs.tolist(), strict=True):
        key = (mi, ti - ti % MINUTE)
        assert key not in got  # one part per reading and window
        got[key] = f
    want = {
        (i, w): f
        for i in range(n)
        for w, f in reference_parts(int(start[i]), int(ts[i]), priced[i].tolist()).items()
    }
    assert got == want
    # the parts add up to the reading exactly, and it is counted once
    for i in range(n):
        parts = [f for (mi, _), f in got.items() if mi == i]
        assert [sum(p[k] for p in parts) for k in range(NFIG)] == priced[i].tolist()
        assert sum(p[NFIG] for p in parts) == 1


def _minute(h: Harness, start: int) -> list[int]:
    """gas-a's 1-min window: its site's natural gas window (the only gas meter that reads
    here; meter windows are kept hourly only), as the site's state holds it (an open site
    window is written once closed)."""
    vec = h.state("a").sw.get(("natural_gas", "1m", start))
    if vec is not None:
        return [vec[0], vec[-1]]
    (f,) = [  # closed: written
        f
        for t, ts, f in h.store.series("site_window")
        if ts == start and t["res"] == "1m" and (t["site"], t["carrier"]) == ("a", "natural_gas")
    ]
    return [nano(f["energy_mwh"]), int(f["readings"].rstrip("i"))]


def test_an_interval_reading_is_shared_among_its_minutes():
    h = Harness()
    r = {**reading("gas-a", T0 + 150_000, 1.2), "start": T0 + 30_000}
    h.run([record("a", [r], 0, schema="readings/2")])
    # 30 s, 60 s and 30 s of its 120 s; counted once, in the minute of its end
    assert [_minute(h, T0 + k * MINUTE) for k in range(3)] == [
        [round(0.3 * NANO), 0],
        [round(0.6 * NANO), 0],
        [round(0.3 * NANO), 1],
    ]
    assert h.state("a").sw[("natural_gas", "15m", T0)][0] == round(1.2 * NANO)
    assert h.state("a").mw[("gas-a", "1h", T0)][0] == round(1.2 * NANO)


def test_a_readings_1_reading_stays_an_instant_whatever_it_carries():
    h = Harness()
    r = {**reading("gas-a", T0 + 150_000, 1.2), "start": T0 + 30_000}
    h.run([record("a", [r], 0)])
    assert _minute(h, T0 + 2 * MINUTE) == [round(1.2 * NANO), 1]
    assert ("natural_gas", "1m", T0) not in h.state("a").sw


def test_bad_intervals_are_dead_lettered_naming_the_rule():
    h = Harness()
    bad = [
        {**reading("gas-a", T0 + 60_000, 1.0), "start": T0 + 60_000},
        {**reading("gas-a", T0, 1.0), "start": T0 - 90_000_000},
        {**reading("gas-a", T0 + 60_000, 1.0), "start": "yesterday"},
        {**reading("gas-a", T0 + 70_000, 1.0), "start": -5},
    ]
    h.run([record("a", bad, 0, schema="readings/2")])
    (dl,) = h.topic("dl")  # one dead letter for the envelope, its readings grouped by reason
    grouped = deadletter.read(dl[3])
    assert grouped.rejected == 4 and grouped.complete
    assert sorted(i for ix in grouped.groups.values() for i in ix) == [0, 1, 2, 3]
    reasons = list(grouped.groups)
    assert any("is not before its end" in r for r in reasons)
    assert any("longer than the 24 h limit" in r for r in reasons)
    assert any("field 'start' must be an integer" in r for r in reasons)
    assert any("interval start -5 is negative" in r for r in reasons)
