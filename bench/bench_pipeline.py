"""Pipeline throughput and latency against the raw aiokafka rate, on the real local stack.

Prints, from one run:

* raw: readings/s at which aiokafka alone consumes (``getmany``) and decodes the envelopes
  of a topic, three times: orjson JSON only; orjson decoded into the columns the pipeline
  works on (timestamps, values, one code per meter/unit/carrier/quality), without any
  validation; and the same columns from msgspec typed structs, the decoder the worker uses.
  The orjson columns are the ratio's denominator (aiokafka + orjson is the raw consumer the
  target was set against); the ratio to the msgspec columns, the fastest raw consumer known
  here, is printed beside it;
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
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
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


@dataclass
class BenchRun:
    """A bench's own slice of the local stack: names, catalog file and topics."""

    settings: Settings
    env: dict[str, str]  # for worker subprocesses: this environment plus the stack's settings
    name: str
    cat: MeterCatalog
    cat_file: Path


def prepare_run(prefix: str, cluster: str, sites: int, meters: int, topics: list[str]) -> BenchRun:
    """Bring up Kafka and InfluxDB, write a catalog, create ``<name>-<topic>`` (4 partitions)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    stack = LocalStack()
    stack.up(["influxdb", "kafka"])
    settings = Settings.from_stack_settings(stack.settings())
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cat = catalog(cluster, sites, meters)
    cat_file = Path(tempfile.mkdtemp()) / "catalog.json"
    cat_file.write_text(cat.to_json())
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(f"{name}-{t}", 4, 1) for t in topics])
    admin.close()
    return BenchRun(settings, {**os.environ, **stack.settings()}, name, cat, cat_file)


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


class _Reading(msgspec.Struct, gc=False):
    meter: str
    ts: int
    value: int | float
    unit: str
    carrier: str
    quality: str


class _Envelope(msgspec.Struct, gc=False):
    readings: list[_Reading]


_TYPED = msgspec.json.Decoder(_Envelope)
_TS_ATTR = attrgetter("ts")
_VALUE_ATTR = attrgetter("value")
_KEY_ATTR = attrgetter("meter", "unit", "carrier", "quality")


def _typed_columns(values: list[bytes]) -> int:
    """``_columns`` with msgspec structs instead of orjson dicts."""
    total = 0
    readings: list[Any] = []
    for i, value in enumerate(values):
        readings.extend(_TYPED.decode(value).readings)
        if len(readings) >= 8192 or i == len(values) - 1:
            n = len(readings)
            np.fromiter(map(_TS_ATTR, readings), np.int64, n)
            np.fromiter(map(_VALUE_ATTR, readings), np.float64, n)
            np.fromiter(map(_CODES.__getitem__, map(_KEY_ATTR, readings)), np.int64, n)
            total += n
            readings = []
    return total


def _columns(values: list[bytes]) -> int:
    """Decode envelopes into the columns the pipeline works on, and nothing more.

    One orjson call per envelope, then per batch: timestamps (int64) and values (float64) as
    numpy arrays, and (meter, unit, carrier, quality) as one categorical code per reading,
    the same C-level passes as the worker's decoder but without any check.
    """
    total = 0
    readings: list[Any] = []
    for i, value in enumerate(values):
        readings.extend(orjson.loads(value)["readings"])
        # by chunks of ~8,000 readings, as the worker does: still in the CPU cache
        if len(readings) >= 8192 or i == len(values) - 1:
            n = len(readings)
            np.array(list(map(_TS, readings)), np.int64)
            np.array(list(map(_VALUE, readings)), np.float64)
            np.fromiter(map(_CODES.__getitem__, map(_KEY, readings)), np.int64, n)
            total += n
            readings = []
    return total


class _Codes(dict[tuple[str, str, str, str], int]):
    def __missing__(self, key: tuple[str, str, str, str]) -> int:
        self[key] = code = len(self)
        return code


_CODES = _Codes()
_TS = itemgetter("ts")
_VALUE = itemgetter("value")
_KEY = itemgetter("meter", "unit", "carrier", "quality")


#: what ``raw_rate`` can decode with, and how the benches name it
RAW_DECODERS = {
    "json": "orjson (JSON only)",
    "columns": "orjson + columns (ts, value, meter/unit/carrier/quality code)",
    "typed": "msgspec structs + columns",
}


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def raw_rate(
    bootstrap: str, topic: str, expect_records: int, decode: str
) -> tuple[float, int, float]:
    """Readings/s (wall clock, and per CPU-second) of aiokafka ``getmany`` + a decoder:
    ``json`` (orjson only), ``columns`` (orjson into columns) or ``typed`` (msgspec into
    columns). The ceiling of any consumer."""
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
        cpu_started = 0.0
        while records < expect_records:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
                cpu_started = time.process_time()
            for msgs in batch.values():
                if decode == "columns":
                    readings += _columns([m.value for m in msgs])
                elif decode == "typed":
                    readings += _typed_columns([m.value for m in msgs])
                else:
                    for m in msgs:
                        readings += len(orjson.loads(m.value)["readings"])
                records += len(msgs)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu_started
        return readings / elapsed, readings, readings / cpu
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
    env_base: dict[str, str], name: str, topic: str, cat_file: Path, repo: Path = REPO
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
        [sys.executable, "-m", "streams"], env=env, cwd=repo, stdout=log, stderr=log
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    env_base: dict[str, str], name: str, topic: str, cat_file: Path, envelopes: int, repo: Path
) -> tuple[float, int, float]:
    """(readings/s, readings accepted, readings per CPU-second) of one worker draining
    ``topic`` from the start."""
    proc, port = start_worker(env_base, name, topic, cat_file, repo)
    try:
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            c = get(port, "/twin/")["counters"]
            now = time.perf_counter()
            if first is None and c["records"] > 0:
                first = (now, c["accepted"], cpu_seconds(proc.pid))
            if c["records"] >= envelopes:
                last = (now, c["accepted"], cpu_seconds(proc.pid))
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise SystemExit("the worker did not process the envelopes in time")
        accepted = int(get(port, "/twin/")["counters"]["accepted"])
        elapsed = last[0] - first[0]
        cpu = last[2] - first[2]
        done = last[1] - first[1]
        return (
            done / elapsed if elapsed > 0 else float("nan"),
            accepted,
            done / cpu if cpu > 0 else float("nan"),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envelopes", type=int, default=2000)
    ap.add_argument("--readings", type=int, default=500, help="readings per envelope")
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--meters", type=int, default=50, help="meters per site")
    ap.add_argument("--rate", type=float, default=5000.0, help="readings/s for the latency run")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument(
        "--baseline-repo",
        type=Path,
        help="a directory holding another version of the streams/ package: its worker is "
        "measured on the same envelopes too (before/after, side by side)",
    )
    ap.add_argument(
        "--also-serial",
        action="store_true",
        help="measure this worker a second time with overlapped commits off "
        "(CLUSTERTWIN_STREAMS_OVERLAP_COMMITS=false), side by side",
    )
    args = ap.parse_args()

    cluster = "benchc"
    run = prepare_run("bench", cluster, args.sites, args.meters, ["throughput", "latency"])
    settings, env_base, name, cat, cat_file = (
        run.settings,
        run.env,
        run.name,
        run.cat,
        run.cat_file,
    )

    # -- throughput: the same envelopes, raw consumer vs one worker ------------------------
    topic = f"{name}-throughput"
    t0 = int(time.time() * 1000) - 3 * 86_400_000
    t0 -= t0 % 3_600_000
    print(f"producing {args.envelopes} envelopes x ~{args.readings} readings ...", flush=True)
    total = produce(
        settings.kafka_bootstrap,
        topic,
        envelopes(cat, cluster, args.envelopes, args.readings, t0, live=False),
    )
    rates: dict[str, tuple[float, float]] = {}
    for decode, label in RAW_DECODERS.items():
        rate, n, per_cpu = asyncio.run(
            raw_rate(settings.kafka_bootstrap, topic, args.envelopes, decode)
        )
        rates[decode] = (rate, per_cpu)
        print(
            f"raw aiokafka getmany + {label}: {rate:,.0f} readings/s, {per_cpu:,.0f} per CPU-s "
            f"({n:,} readings)",
            flush=True,
        )
    (raw_json, raw_json_cpu), (raw, raw_cpu), (typed, typed_cpu) = (
        rates["json"],
        rates["columns"],
        rates["typed"],
    )

    pipe = throughput(env_base, name, topic, cat_file, args.envelopes, REPO)
    print(
        f"pipeline (1 worker, Kafka -> InfluxDB): {pipe[0]:,.0f} readings/s, "
        f"{pipe[2]:,.0f} per CPU-s ({pipe[1]:,} of {total:,} readings accepted)"
    )
    print(
        f"ratio pipeline/raw (decoded into columns): {pipe[0] / raw:.0%} (target >= 50%), "
        f"per CPU-s {pipe[2] / raw_cpu:.0%}; pipeline/raw JSON only: {pipe[0] / raw_json:.0%}, "
        f"per CPU-s {pipe[2] / raw_json_cpu:.0%}; pipeline/raw msgspec columns: "
        f"{pipe[0] / typed:.0%}, per CPU-s {pipe[2] / typed_cpu:.0%}",
        flush=True,
    )
    if args.also_serial:
        serial = throughput(
            {**env_base, "CLUSTERTWIN_STREAMS_OVERLAP_COMMITS": "false"},
            f"{name}-serial",
            topic,
            cat_file,
            args.envelopes,
            REPO,
        )
        print(
            f"this worker, one batch at a time (overlapped commits off): {serial[0]:,.0f} "
            f"readings/s, {serial[2]:,.0f} per CPU-s; ratio to raw (columns) "
            f"{serial[0] / raw:.0%}; overlapping: {pipe[0] / serial[0]:.2f}x wall clock",
            flush=True,
        )
    if args.baseline_repo is not None:
        base = throughput(
            env_base, f"{name}-base", topic, cat_file, args.envelopes, args.baseline_repo
        )
        print(
            f"baseline worker ({args.baseline_repo}/streams), same envelopes: {base[0]:,.0f} "
            f"readings/s, {base[2]:,.0f} per CPU-s ({base[1]:,} accepted); ratio to raw "
            f"(columns) {base[0] / raw:.0%}, per CPU-s {base[2] / raw_cpu:.0%}; this worker: "
            f"{pipe[0] / base[0]:.2f}x wall clock, {pipe[2] / base[2]:.2f}x per CPU-s",
            flush=True,
        )

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
