"""The SDK's metering helpers against offline truth: random counter traces with rollovers,
resets, implausible jumps, repeats, shuffled delivery and crashes at every point of a poll."""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sdk import CounterSpec, Interval, Metering, Refusal, StateError, StateStore
from twin.carriers import UnitError, rate_quantity_unit

MIN = 60_000
MOD = 20_000.0  # meter "a" wraps here
LIMIT_PER_H = 60_000.0  # 1000 per minute; steps are at most 1000 per minute
GAP = 100_000.0  # more than a whole trace counts
SPECS = {
    "a": CounterSpec(rollover_at=MOD, max_increase_per_h=LIMIT_PER_H),
    "b": CounterSpec(max_increase_per_h=LIMIT_PER_H),  # never wraps: any decrease is a reset
}


@dataclass
class Trace:
    """The plant: each meter's physical consumption ``true`` and what its register shows."""

    ts: list[int] = field(default_factory=list)
    true: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})
    register: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})
    refused_at: set[tuple[str, int]] = field(default_factory=set)  # steps the rules refuse

    def true_at(self, meter: str, ts: int) -> float:
        return self.true[meter][self.ts.index(ts)]


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    tr = Trace()
    t = 1_750_000_000_000
    true = {"a": 0.0, "b": 0.0}
    offset = {
        "a": float(draw(st.integers(0, 19_999))),
        "b": float(draw(st.integers(10**6, 2 * 10**6))),
    }
    for i in range(draw(st.integers(2, 40))):
        t += MIN
        for m in ("a", "b"):
            true[m] += float(draw(st.integers(0, 1000)))
            lowest = min(tr.register[m], default=0.0)
            if m == "b" and lowest > GAP and draw(st.integers(0, 9)) == 0:
                # meter replaced: the new one shows well below what the old one ever did
                # (a reset whose count climbs past the baseline before the next poll that
                # arrives looks like consumption to any rule)
                offset[m] = float(draw(st.integers(0, int(lowest - GAP)))) - true[m]
                tr.refused_at.add((m, t))
            elif m == "b" and i > 0 and draw(st.integers(0, 14)) == 0:
                offset[m] += 10_000_000.0  # register preset / glitch: implausible
                tr.refused_at.add((m, t))
            reg = (true[m] + offset[m]) % MOD if m == "a" else true[m] + offset[m]
            tr.true[m].append(true[m])
            tr.register[m].append(reg)
        tr.ts.append(t)
    return tr


def check_published(tr: Trace, published: list[Interval], first_ts: int) -> None:
    """Exact against the trace: each interval is the true increase over its span; none
    overlap; the worker's (meter, ts) dedupe sees identical repeats only; and time is only
    uncovered where a refused step (reset, implausible jump) lies."""
    unique: dict[tuple[str, int], Interval] = {}
    for iv in published:
        seen = unique.setdefault((iv.meter, iv.ts), iv)
        assert seen == iv, f"two different readings for {iv.meter} at {iv.ts}: {seen} {iv}"
    for m in ("a", "b"):
        ivs = sorted((iv for iv in unique.values() if iv.meter == m), key=lambda iv: iv.ts)
        for iv in ivs:
            assert iv.value == tr.true_at(m, iv.ts) - tr.true_at(m, iv.start), iv
        for prev, nxt in itertools.pairwise(ivs):
            assert prev.ts <= nxt.start, f"overlap: {prev} {nxt}"
        covered_to = first_ts
        gaps = []
        for iv in ivs:
            if iv.start > covered_to:
                gaps.append((covered_to, iv.start))
            covered_to = iv.ts
        if covered_to < tr.ts[-1]:
            gaps.append((covered_to, tr.ts[-1]))
        for lo, hi in gaps:
            assert any(mm == m and lo < t <= hi for mm, t in tr.refused_at), (
                f"meter {m}: [{lo}, {hi}] lost though no rule refused a step in it"
            )
        if m == "a":  # no refusals possible: the whole trace, exactly once
            assert not gaps
            assert sum(iv.value for iv in ivs) == tr.true_at("a", tr.ts[-1]) - tr.true_at(
                "a", first_ts
            )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tr=traces(), seed=st.integers(0, 2**32 - 1))
def test_polls_with_repeats_and_crashes_anywhere_count_each_interval_once(
    tmp_path_factory: pytest.TempPathFactory, tr: Trace, seed: int
) -> None:
    """A connector's life: poll, checkpoint, hand on, buffer, confirm; the process dies at a
    random point of that (losing whatever was only in memory) and starts from the store."""
    rnd = random.Random(seed)
    path = tmp_path_factory.mktemp("state") / StateStore.FILE
    store = StateStore(path, "test/meters")
    metering = Metering(store, counters=SPECS)
    in_buffer: list[Interval] = []  # the disk buffer: survives crashes
    handed_on: list[Interval] = []  # yielded, not yet in the buffer: lost on a crash
    refusals: list[Refusal] = []
    first_ts: int | None = None  # the first baseline that reached the store
    for k, ts in enumerate(tr.ts):
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):  # duplicated delivery of one snapshot
            out: list[Interval] = list(metering.restored())
            for m in rnd.sample(["a", "b"], 2):
                r = metering.counter(m, ts, tr.register[m][k])
                if isinstance(r, Interval):
                    out.append(r)
                elif isinstance(r, Refusal):
                    refusals.append(r)
            crash = rnd.randrange(6)
            if crash == 0:  # died before the checkpoint: this poll never happened
                metering = Metering(store, counters=SPECS)
                continue
            metering.checkpoint()
            first_ts = tr.ts[k] if first_ts is None else first_ts
            handed_on += out
            if crash == 1:  # died with the readings in the runner's memory
                handed_on.clear()
                metering = Metering(store, counters=SPECS)
                continue
            if rnd.random() < 0.6:
                in_buffer += handed_on
                handed_on.clear()
                if crash == 2:  # died after the buffer append, before confirming
                    metering = Metering(store, counters=SPECS)
                    continue
                metering.durable()
    # a last poll of the last snapshot goes through; the runner flushes and confirms at
    # shutdown; a last restart sends what is unconfirmed
    out = list(metering.restored())
    for m in ("a", "b"):
        r = metering.counter(m, tr.ts[-1], tr.register[m][-1])
        if isinstance(r, Interval):
            out.append(r)
    metering.checkpoint()
    in_buffer += handed_on + out
    metering.durable()
    first_ts = tr.ts[-1] if first_ts is None else first_ts
    in_buffer += Metering(store, counters=SPECS).restored()
    check_published(tr, in_buffer, first_ts)
    for r in refusals:
        assert r.rule in {"counter.reset", "counter.implausible"}, r
        # at the refused step, or at the poll after it when a crash lost that one
        assert any(m == r.meter and t <= r.ts for m, t in tr.refused_at), r
        assert r.bad_sample().reason.startswith(r.rule + ": ")


@settings(max_examples=150, deadline=None)
@given(tr=traces(), seed=st.integers(0, 2**32 - 1))
def test_shuffled_and_duplicated_delivery_never_double_counts(tr: Trace, seed: int) -> None:
    """Messages (MQTT, HTTP pushes) arrive out of order: an older snapshot is refused, the
    rest is counted exactly between the first delivered and the newest accepted one."""
    rnd = random.Random(seed)
    order = [k for k in range(len(tr.ts)) for _ in range(rnd.choice([1, 2]))]
    rnd.shuffle(order)
    metering = Metering(counters={"a": CounterSpec(max_increase_per_h=LIMIT_PER_H)})
    published: list[Interval] = []
    newest = tr.ts[order[0]]
    for k in order:  # a monotone register (no wrap: a long skipped stretch cannot alias)
        r = metering.counter("a", tr.ts[k], tr.true["a"][k])
        if isinstance(r, Refusal):
            assert r.rule == "counter.out_of_order" and tr.ts[k] < newest, r
        elif r is not None:
            published.append(r)
        newest = max(newest, tr.ts[k])
    assert sorted(published, key=lambda iv: iv.ts) == published
    for prev, nxt in itertools.pairwise(published):
        assert prev.ts == nxt.start
    for iv in published:
        assert iv.value == tr.true_at("a", iv.ts) - tr.true_at("a", iv.start)
    assert sum(iv.value for iv in published) == tr.true_at("a", newest) - tr.true_at(
        "a", tr.ts[order[0]]
    )


def test_the_rules_by_example() -> None:
    m = Metering(counters={"x": CounterSpec(rollover_at=1000.0, max_increase_per_h=1200.0)})
    t0 = 1_750_000_000_000
    assert m.counter("x", t0, 990.0) is None  # baseline
    assert m.counter("x", t0, 990.0) is None  # repeat
    r = m.counter("x", t0, 991.0)
    assert isinstance(r, Refusal) and r.rule == "counter.conflict"
    rolled = m.counter("x", t0 + MIN, 5.0)
    assert rolled == Interval("x", t0, t0 + MIN, 15.0)  # wrapped at 1000
    zero = m.counter("x", t0 + 2 * MIN, 5.0)
    assert zero == Interval("x", t0 + MIN, t0 + 2 * MIN, 0.0)
    old = m.counter("x", t0 + MIN, 4.0)
    assert isinstance(old, Refusal) and old.rule == "counter.out_of_order"
    jump = m.counter("x", t0 + 3 * MIN, 400.0)  # 395 in a minute; limit 20 a minute
    assert isinstance(jump, Refusal) and jump.rule == "counter.implausible"
    assert "max_increase_per_h=1200" in jump.reason
    back = m.counter("x", t0 + 4 * MIN, 100.0)  # wrapped would be 700 > 1000 / 2
    assert isinstance(back, Refusal) and back.rule == "counter.reset"
    assert "counter went back from 400.0 to 100.0" in back.reason
    assert m.counter("x", t0 + 5 * MIN, 101.0) == Interval("x", t0 + 4 * MIN, t0 + 5 * MIN, 1.0)
    late = m.counter("x", t0 + 5 * MIN + 86_400_001, 102.0)
    assert isinstance(late, Refusal) and late.rule == "counter.span"
    bad = m.counter("x", t0 + 6 * MIN, float("nan"))
    assert isinstance(bad, Refusal) and bad.rule == "counter.invalid"


def test_rates_integrate_with_the_stated_rule() -> None:
    t0 = 1_750_000_000_000
    trap = Metering()
    assert trap.rate("p", t0, 1000.0, "kW") is None
    iv = trap.rate("p", t0 + 15 * MIN, 3000.0, "kW")  # 2 MW mean for 15 min = 0.5 MWh
    assert iv == Interval("p", t0, t0 + 15 * MIN, 0.5, "MWh")
    left = Metering(rate_rule="left")
    left.rate("f", t0, 12.0, "t/h")
    assert left.rate("f", t0 + 30 * MIN, 100.0, "t/h") == Interval("f", t0, t0 + 30 * MIN, 6.0, "t")
    gas = Metering()
    gas.rate("g", t0, 3600.0, "Nm3/h")
    assert gas.rate("g", t0 + 1000, 3600.0, "Nm3/h") == Interval("g", t0, t0 + 1000, 1.0, "Nm3")
    gas.rate("g", t0 + 2000, 1.0, "MW")
    changed = gas.rate("g", t0 + 3000, 1.0, "MW")
    assert changed == Interval("g", t0 + 2000, t0 + 3000, 1.0 / 3600, "MWh")
    with pytest.raises(UnitError, match="not a rate"):
        gas.rate("g", t0 + 4000, 1.0, "kWh")
    assert rate_quantity_unit("kg/s") == ("t", 3.6)


def test_state_store_is_atomic_and_per_instance(tmp_path: Path) -> None:
    store = StateStore(tmp_path / StateStore.FILE, "modbus/a")
    assert store.load() == {}
    store.save({"counters": {"m": [1, 2.0]}})
    assert store.load() == {"counters": {"m": [1, 2.0]}}
    assert [p.name for p in tmp_path.iterdir()] == [StateStore.FILE]  # no temporary left
    with pytest.raises(StateError, match=r"belongs to 'modbus/a'.*own buffer.dir"):
        StateStore(tmp_path / StateStore.FILE, "modbus/b").load()
    (tmp_path / StateStore.FILE).write_bytes(b'{"version": 1, "sou')  # torn by hand
    with pytest.raises(StateError, match="unreadable"):
        store.load()


def test_a_restart_bridges_the_interval_it_spans(tmp_path: Path) -> None:
    store = StateStore(tmp_path / StateStore.FILE, "x/y")
    t0 = 1_750_000_000_000
    first = Metering(store)
    first.counter("m", t0, 100.0)
    first.checkpoint()
    first.durable()
    second = Metering(store)  # restarted after ten minutes down
    assert second.restored() == []
    assert second.counter("m", t0 + 10 * MIN, 130.0) == Interval("m", t0, t0 + 10 * MIN, 30.0)


def test_the_readme_example_runs() -> None:
    """connectors/README.md's metering example is run as written: it cannot drift."""
    readme = Path(__file__).parents[3] / "connectors" / "README.md"
    section = readme.read_text().split("## Metering helpers", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(block, str(readme), "exec"), {"__name__": "readme_example"})
