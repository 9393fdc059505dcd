"""Scale: a twin of 33 clusters x 100 sites x 50 meters (165,000 meters) through the worker.

The clusters are bench_twin's synthetic ones; the worker's meter index is compiled from them
by the twin (``streams.twinlink``, into a catalog file), and the readings come from the
connector simulator's model (``ClusterSimulator``: seeded plant, port and PV load shapes),
one envelope per site and metering interval (50 readings), keyed by site. Prints, from one run:

* live: every meter at a realistic metering interval (``--live-interval-s``, default 60 s,
  i.e. 2,750 readings/s for 165,000 meters), produced at that rate for ``--live-seconds``:
  whether one worker keeps up (lag at the end) and the latency p50/p99;
* capacity of one worker: readings/s draining a backlog of ``--intervals`` intervals of every
  meter (wall clock and per CPU-second), and what it means in meters kept live at a 15-min
  and a 1-min interval; RSS of the worker;
* two workers (one consumer group, ``--partitions`` partitions): the same backlog drained by
  both, aggregate readings/s and the speed-up over one. The machine's cores bound this: with
  N cores shared by broker, database and workers, a second worker gains only the idle share.

    .venv/bin/python bench/bench_scale.py [--clusters 33 --sites 100 --meters 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import HEADERS, cpu_seconds, start_worker  # noqa: E402
from bench_twin import synthetic_raw  # noqa: E402

from clustertwin.settings import Settings  # noqa: E402
from clustertwin.stack import LocalStack  # noqa: E402
from connectors.sdk.base import Sample  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_clusters(clusters: int, sites: int, meters: int) -> list[Any]:
    """bench_twin's synthetic clusters, parsed (the twin's validation included)."""
    from twin.model import parse_cluster

    rng = np.random.default_rng(42)
    return [
        parse_cluster(synthetic_raw(k, sites, meters, rng), f"bench-{k}") for k in range(clusters)
    ]


def _shared_norms() -> Any:
    """``MeterProfile.build`` that computes each shape's normalisation once.

    ``build`` averages a meter's shape over a year (35,000 points) to normalise it: 2 ms a
    meter, six minutes for 165,000. The mean depends only on the shape and its phase (and the
    asset for port berths), which repeat across meters; the profile is otherwise built the
    same way (``build`` itself makes the first of each kind).
    """
    from connectors.simulator import profiles

    build = profiles.MeterProfile.build
    norms: dict[tuple[Any, ...], float] = {}

    def shared(**kw: Any) -> Any:
        shape = profiles.shape_for(kw["carrier"], kw["asset_kind"], kw["sector"])
        h = profiles.stable_hash(kw["seed"], kw["meter"], "profile")
        phase = (h >> 24) % 1000 / 1000 * 3.0
        key = (shape, phase, kw["asset"] if shape is profiles.Shape.PORT else "")
        if key not in norms or kw["annual_quantity"] is None:
            p = build(**kw)
            norms[key] = p.norm
            return p
        return profiles.MeterProfile(
            kw["meter"], kw["asset"], kw["site"], kw["carrier"], kw["unit"], shape,
            float(kw["annual_quantity"]), phase, norms[key],
        )  # fmt: skip

    return shared


class Feed:
    """Envelopes from the simulator model: per interval, one per site (its 50 meters)."""

    def __init__(self, parsed: list[Any], step_s: int) -> None:
        from connectors.simulator import profiles
        from connectors.simulator.connector import ClusterSimulator, SimulatorConfig

        build = profiles.MeterProfile.build
        profiles.MeterProfile.build = _shared_norms()  # type: ignore[method-assign]
        try:
            self._init(parsed, step_s, ClusterSimulator, SimulatorConfig)
        finally:
            profiles.MeterProfile.build = build  # type: ignore[method-assign]

    def _init(self, parsed: list[Any], step_s: int, sim_cls: Any, cfg_cls: Any) -> None:
        ClusterSimulator, SimulatorConfig = sim_cls, cfg_cls
        self.sims = []
        for cluster in parsed:
            cfg = SimulatorConfig(
                connector="simulator", name="bench-scale", cluster=str(cluster.id), seed=7,
                step_s=step_s, outage_rate=0.0, gap_rate=0.0,
            )  # fmt: skip
            sim = ClusterSimulator(cluster, cfg)
            site_of = {m.id: s.id for s in cluster.sites for a in s.assets for m in a.meters}
            self.sims.append((str(cluster.id), sim, site_of))
        self.step_ms = step_s * 1000

    def envelopes(self, k0: int, n: int) -> Iterator[tuple[str, bytes, int]]:
        """(site, envelope, readings) for intervals k0..k0+n-1, interval by interval."""
        chunks = []
        for cluster, sim, site_of in self.sims:
            chunks.append((cluster, sim.samples(k0, n), site_of, len(sim.profiles)))
        for j in range(n):
            for cluster, samples, site_of, m in chunks:
                by_site: dict[str, list[dict[str, Any]]] = {}
                for s in samples[j * m : (j + 1) * m]:
                    assert isinstance(s, Sample)  # the simulator makes no bad samples here
                    by_site.setdefault(site_of[s.meter], []).append(
                        {
                            "meter": s.meter,
                            "ts": s.ts,
                            "value": s.value,
                            "unit": s.unit,
                            "carrier": s.carrier,
                            "quality": s.quality,
                        }
                    )
                now = int(time.time() * 1000)
                for site, readings in by_site.items():
                    body = {
                        "schema": "readings/1",
                        "cluster": cluster,
                        "site": site,
                        "source": "bench-scale-simulator",
                        "sent_at": now,
                        "readings": readings,
                    }
                    yield site, orjson.dumps(body), len(readings)


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=16_777_216,
        batch_size=1_048_576,
    )


def produce(bootstrap: str, topic: str, items: Iterator[tuple[str, bytes, int]]) -> tuple[int, int]:
    p = producer(bootstrap)
    records = readings = 0
    for site, value, n in items:
        p.send(topic, key=site.encode(), value=value, headers=HEADERS)
        records += 1
        readings += n
    p.flush()
    p.close()
    return records, readings


def twin(port: int) -> Any:
    """The worker's /twin/ view; patient, as a batch of thousands of sites blocks its loop."""
    for _ in range(20):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/", timeout=30) as r:
                return orjson.loads(r.read())
        except TimeoutError:
            continue
    raise SystemExit(f"the worker on :{port} did not answer for 10 minutes")


def counters(ports: list[int]) -> tuple[int, int]:
    records = accepted = 0
    for port in ports:
        c = twin(port)["counters"]
        records += c["records"]
        accepted += c["accepted"]
    return records, accepted


def drain(
    env_base: dict[str, str], name: str, topic: str, cat_file: Path, workers: int, records: int
) -> dict[str, float]:
    """Start ``workers`` workers on a produced backlog; rate from the first record to the last."""
    started = [start_worker(env_base, name, topic, cat_file) for _ in range(workers)]
    procs, ports = [p for p, _ in started], [port for _, port in started]
    try:
        first = last = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done, accepted = counters(ports)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, accepted, sum(cpu_seconds(p.pid) for p in procs))
            if done >= records:
                last = (now, accepted, sum(cpu_seconds(p.pid) for p in procs))
                break
            time.sleep(0.1)
        if first is None or last is None:
            raise SystemExit(f"{workers} worker(s) did not drain {records} records in time")
        elapsed, cpu = last[0] - first[0], last[2] - first[2]
        return {
            "rate": (last[1] - first[1]) / elapsed if elapsed > 0 else float("nan"),
            "cpu_rate": (last[1] - first[1]) / cpu if cpu > 0 else float("nan"),
            "accepted": float(counters(ports)[1]),
            "rss_mb": max(rss_mb(p.pid) for p in procs),
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=33)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--meters", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--intervals", type=int, default=3, help="backlog: intervals of every meter")
    ap.add_argument("--live-interval-s", type=int, default=60, help="metering interval, live")
    ap.add_argument("--live-seconds", type=float, default=60.0)
    args = ap.parse_args()

    stack = LocalStack()
    stack.up(["influxdb", "kafka"])
    settings = Settings.from_stack_settings(stack.settings())
    env_base = {**os.environ, **stack.settings()}
    name = f"scale-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp())
    n_meters = args.clusters * args.sites * args.meters
    t0 = time.perf_counter()
    parsed = synthetic_clusters(args.clusters, args.sites, args.meters)
    from streams.twinlink import catalog_from_clusters

    catalog = catalog_from_clusters(parsed)
    cat_file = tmp / "catalog.json"
    cat_file.write_text(catalog.to_json())
    print(
        f"twin: {args.clusters} clusters x {args.sites} sites x {args.meters} meters = "
        f"{n_meters:,} meters ({len(catalog):,} in the worker's index), built in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topics = {k: f"{name}-{k}" for k in ("live", "one", "two")}
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics.values()])
    admin.close()

    # -- live: every meter at a realistic interval, one worker ---------------------------
    step_ms = args.live_interval_s * 1000
    live_feed = Feed(parsed, args.live_interval_s)
    rate = n_meters / args.live_interval_s
    n_int = max(1, round(args.live_seconds / args.live_interval_s))
    proc, port = start_worker(env_base, name, topics["live"], cat_file)
    try:
        print(
            f"live: {n_meters:,} meters every {args.live_interval_s} s = {rate:,.0f} readings/s, "
            f"{n_int} interval(s) spread over {n_int * args.live_interval_s} s ...",
            flush=True,
        )
        p = producer(settings.kafka_bootstrap)
        k_now = int(time.time() * 1000) // step_ms
        # generated first (the simulator model takes seconds per interval of 165,000 meters),
        # then sent evenly spread over each interval
        intervals = [list(live_feed.envelopes(k_now - n_int + j + 1, 1)) for j in range(n_int)]
        sent = 0
        began = time.monotonic()
        for j, items in enumerate(intervals):
            per = args.live_interval_s / max(1, len(items))
            for i, (site, value, _n) in enumerate(items):
                due = began + j * args.live_interval_s + i * per
                ahead = due - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                p.send(topics["live"], key=site.encode(), value=value, headers=HEADERS)
                sent += 1
        p.flush()
        p.close()
        produced_in = time.monotonic() - began
        time.sleep(3)
        done, accepted = counters([port])
        lat = twin(port)["latency_ms"]
        print(
            f"live: produced {sent:,} envelopes in {produced_in:.0f} s; 3 s later the worker had "
            f"processed {done:,} ({accepted:,} readings accepted), lag {sent - done:,} "
            f"envelopes; latency p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms; "
            f"RSS {rss_mb(proc.pid):,.0f} MB",
            flush=True,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    # -- capacity: one worker, then two, draining the same backlog -----------------------
    feed = Feed(parsed, 900)
    k0 = (int(time.time() * 1000) - 2 * 86_400_000) // 900_000
    backlog = list(feed.envelopes(k0, args.intervals))
    for key in ("one", "two"):
        records, readings = produce(settings.kafka_bootstrap, topics[key], iter(backlog))
    print(
        f"backlog: {args.intervals} interval(s) of every meter = {records:,} envelopes, "
        f"{readings:,} readings (x2 topics)",
        flush=True,
    )
    one = drain(env_base, name, topics["one"], cat_file, 1, records)
    print(
        f"1 worker: {one['rate']:,.0f} readings/s ({one['cpu_rate']:,.0f} per CPU-s), "
        f"{one['accepted']:,.0f} of {readings:,} accepted, RSS {one['rss_mb']:,.0f} MB",
        flush=True,
    )
    print(
        f"=> one worker keeps {one['rate'] * 900:,.0f} meters live at a 15-min interval, "
        f"{one['rate'] * 60:,.0f} at 1 min (this twin: {n_meters:,}, i.e. "
        f"{n_meters / 900 / one['rate']:.1%} / {n_meters / 60 / one['rate']:.0%} of one worker)",
        flush=True,
    )
    # another twin tag: InfluxDB creates new series for it, as for the one-worker run (writing
    # into series that already exist is much cheaper and would flatter the two workers)
    two = drain(env_base, f"{name}-2w", topics["two"], cat_file, 2, records)
    print(
        f"2 workers ({args.partitions} partitions): {two['rate']:,.0f} readings/s "
        f"({two['cpu_rate']:,.0f} per CPU-s), {two['accepted']:,.0f} of {readings:,} accepted; "
        f"speed-up {two['rate'] / one['rate']:.2f}x over 1 worker on {os.cpu_count()} cores",
        flush=True,
    )


if __name__ == "__main__":
    main()
