"""Alerting benchmark: detection delay, false-alarm rate and throughput of the alert stage.

Runs the real ``AlertStage`` (decoding, pricing, detectors, state serialisation) over seeded
simulated clusters in accelerated event time, without servers, and prints:

* detection delay (event time from fault start to alert open) per injected fault kind, over
  several seeds, and for emission steps of several sizes;
* false alarms: alerts opened on plain noise, per site-day, over a long run;
* throughput: readings/s through the stage on one core;
* CPU of the alerting worker per 100k readings, side by side on the same generated input:
  the old input (``readings``: decode and price every reading, then the detectors) against
  the new one (the stream worker's ``<readings>-priced`` messages: decode the columns, then
  the same detectors), and their ratio. The priced messages are made by the stream worker's
  real site stage beforehand, outside the measurement (that CPU is the stream worker's, which
  it spent anyway); the alerts of both runs must be the same.

    .venv/bin/python bench/bench_alerting.py [--noise-days 30] [--seeds 5]
    .venv/bin/python bench/bench_alerting.py --cpu-only [--cpu-days 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from streams.alerting.engine import AlertEngine
from streams.alerting.model import Alert
from streams.alerting.simulate import (
    HOUR_MS,
    ReplayTable,
    Scenario,
    StepFault,
    demo_cluster,
    fault_scenario,
    flat_pathway_tpy,
    noise_scenario,
    records,
    replay_in_memory,
    stream_stage,
)
from streams.alerting.stage import AlertStage
from streams.envelope import decode_batch
from streams.priced import PricedGroup, groups_from_readings


def _start() -> int:
    return (int(time.time() * 1000) // HOUR_MS - 90 * 24) * HOUR_MS


def delays(seeds: int) -> None:
    per_kind: dict[str, list[float]] = {}
    missed: dict[str, int] = {}
    for seed in range(seeds):
        sc = fault_scenario(_start() + seed * 7 * 60_000, prefix=f"d{seed}")
        sim = sc.sim
        sim.seed = 100 + seed
        events = asyncio.run(replay_in_memory([sc]))
        opened = {(e.kind.value, e.scope.label): e.opened for e in events if e.event == "open"}
        for kind, scope, f_start, _ in sc.expected:
            label = kind + (" (cluster)" if "/" not in scope else "")
            if (kind, scope) in opened:
                per_kind.setdefault(label, []).append((opened[(kind, scope)] - f_start) / 60_000)
            else:
                missed[label] = missed.get(label, 0) + 1
    print(f"detection delay, event-time minutes from fault start ({seeds} seeds):")
    print(f"  {'alert':32} {'median':>8} {'max':>8} {'missed':>7}")
    for label, ds in sorted(per_kind.items()):
        print(f"  {label:32} {statistics.median(ds):8.1f} {max(ds):8.1f} {missed.get(label, 0):7d}")
    print(
        "  (meter_silent counts from the last reading; meter_flatline needs 30 unchanged "
        "intervals by design; pathway_drift_1h needs the 1 h rate above the margin for 2 h)"
    )


def step_sizes(seeds: int) -> None:
    print("emission_shift at site level, by step size (site noise 5 % per reading):")
    print(f"  {'step':>6} {'median delay (min)':>20} {'detected':>9}")
    for pct in (3, 5, 10, 15, 25):
        ds: list[float] = []
        for seed in range(seeds):
            start = _start()
            f_start = start + 30 * HOUR_MS
            sim = demo_cluster(
                name=f"k{pct}c{seed}",
                prefix=f"k{pct}x{seed}",
                seed=200 + seed,
                faults=(
                    StepFault(f"k{pct}x{seed}site0", f_start, f_start + 6 * HOUR_MS, 1 + pct / 100),
                ),
            )
            v = flat_pathway_tpy(sim.sites[0], sim.interval_ms, 0.5)
            sc = Scenario(sim, start, 40 * 60, {f"{sim.cluster}/x": ([2020.0], [v])}, ())
            events = asyncio.run(replay_in_memory([sc]))
            hits = [
                e.opened
                for e in events
                if e.event == "open"
                and e.kind.value == "emission_shift"
                and e.scope.site
                and f_start <= e.opened <= f_start + 6 * HOUR_MS
            ]
            if hits:
                ds.append((min(hits) - f_start) / 60_000)
        med = f"{statistics.median(ds):.1f}" if ds else "-"
        print(f"  {pct:5d}% {med:>20} {len(ds):5d}/{seeds}")


def false_alarms(days: float, seeds: int) -> None:
    opened: list[Alert] = []
    site_days = 0.0
    n_readings = 0
    elapsed = 0.0
    for seed in range(seeds):
        sc = noise_scenario(_start(), prefix=f"q{seed}", days=days, seed=300 + seed)
        recs = records([sc])
        n_readings += sum(body.value.count(b'"meter"') for body in recs)
        t0 = time.perf_counter()
        events = asyncio.run(replay_in_memory([sc], recs=recs, batch=2000))
        elapsed += time.perf_counter() - t0
        opened += [e for e in events if e.event == "open"]
        site_days += days * len(sc.sim.sites)
    rate = len(opened) / site_days
    print(
        f"false alarms on plain noise: {len(opened)} alerts opened in {site_days:.0f} site-days "
        f"(+{days * seeds:.0f} cluster-days) = {rate:.4f} per site-day"
    )
    for e in opened:
        print(f"    {e.kind.value} {e.scope.label} at {e.opened}")
    print(
        f"throughput: {n_readings / elapsed:,.0f} readings/s through AlertStage "
        f"({n_readings:,} readings, {elapsed:.1f} s, one core, detectors + state serialisation)"
    )


def _alert_stage(sc: Scenario, events: list[Alert]) -> tuple[AlertStage, list[bytes]]:
    """A fresh alert stage over dict tables; the alerts it sends, its cluster messages."""
    cluster_msgs: list[bytes] = []

    async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
        if topic == "alerts":
            events.append(Alert.from_json(value))
        else:
            cluster_msgs.append(value)

    async def write(lines: Any) -> None:
        return None

    engine = AlertEngine(sc.sim.catalog(), None, sc.pathway_objects(), twin="bench")
    return AlertStage(engine, ReplayTable(), ReplayTable(), send, write), cluster_msgs


def _cpu_run(sc: Scenario, batches: list[Any], priced: bool) -> tuple[float, float, list[Alert]]:
    """(CPU s of the whole stage, CPU s of its input decoding alone, alerts) over ``batches``."""
    events: list[Alert] = []
    stage, cluster_msgs = _alert_stage(sc, events)
    catalog = stage.engine.catalog

    async def go() -> float:
        t0 = time.process_time()
        for batch in batches:
            if priced:
                await stage.process_priced(batch)
            else:
                await stage.process(batch)
            if cluster_msgs:
                await stage.process_cluster([(0, m) for m in cluster_msgs])
                cluster_msgs.clear()
        return time.process_time() - t0

    total = asyncio.run(go())
    t0 = time.process_time()
    for batch in batches:  # the input alone, again: what each path pays before the detectors
        if priced:
            [PricedGroup.decode(payload) for _, payload in batch]
        else:
            groups_from_readings(decode_batch(batch, catalog, stage.limits), catalog)
    return total, time.process_time() - t0, events


def _stream_cpu(sc: Scenario, batches: list[Any], publish: bool, repeats: int = 3) -> float:
    """CPU s of the stream worker's site stage over ``batches``, publishing or not."""

    async def go() -> float:
        feed = stream_stage(sc.sim.catalog(), publish=publish)
        t0 = time.process_time()
        for b in batches:
            await feed(b)
        return time.process_time() - t0

    return min(asyncio.run(go()) for _ in range(repeats))


#: (label, meters per site, reading interval ms, share of --cpu-days): a sparse site like the
#: simulated ones elsewhere here, and a denser one (more readings per 5-min bucket, where
#: decoding weighs more against the per-bucket detectors)
CPU_SHAPES = (
    ("3 meters/site, 1 reading/min", 3, 60_000, 1.0),
    ("30 meters/site, 1 reading/10 s", 30, 10_000, 1 / 40),
)


def cpu(days: float, batch: int = 2000, repeats: int = 3) -> None:
    print(
        f"alerting worker CPU-seconds per 100k readings (batches of {batch} envelopes, "
        f"best of {repeats}, one core; 4 sites):"
    )
    print(f"  {'input':36} {'old: readings':>14} {'new: priced':>12} {'new/old':>8}")
    for label, meters, interval_ms, share in CPU_SHAPES:
        sc = noise_scenario(
            _start(), "cpu", days * share, 5, meters_per_site=meters, interval_ms=interval_ms
        )
        recs = records([sc])
        n_readings = sum(r.value.count(b'"meter"') for r in recs)
        old_batches = [recs[i : i + batch] for i in range(0, len(recs), batch)]
        feed = stream_stage(sc.sim.catalog())

        async def publish(feed: Any = feed, old_batches: Any = old_batches) -> list[Any]:
            return [await feed(b) for b in old_batches]

        new_batches = asyncio.run(publish())
        old = min((_cpu_run(sc, old_batches, False) for _ in range(repeats)), key=lambda r: r[0])
        new = min((_cpu_run(sc, new_batches, True) for _ in range(repeats)), key=lambda r: r[0])
        assert [e.model_dump(exclude={"emitted_at"}) for e in new[2]] == [
            e.model_dump(exclude={"emitted_at"}) for e in old[2]
        ], "the two inputs raised different alerts"
        per = 100_000 / n_readings
        n_priced = sum(len(b) for b in new_batches)
        stream = [_stream_cpu(sc, old_batches, publish) for publish in (False, True)]
        print(
            f"  {label}: {n_readings:,} readings; Kafka messages to consume: "
            f"{len(recs):,} envelopes (old), {n_priced:,} priced (new)"
        )
        print(
            f"  {'    whole stage':36} {old[0] * per:13.3f}s {new[0] * per:11.3f}s "
            f"{new[0] / old[0]:8.2f}"
        )
        print(
            f"  {'    input only (decode, price)':36} {old[1] * per:13.3f}s {new[1] * per:11.3f}s "
            f"{new[1] / old[1]:8.3f}"
        )
        print(
            f"  {'    stream worker site stage':36} {stream[0] * per:13.3f}s "
            f"{stream[1] * per:11.3f}s {stream[1] / stream[0]:8.2f}   (old: not publishing)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise-days", type=float, default=30.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cpu-days", type=float, default=10.0, help="input of the CPU comparison")
    ap.add_argument("--cpu-only", action="store_true", help="only the old/new CPU comparison")
    args = ap.parse_args()
    if not args.cpu_only:
        delays(args.seeds)
        print()
        step_sizes(args.seeds)
        print()
        false_alarms(args.noise_days, args.seeds)
        print()
    cpu(args.cpu_days)


if __name__ == "__main__":
    main()
