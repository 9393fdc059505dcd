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
  both, aggregate readings/s, each worker's partitions and accepted readings, and the
  speed-up over one. The machine's cores bound this: with N cores shared by broker,
  database and workers, a second worker gains only the idle share.

Both drains are run alike: the workers start on an empty topic, the backlog is produced once
the group is stable with partitions on every worker, the rate runs from the first record
processed by any worker to the last one stored (and, printed beside it, to every offset
committed, the cluster stage included), and the points go to a twin tag of their own, so
into new series. Workers are stopped with SIGTERM and, after ``--stop-grace-s``, SIGKILL;
a stop that needed SIGKILL is counted in the output (a worker stopping gracefully first
stores what it holds, which under a backlog can take long; see ``stop``).

    .venv/bin/python bench/bench_scale.py [--clusters 33 --sites 100 --meters 50]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
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

from bench_pipeline import HEADERS, cpu_seconds, rss_mb, start_worker  # noqa: E402
from bench_twin import synthetic_raw  # noqa: E402

from clustertwin.stack import LocalStack  # noqa: E402
from clustertwin_base.settings import Settings  # noqa: E402
from connectors.sdk.base import Sample  # noqa: E402


def synthetic_clusters(clusters: int, sites: int, meters: int) -> list[Any]:
    """bench_twin's synthetic clusters, parsed (the twin's validation included), with site
    ids made unique across clusters (``c<k>-s<s>``).

    bench_twin names the sites ``s0``.. in every cluster. The worker keys its site state and
    the Kafka records by site id alone (its catalog refuses a site id shared by two clusters):
    33 clusters sharing 100 ids would be 100 sites to it, and 100 keys split unevenly over
    partitions (39% / 61% over two workers with 4 partitions), capping the two-worker figure.
    """
    from twin.model import parse_cluster

    rng = np.random.default_rng(42)
    parsed = []
    for k in range(clusters):
        raw = synthetic_raw(k, sites, meters, rng)
        for site in raw["sites"]:
            site["id"] = f"c{k}-{site['id']}"
            for asset in site["assets"]:
                for meter in asset["meters"]:
                    if "to_site" in meter:
                        meter["to_site"] = f"c{k}-{meter['to_site']}"
        parsed.append(parse_cluster(raw, f"bench-{k}"))
    return parsed


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


def twin(port: int, proc: Any = None) -> Any:
    """The worker's /twin/ view; patient, as a batch of thousands of sites blocks its loop.

    With its process given, a worker that exited is reported as such (with its exit code:
    70 is its stall watchdog) instead of as a refused connection.
    """
    for _ in range(20):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/", timeout=30) as r:
                return orjson.loads(r.read())
        except TimeoutError:
            continue
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(
                    f"the worker on :{port} exited with code {proc.returncode}; see its log in /tmp"
                ) from None
            time.sleep(1)
    raise SystemExit(f"the worker on :{port} did not answer for 10 minutes")


def counters(ports: list[int]) -> tuple[int, int, int]:
    """Records processed, readings accepted and InfluxDB points written (every point: the
    site and cluster stages', progress and the worker's own counters) by the workers."""
    records = accepted = points = 0
    for port in ports:
        view = twin(port)
        records += view["counters"]["records"]
        accepted += view["counters"]["accepted"]
        points += view["sink"]["lines"]
    return records, accepted, points


def points_by_measurement(port: int, accepted: int) -> str:
    """Points per reading of each measurement (the sink counts what it stored)."""
    by = twin(port)["sink"].get("by_measurement", {})
    return (
        ", ".join(f"{m} {n / accepted:.3f}" for m, n in sorted(by.items(), key=lambda kv: -kv[1]))
        if accepted
        else "n/a"
    )


def per_reading(points: int, accepted: int) -> str:
    return f"{points / accepted:.2f}" if accepted else "n/a"


def ms(value: float | None) -> str:
    """A latency figure; the view gives null (JSON has no NaN) before any record is stored."""
    return "n/a" if value is None or value != value else f"{value:,.0f} ms"


def stop(procs: list[Any], grace_s: float) -> list[tuple[float, bool]]:
    """SIGTERM the workers, wait up to ``grace_s`` for them all, SIGKILL the rest.

    Returns (seconds to exit, needed SIGKILL) per worker. On SIGTERM Faust waits, without a
    time limit, until every record already handed to an agent is acknowledged: the site
    batch in flight (up to 2,000 envelopes) and cluster-stage records queued behind the
    timers that share the stages' lock. When two members of a group stop together, the one
    still storing when the other leaves can hang for good: Faust closes its consumer on that
    rebalance, and its last offset commit then waits for a coordinator it can no longer
    reach. Killing a worker is safe (nothing unstored is acknowledged), so a stop that needs
    it is counted, not fatal.
    """
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    began = time.monotonic()
    exited: dict[int, float] = {}
    while len(exited) < len(procs) and time.monotonic() - began < grace_s:
        for i, p in enumerate(procs):
            if i not in exited and p.poll() is not None:
                exited[i] = time.monotonic() - began
        time.sleep(0.05)
    out = []
    for i, p in enumerate(procs):
        if i in exited:
            out.append((exited[i], False))
        else:
            p.kill()
            p.wait()
            out.append((time.monotonic() - began, True))
    return out


def stops_text(stops: list[tuple[float, bool]], grace_s: float) -> str:
    killed = sum(k for _, k in stops)
    times = ", ".join(f"{t:.1f} s" for t, k in stops if not k)
    text = f"stopped by SIGTERM in {times}" if times else ""
    if killed:
        text += ("; " if text else "") + f"{killed} needed SIGKILL after {grace_s:g} s"
    return text


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` not yet committed by consumer group ``group`` (Faust commits an
    offset once its record's effects are stored and acknowledged)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets({group: tps}).get(group, {})
    finally:
        consumer.close()
        admin.close()
    lag = 0
    for tp in tps:
        done = committed.get(tp)
        offset = done.offset if done is not None and done.offset >= 0 else 0
        lag += max(0, ends[tp] - offset)
    return lag


def group_partitions(bootstrap: str, group: str, topic: str) -> dict[str, list[int]] | None:
    """``topic``'s partitions per member of a stable consumer group, None while rebalancing.

    Members are named by their web port when Faust's member metadata tells it (each worker
    advertises its URL there), so they can be matched with the workers started here.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        desc = admin.describe_groups([group]).get(group) or {}
    finally:
        admin.close()
    if desc.get("group_state") != "Stable":
        return None
    out: dict[str, list[int]] = {}
    for m in desc.get("members", []):
        found = re.search(r'"url":\s*"http://[^"]*:(\d+)"', str(m.get("member_metadata", "")))
        who = f":{found.group(1)}" if found else str(m.get("member_id"))
        assignment = m.get("member_assignment") or {}
        parts = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
        out[who] = sorted(p for a in parts if a["topic"] == topic for p in a["partitions"])
    return out


def drain(
    env_base: dict[str, str],
    bootstrap: str,
    twin_name: str,
    topic: str,
    cat_file: Path,
    workers: int,
    backlog: list[tuple[str, bytes, int]],
    stop_grace_s: float,
) -> dict[str, Any]:
    """``workers`` workers in one consumer group drain ``backlog`` produced into ``topic``.

    The backlog is produced only once every worker has its partitions (a worker that joins
    while another drains would find part of the backlog gone, and the rebalance would be
    timed too). The rate is the readings accepted by all workers between the first record
    processed by any of them and the last one stored, wall clock and per CPU-second of the
    workers. ``twin_name`` is the twin tag of the points, so a new one makes new series.
    """
    started = [start_worker(env_base, twin_name, topic, cat_file) for _ in range(workers)]
    procs, ports = [p for p, _ in started], [port for _, port in started]
    group = f"{twin_name}-{topic}"  # the Faust app id that start_worker gives
    stops: list[tuple[float, bool]] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            members = group_partitions(bootstrap, group, topic)
            if members is not None and len(members) == workers and all(members.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} worker(s): no stable group, partitions {members}")
            time.sleep(0.5)
        records, readings = len(backlog), sum(n for _, _, n in backlog)
        # produced from a thread, so the first record is seen as soon as a worker takes it
        sender = threading.Thread(target=produce, args=(bootstrap, topic, iter(backlog)))
        sender.start()

        def stored(views: list[dict[str, Any]]) -> bool:
            """Every record processed and its effects stored (the latency is taken after the
            sink and the table; it keeps the last 200,000)."""
            done = sum(v["counters"]["records"] for v in views)
            return done >= records and all(
                v["latency_ms"]["n"] >= min(v["counters"]["records"], 200_000) for v in views
            )

        first = last = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            views = [twin(port, p) for port, p in zip(ports, procs, strict=True)]
            now = time.perf_counter()
            accepted = sum(v["counters"]["accepted"] for v in views)
            if first is None and sum(v["counters"]["records"] for v in views) > 0:
                first = (now, sum(cpu_seconds(p.pid) for p in procs))
            if stored(views):
                last = (now, accepted, sum(cpu_seconds(p.pid) for p in procs))
                break
            time.sleep(0.1)
        sender.join()
        if first is None or last is None:
            raise SystemExit(f"{workers} worker(s) did not drain {records} records in time")
        elapsed, cpu = last[0] - first[0], last[2] - first[1]
        per_worker = []
        for port, view in zip(ports, views, strict=True):
            c = view["counters"]
            per_worker.append(
                {
                    "port": port,
                    "partitions": members.get(f":{port}"),
                    "records": c["records"],
                    "accepted": c["accepted"],
                }
            )
        rss = max(rss_mb(p.pid) for p in procs)
        # The cluster stage (cluster windows from the sites' summaries, its own topic) runs
        # behind the site stage; wait for it too, so that the figure to "all committed" says
        # what it costs and the workers are stopped with nothing left to store.
        lag_topics = [topic, f"{group}-cluster-updates"]
        committed = None
        lag = -1
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            lag = group_lag(bootstrap, group, lag_topics)
            if lag == 0:
                committed = time.perf_counter()
                break
            for port, p in zip(ports, procs, strict=True):
                if p.poll() is not None:
                    raise SystemExit(f"the worker on :{port} exited with code {p.returncode}")
            time.sleep(0.5)
        points = counters(ports)[2]
    finally:
        stops = stop(procs, stop_grace_s)
    return {
        "records": records,
        "readings": readings,
        "rate": last[1] / elapsed if elapsed > 0 else float("nan"),
        "cpu_rate": last[1] / cpu if cpu > 0 else float("nan"),
        "seconds": elapsed,
        "all_committed_s": None if committed is None else committed - first[0],
        "lag_left": lag,
        "accepted": last[1],
        "rss_mb": rss,
        "points": points,
        "per_worker": per_worker,
        "stops": stops,
    }


def print_drain(label: str, r: dict[str, Any], grace_s: float) -> None:
    print(
        f"{label}: {r['rate']:,.0f} readings/s ({r['cpu_rate']:,.0f} per CPU-s) over "
        f"{r['seconds']:.0f} s, {r['accepted']:,} of {r['readings']:,} readings accepted, "
        f"RSS {r['rss_mb']:,.0f} MB (max per worker), InfluxDB points per reading "
        f"{per_reading(r['points'], r['accepted'])}",
        flush=True,
    )
    if r["all_committed_s"] is None:
        print(f"  cluster stage: {r['lag_left']:,} records still uncommitted after 10 min")
    else:
        total = r["all_committed_s"]
        print(
            f"  every offset committed, cluster stage included, {total - r['seconds']:.0f} s "
            f"after the last record was stored: {r['accepted'] / total:,.0f} readings/s to there",
            flush=True,
        )
    for i, w in enumerate(r["per_worker"], 1):
        parts = "?" if w["partitions"] is None else ",".join(map(str, w["partitions"]))
        print(
            f"  worker {i} (:{w['port']}, partitions {parts}): {w['records']:,} envelopes, "
            f"{w['accepted']:,} readings accepted",
            flush=True,
        )
    print(f"  {stops_text(r['stops'], grace_s)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=33)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--meters", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--intervals", type=int, default=3, help="backlog: intervals of every meter")
    ap.add_argument("--live-interval-s", type=int, default=60, help="metering interval, live")
    # 12 minutes: a site's year to date is rewritten at most every 10 minutes and its 15-min
    # windows once closed, so a shorter run would leave them out of the points per reading
    ap.add_argument("--live-seconds", type=float, default=720.0)
    ap.add_argument(
        "--stop-grace-s",
        type=float,
        default=30.0,
        help="after SIGTERM, how long a worker may take to store its batch before SIGKILL",
    )
    args = ap.parse_args()
    grace = args.stop_grace_s

    stack = LocalStack()
    stack.up(["influxdb", "kafka"])
    settings = Settings.from_stack_settings(stack.settings())
    # A batch under a backlog (up to 2,000 envelopes, 100,000 readings here) can take longer
    # than the worker's stall watchdog allows (60 s) when two workers, Kafka and InfluxDB
    # share two cores: the watchdog would take a slow batch for a stall and exit. The bench
    # wants the capacity, so it gives the watchdog more patience unless told otherwise.
    env_base = {"CLUSTERTWIN_STREAMS_STALL_S": "900", **os.environ, **stack.settings()}
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
        done, accepted, points = counters([port])
        lat = twin(port)["latency_ms"]
        print(
            f"live: produced {sent:,} envelopes in {produced_in:.0f} s "
            f"({accepted / produced_in:,.0f} readings/s accepted against the {rate:,.0f}/s "
            f"target); 3 s later the worker had processed {done:,} ({accepted:,} readings "
            f"accepted), lag {sent - done:,} envelopes; latency p50 {ms(lat['p50'])}, p99 "
            f"{ms(lat['p99'])}; RSS {rss_mb(proc.pid):,.0f} MB; InfluxDB points per reading "
            f"{per_reading(points, accepted)} ({points:,} points)",
            flush=True,
        )
        print(f"live: points per reading by measurement: {points_by_measurement(port, accepted)}")
    finally:
        live_stop = stop([proc], grace)
    print(f"  {stops_text(live_stop, grace)}", flush=True)

    # -- capacity: one worker, then two, draining the same backlog -----------------------
    feed = Feed(parsed, 900)
    k0 = (int(time.time() * 1000) - 2 * 86_400_000) // 900_000
    backlog = list(feed.envelopes(k0, args.intervals))
    print(
        f"backlog: {args.intervals} interval(s) of every meter = {len(backlog):,} envelopes, "
        f"{sum(n for _, _, n in backlog):,} readings, produced once the workers have their "
        f"partitions (workers' stall watchdog: {env_base['CLUSTERTWIN_STREAMS_STALL_S']} s)",
        flush=True,
    )
    # Each run has its own twin tag, so InfluxDB creates new series for both, as in a first
    # drain (writing into series that already exist, the live run's or the other run's, is
    # much cheaper and would flatter whichever run came second).
    one = drain(
        env_base, settings.kafka_bootstrap, f"{name}-1w", topics["one"], cat_file, 1,
        backlog, grace,
    )  # fmt: skip
    print_drain("1 worker", one, grace)
    if one["rate"] > 0:
        print(
            f"=> one worker keeps {one['rate'] * 900:,.0f} meters live at a 15-min interval, "
            f"{one['rate'] * 60:,.0f} at 1 min (this twin: {n_meters:,}, i.e. "
            f"{n_meters / 900 / one['rate']:.1%} / {n_meters / 60 / one['rate']:.0%} of one "
            "worker)",
            flush=True,
        )
    two = drain(
        env_base, settings.kafka_bootstrap, f"{name}-2w", topics["two"], cat_file, 2,
        backlog, grace,
    )  # fmt: skip
    print_drain(f"2 workers ({args.partitions} partitions)", two, grace)

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    def to_committed(r: dict[str, Any]) -> float:
        return r["accepted"] / r["all_committed_s"] if r["all_committed_s"] else float("nan")

    print(
        f"=> speed-up {ratio(two['rate'], one['rate']):.2f}x over 1 worker "
        f"({ratio(two['cpu_rate'], one['cpu_rate']):.2f}x per CPU-s; "
        f"{ratio(to_committed(two), to_committed(one)):.2f}x to all committed) on "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    killed = sum(k for r in (live_stop, one["stops"], two["stops"]) for _, k in r)
    print(f"stops: {killed} worker(s) of 4 needed SIGKILL (grace {grace:g} s)", flush=True)


if __name__ == "__main__":
    main()
