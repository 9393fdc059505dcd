"""The pure detector arithmetic of ``twin.drift``."""

from __future__ import annotations

import numpy as np
import pytest

from twin.drift import (
    Latch,
    ShiftConfig,
    ShiftState,
    flat_runs,
    gaps,
    projected_year_end,
    rolling_rate,
    shift_scan,
)


def test_latch_opens_after_hold_and_resolves_once() -> None:
    latch = Latch()
    events = []
    # raise holds from t=0; needs 30 to open; hovering inside the band changes nothing
    for t, r, c in [
        (0, True, False),
        (10, True, False),
        (20, False, False),
        (30, True, False),
        (60, True, False),
        (70, False, False),
        (80, False, True),
        (90, True, False),
        (100, False, True),
        (110, False, True),
        (130, False, True),
    ]:
        ev = latch.step(t, r, c, open_for_ms=30, clear_for_ms=20)
        if ev:
            events.append((ev.kind, ev.at))
    # the raise streak broke at 20; from 30 it held until 60 -> opens at 30+30
    assert events == [("open", 60), ("resolve", 120)]
    assert not latch.is_open
    assert Latch.from_list(latch.to_list()) == latch


def test_latch_band_does_not_flap() -> None:
    latch = Latch()
    n_events = 0
    rng = np.random.default_rng(1)
    for t in range(1000):
        x = 1.0 + 0.04 * rng.standard_normal()  # hovering around the raise threshold 1.0
        ev = latch.step(t, x > 1.0, x < 0.9, 0, 5)
        n_events += ev is not None
    assert n_events == 1  # opened once, never cleared (the clear threshold is far below)


def _noise(n: int, seed: int, level: float = 100.0, rel: float = 0.02) -> np.ndarray:
    return level * (1 + rel * np.random.default_rng(seed).standard_normal(n))


def test_shift_detects_15pct_step_within_three_intervals() -> None:
    cfg = ShiftConfig()
    st = ShiftState()
    xs = _noise(300, 5)
    xs[200:260] *= 1.15
    steps = shift_scan(st, xs, cfg)
    opens = [i for i, s in enumerate(steps) if s.event == "open"]
    resolves = [i for i, s in enumerate(steps) if s.event == "resolve"]
    assert len(opens) == 1 and 200 <= opens[0] <= 202
    assert steps[opens[0]].direction == 1
    assert len(resolves) == 1 and 260 <= resolves[0] <= 280
    # frozen baseline: the expected level stays the pre-fault one during the fault
    assert steps[250].expected == pytest.approx(100.0, rel=0.02)


def test_shift_is_quiet_on_long_noise_and_detects_downward() -> None:
    cfg = ShiftConfig()
    st = ShiftState()
    steps = shift_scan(st, _noise(50_000, 9), cfg)
    assert not any(s.event for s in steps)
    xs = _noise(100, 10)
    xs[50:] *= 0.8
    steps = shift_scan(st, xs, cfg)
    opened = [s for s in steps if s.event == "open"]
    assert len(opened) == 1 and opened[0].direction == -1
    assert ShiftState.from_list(st.to_list()) == st


def test_shift_warmup_never_alarms() -> None:
    st = ShiftState()
    steps = shift_scan(st, np.array([100.0, 200.0, 50.0] * 7), ShiftConfig(warmup=24))
    assert not any(s.event for s in steps)


def test_flat_runs_and_carry_over() -> None:
    ts = np.array([0, 60, 120, 180, 240])
    v = np.array([5.0, 5.0, 5.0, 6.0, 6.0])
    start, changed = flat_runs(ts, v, np.nan, -1, 1e-9)
    assert start.tolist() == [0, 0, 0, 180, 180]
    assert changed.tolist() == [True, False, False, True, False]
    # continuing a run begun in an earlier batch
    start, _ = flat_runs(np.array([300, 360]), np.array([6.0, 6.0]), 6.0, 180, 1e-9)
    assert start.tolist() == [180, 180]


def test_gaps() -> None:
    assert gaps(np.array([60, 120, 600, 660]), 0, 300).tolist() == [2]
    assert gaps(np.array([1000]), 0, 300).tolist() == [0]
    assert gaps(np.array([1000]), -1, 300).tolist() == []


def test_rolling_rate_and_projection() -> None:
    starts = np.array([0.0, 1800e3, 3600e3, 5400e3])
    t = np.array([1.0, 1.0, 2.0, 2.0])
    hours = np.full(4, 0.5)
    rate, covered = rolling_rate(starts, t, hours, 7200_000, 3600_000)
    assert (rate, covered) == (4.0, 1.0)
    assert projected_year_end(1.0, 2.0, 0.5, 2026) == pytest.approx(8760 * 1.5)
    assert projected_year_end(1.0, 2.0, 0.5, 2024) == pytest.approx(8784 * 1.5)
