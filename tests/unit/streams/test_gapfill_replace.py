"""Gap fills and the real readings that replace them (issue 16, "What to build" 2).

Fills (quality ``gap_filled``) are readings like any other until a real reading of the same
meter and ts arrives: then the fill goes out of every window and the year to date and the
reading comes in. Through the worker's real compute path (site stage, restatement, cluster
stage) over the line-protocol store double, in shuffled orders, late by hours, with repeats,
crashes and idle flushes between: every window must equal the offline figure of the readings
that stand (the real ones, and the fills nothing replaced), and the year to date by quality
the offline sums by quality.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.meter_vectors import offline_price
from streams.windows import NFIG, SiteState, year_of
from tests.unit.streams.test_arrival_orders import METERS, offline, play, stored
from tests.unit.streams.test_pipeline_units import T0, reading

Q = 15 * 60_000


def make_stream(
    rng: random.Random, n: int, recovered: float, fill_after: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what is sent, what stands): readings on a 15-min grid; a share of them first
    missing and filled, the real one coming later (or never); some fills sent again after
    the real reading (a replay), which must change nothing."""
    slots = sorted({(rng.choice(list(METERS)), T0 + rng.randrange(1, 12) * Q) for _ in range(n)})
    stands: list[dict[str, Any]] = []
    events: list[tuple[float, dict[str, Any]]] = []
    for meter, ts in slots:
        _, carrier, unit = METERS[meter]
        real = reading(meter, ts, float(rng.randrange(1, 10_000)) / 8, unit, carrier)
        if rng.random() < 0.5:
            real["start"] = ts - Q
        order = ts + rng.uniform(-Q, Q)  # roughly in time order, with jitter
        if rng.random() < 0.6:  # missing at first: filled
            fill = reading(meter, ts, float(rng.randrange(1, 10_000)) / 8, unit, carrier)
            fill["quality"], fill["start"] = "gap_filled", ts - Q
            events.append((order, fill))
            if rng.random() < recovered:
                late_by = rng.choice([0, Q, 2 * 3_600_000, 5 * 3_600_000])
                events.append((order + late_by + 1, real))
                stands.append(real)
                if rng.random() < fill_after:
                    events.append((order + late_by + rng.uniform(1, 3_600_000), dict(fill)))
            else:
                stands.append(fill)
            if rng.random() < 0.2:
                events.append((order + rng.uniform(0, 3_600_000), dict(fill)))  # repeated
        else:
            events.append((order, real))
            stands.append(real)
    events.sort(key=lambda e: e[0])
    sent = [r for _, r in events]
    for _ in range(len(sent) // 10):  # a little disorder on top
        i, j = rng.randrange(len(sent)), rng.randrange(len(sent))
        a, b = sent[i], sent[j]
        if (a["meter"], a["ts"]) != (b["meter"], b["ts"]):  # a fill stays before its reading
            sent[i], sent[j] = b, a
    return sent, stands


def offline_by_quality(stands: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[int]]:
    from tests.unit.streams.test_pipeline_units import catalog

    cat = catalog()
    out: dict[tuple[str, int, str], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    for r in stands:
        site, _, unit = METERS[r["meter"]]
        vec = offline_price(cat, r["meter"], unit, r["value"])
        acc = out[(site, year_of(r["ts"] - r["ts"] % 3_600_000), r["quality"])]
        for k in range(NFIG):
            acc[k] += vec[k]
        acc[NFIG] += 1
    return dict(out)


def quality_ytd(w: Any) -> dict[tuple[str, int, str], list[int]]:
    from streams.windows import QUALITY_NAMES

    out = {}
    for key in list(w.site_table.all_keys()):
        raw = w.site_table.get(key)
        if key.startswith(b"\x00") or raw is None:
            continue
        state = SiteState.loads(raw)
        for (year, _, q), vec in state.qytd.items():
            if any(vec):
                acc = out.setdefault((state.site, year, QUALITY_NAMES[q]), [0] * len(vec))
                acc[:] = [a + b for a, b in zip(acc, vec, strict=True)]
    return out


def check(sent: list[dict[str, Any]], stands: list[dict[str, Any]], seed: int, crashes: float):
    w = asyncio.run(play(random.Random(seed), sent, 30_000, 600_000, crashes))
    want = offline(stands)
    got = stored(w.store)
    assert {k: v for k, v in got.items() if k in want} == want
    assert not {k: v for k, v in got.items() if k not in want and any(v)}
    assert quality_ytd(w) == offline_by_quality(stands)
    return w


def test_a_real_reading_hours_late_replaces_its_fill_exactly() -> None:
    meter = "gas-a"
    ts = T0 + 4 * Q
    fill = reading(meter, ts, 999.0) | {"quality": "gap_filled", "start": ts - Q}
    other = [reading(meter, T0 + k * Q, float(k)) for k in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11)]
    real = reading(meter, ts, 3.5)  # an instant: the fill's interval is emptied
    sent = [*other[:3], fill, *other[3:], real, dict(fill)]
    w = check(sent, [*other, real], seed=1, crashes=0.0)
    state = SiteState.loads(w.site_table.get(b"a"))
    assert state.replaced == 1 and not state.fills
    assert state.twin()["completeness"][str(year_of(ts))]["gap_filled"]["readings"] == 0


def test_an_unrecovered_fill_stands_and_counts_as_gap_filled() -> None:
    ts = T0 + 4 * Q
    fill = reading("gas-b", ts, 80.0) | {"quality": "gap_filled", "start": ts - Q}
    real = [reading("gas-b", T0 + k * Q, 20.0) for k in (1, 2, 3, 5)]
    w = check([*real[:3], fill, real[3]], [*real, fill], seed=2, crashes=0.0)
    share = SiteState.loads(w.site_table.get(b"b")).twin()["completeness"][str(year_of(ts))]
    assert share["gap_filled"]["share_tco2e"] == 80 / 160
    assert share["measured"]["share_tco2e"] == 80 / 160


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    recovered=st.sampled_from([0.0, 0.7, 1.0]),
    fill_after=st.sampled_from([0.0, 0.5]),
    crashes=st.sampled_from([0.0, 0.2]),
)
def test_fills_replaced_in_any_order_give_the_on_time_figures(
    seed: int, n: int, recovered: float, fill_after: float, crashes: float
) -> None:
    rng = random.Random(seed)
    sent, stands = make_stream(rng, n, recovered, fill_after)
    check(sent, stands, seed, crashes)


def test_fills_beyond_the_horizon_are_forgotten_but_stay_counted() -> None:
    from streams.windows import forget_fills

    state = SiteState("c", "a", 0)
    state.fills = {"gas-a": {10: [0, 1], 20: [10, 2]}, "gas-b": {5: [0, 3]}}
    forget_fills(state, 15)
    assert state.fills == {"gas-a": {20: [10, 2]}}
