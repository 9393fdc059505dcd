"""Pipeline throughput and latency against the raw aiokafka rate, on the real local stack.

Prints, from one run:

* raw: readings/s at which aiokafka alone consumes (``getmany``) and decodes (orjson) the
  envelopes of a topic;
* pipeline: readings/s through one worker process on the same envelopes (Kafka in,
  validation, pricing, windows, tables, InfluxDB out), and the ratio (target >= 50%);
* latency at a fixed rate (default 5,000 readings/s): p50/p99 from a record's production
  (its Kafka CreateTime) to its points being stored in InfluxDB (target p99 < 2 s).

    .venv/bin/python bench/bench_pipeline.py [--envelopes 2000] [--readings 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clustertwin.settings import Settings  # noqa: E402
from clustertwin.stack import LocalStack  # noqa: E402
from streams.catalog import MeterCatalog, MeterSpec  # noqa: E402

HEADERS = [("content-type", b"application/json"), ("clustertwin-schema", b"readings/1")]


def catalog(cluster: str, sites: int, meters: int) -> MeterCatalog:
    kinds = [
        ("natural_gas", "MWh", 1.0, (0.20196, 0.0, 0.0, 0.0)),
        ("electricity", "kWh", 0.001, (0.0, 0.0000569, 0.000021, 0.0)),
        ("coke", "t", 7.8, (3.05, 0.0, 0.0, 0.0)),
    ]
    specs = []
    for s in range(sites):
        for m in range(meters):
            carrier, unit, mwh, f = kinds[(s + m) % len(kinds)]
            specs.append(MeterSpec(f"s{s}-m{m}", f"s{s}", cluster, carrier, {unit: (mwh, f)}))
    return MeterCatalog(specs)


def envelopes(cat: MeterCatalog, cluster: str, n: int, per_env: int, t0: int, live: bool):
    """``n`` envelopes of about ``per_env`` readings: each site polls all its meters at
    successive 1-s steps (timestamps strictly increasing per meter)."""
    sites = cat.clusters[cluster]
    step: dict[str, int] = dict.fromkeys(sites, 0)
    for i in range(n):
        site = sites[i % len(sites)]
        meters = [cat.specs[j] for j in cat.sites[(cluster, site)]]
        steps = max(1, per_env // len(meters))
        readings = []
        base = int(time.time() * 1000) if live else t0
        for k in range(steps):
            ts = base + (step[site] + k) * 1000 if not live else base - (steps - k)
            for spec in meters:
                unit = next(iter(spec.units))
                readings.append(
                    {
                        "meter": spec.meter,
                        "ts": ts,
                        "value": 10.0 + (i * 7 + k) % 13 * 0.37,
                        "unit": unit,
                        "carrier": spec.carrier,
                        "quality": "measured",
                    }
                )
        step[site] += steps
        yield (
            site,
            orjson.dumps(
                {
                    "schema": "readings/1",
                    "cluster": cluster,
                    "site": site,
                    "source": "bench",
                    "sent_at": int(time.time() * 1000),
                    "readings": readings,
                }
            ),
        )


def produce(bootstrap: str, topic: str, items, rate_readings: float | None = None) -> int:
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=16_777_216,
        batch_size=1_048_576,
    )
    total = 0
    started = time.monotonic()
    for site, value in items:
        n = value.count(b'"meter"')
        p.send(topic, key=site.encode(), value=value, headers=HEADERS)
        total += n
        if rate_readings:
            ahead = total / rate_readings - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    p.flush()
    p.close()
    return total


async def raw_rate(bootstrap: str, topic: str, expect_records: int) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=52_428_800,
        max_partition_fetch_bytes=16_777_216,
    )
    await consumer.start()
    try:
        records = readings = 0
        started = None
        while records < expect_records:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    readings += len(orjson.loads(m.value)["readings"])
                records += len(msgs)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        return readings / elapsed, readings
    finally:
        await consumer.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return orjson.loads(r.read())


def start_worker(
    env_base: dict[str, str], name: str, topic: str, cat_file: Path
) -> tuple[Any, int]:
    port = free_port()
    env = {
        **env_base,
        "CLUSTERTWIN_READINGS_TOPIC": topic,
        "CLUSTERTWIN_DEADLETTER_TOPIC": f"{name}-dl",
        "CLUSTERTWIN_STREAMS_LATE_TOPIC": f"{name}-late",
        "CLUSTERTWIN_STREAMS_APP_ID": f"{name}-{topic}",
        "CLUSTERTWIN_STREAMS_TWIN": name,
        "CLUSTERTWIN_STREAMS_CATALOG_FILE": str(cat_file),
        "CLUSTERTWIN_STREAMS_WEB_PORT": str(port),
        "CLUSTERTWIN_STREAMS_BATCH_WITHIN_S": "0.05",
    }
    log = open(f"/tmp/{name}-{topic}-worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams"], env=env, cwd=REPO, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            get(port, "/twin/")
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited; see /tmp/{name}-{topic}-worker.log") from None
            time.sleep(0.3)
    raise SystemExit("worker did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envelopes", type=int, default=2000)
    ap.add_argument("--readings", type=int, default=500, help="readings per envelope")
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--meters", type=int, default=50, help="meters per site")
    ap.add_argument("--rate", type=float, default=5000.0, help="readings/s for the latency run")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    args = ap.parse_args()

    stack = LocalStack()
    stack.up(["influxdb", "kafka"])
    settings = Settings.from_stack_settings(stack.settings())
    env_base = {**os.environ, **stack.settings()}
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cluster = "benchc"
    cat = catalog(cluster, args.sites, args.meters)
    cat_file = Path(tempfile.mkdtemp()) / "catalog.json"
    cat_file.write_text(cat.to_json())

    # -- throughput: the same envelopes, raw consumer vs one worker ------------------------
    topic = f"{name}-throughput"
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{name}-latency", 4, 1)])
    admin.close()
    t0 = int(time.time() * 1000) - 3 * 86_400_000
    t0 -= t0 % 3_600_000
    print(f"producing {args.envelopes} envelopes x ~{args.readings} readings ...", flush=True)
    total = produce(
        settings.kafka_bootstrap,
        topic,
        envelopes(cat, cluster, args.envelopes, args.readings, t0, live=False),
    )
    raw, raw_n = asyncio.run(raw_rate(settings.kafka_bootstrap, topic, args.envelopes))
    print(f"raw aiokafka getmany + orjson: {raw:,.0f} readings/s ({raw_n:,} readings)", flush=True)

    proc, port = start_worker(env_base, name, topic, cat_file)
    try:
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            c = get(port, "/twin/")["counters"]
            now = time.perf_counter()
            if first is None and c["records"] > 0:
                first = (now, c["accepted"])
            if c["records"] >= args.envelopes:
                last = (now, c["accepted"])
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise SystemExit("the worker did not process the envelopes in time")
        accepted = get(port, "/twin/")["counters"]["accepted"]
        elapsed = last[0] - first[0]
        pipe = (last[1] - first[1]) / elapsed if elapsed > 0 else float("nan")
        print(
            f"pipeline (1 worker, Kafka -> InfluxDB): {pipe:,.0f} readings/s "
            f"({accepted:,} of {total:,} readings accepted)"
        )
        print(f"ratio pipeline/raw: {pipe / raw:.0%} (target >= 50%)", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    # -- latency at a fixed rate ----------------------------------------------------------
    topic = f"{name}-latency"
    proc, port = start_worker(env_base, name, topic, cat_file)
    try:
        n_env = int(args.rate * args.latency_seconds / args.readings)
        per = max(1, args.readings)
        print(f"latency run: {args.rate:,.0f} readings/s for {args.latency_seconds:.0f} s ...")
        produce(
            settings.kafka_bootstrap,
            topic,
            envelopes(cat, cluster, n_env, per, 0, live=True),
            rate_readings=args.rate,
        )
        time.sleep(3)
        lat = get(port, "/twin/")["latency_ms"]
        print(
            f"latency production -> stored in InfluxDB: p50 {lat['p50']:.0f} ms, "
            f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms over {lat['n']} records "
            f"(target p99 < 2000 ms)"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
