"""Pipeline throughput and latency against the raw aiokafka rate, on the real local stack.

Prints, from one run:

* raw: readings/s at which aiokafka alone consumes (``getmany``) and decodes the envelopes
  of a topic, each time in a fresh process as the workers are, three ways: orjson JSON
  only; orjson decoded into the columns the pipeline works on (timestamps, values, one code
  per meter/unit/carrier/quality), without any validation; and the same columns from
  msgspec typed structs, the decoder the worker uses.
  The orjson columns are the ratio's denominator (aiokafka + orjson is the raw consumer the
  target was set against); the ratio to the msgspec columns, the fastest raw consumer known
  here, is printed beside it;
* pipeline: readings/s through one worker process on the same envelopes (Kafka in,
  validation, pricing, windows, tables, InfluxDB out), and the ratio (target >= 50%);
* the workers run as they ship (batch wait ``CLUSTERTWIN_STREAMS_BATCH_WITHIN_S``
  included: it sets how many records a batch holds under a backlog, and so how often the
  open windows are rewritten; ``--batch-within-s`` measures another value);
* every throughput figure is measured ``--rounds`` times (default 3), raw and worker runs
  interleaved, and the ratios are of the medians (on this shared 2-core VM one round's
  ratio can be half another's);
* latency at a fixed rate (default 5,000 readings/s): p50/p99 from a record's production
  (its Kafka CreateTime) to its points being stored in InfluxDB (target p99 < 2 s).

    .venv/bin/python bench/bench_pipeline.py [--envelopes 2000] [--readings 500]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import socket
import statistics
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

from clustertwin.stack import LocalStack  # noqa: E402
from clustertwin_base.kafka_topics import delete_topics  # noqa: E402
from clustertwin_base.settings import Settings  # noqa: E402
from streams.config import StreamSettings  # noqa: E402
from streams.envelope import _typed_decoder as typed_decoder  # noqa: E402
from streams.meter_vectors import MeterSpec, MeterVectors  # noqa: E402

BATCH_WITHIN_DEFAULT = StreamSettings.model_fields["batch_within_s"].default

HEADERS = [("content-type", b"application/json"), ("clustertwin-schema", b"readings/1")]


def catalog(cluster: str, sites: int, meters: int) -> MeterVectors:
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
    return MeterVectors(specs)


@dataclass
class BenchRun:
    """A bench's own slice of the local stack: names, catalog file and topics."""

    settings: Settings
    env: dict[str, str]  # for worker subprocesses: this environment plus the stack's settings
    name: str
    cat: MeterVectors
    cat_file: Path


def prepare_run(prefix: str, cluster: str, sites: int, meters: int, topics: list[str]) -> BenchRun:
    """Bring up Kafka and InfluxDB, write a catalog, create ``<name>-<topic>`` (4 partitions).

    Every topic named ``<name>-...`` (these, and the ones its workers create) is deleted when
    the bench exits: a worker fetches the metadata of every topic on the broker, and on a
    broker left holding a thousand topics of earlier runs that alone cost a worker several
    percent of its throughput.
    """
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
    held = len(admin.list_topics())
    admin.close()
    print(f"the broker holds {held} topics", flush=True)
    if held > 200:
        print(
            "  (left by earlier runs and tests? a worker parses the metadata of every topic "
            "while it starts, which slows the first seconds of a drain: figures taken on "
            "this broker are not comparable with those of a clean one)",
            flush=True,
        )
    atexit.register(drop_topics, settings.kafka_bootstrap, name)
    return BenchRun(settings, {**os.environ, **stack.settings()}, name, cat, cat_file)


def drop_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics whose names start with ``prefix``."""
    try:
        delete_topics(bootstrap, prefixes=(prefix,))
    except Exception as exc:
        print(f"could not delete the bench's topics {prefix}-*: {exc!r}", file=sys.stderr)


def envelopes(cat: MeterVectors, cluster: str, n: int, per_env: int, t0: int, live: bool):
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


def _typed_columns(values: list[bytes], decoder: Any) -> int:
    """``_columns`` with msgspec structs instead of orjson dicts."""
    total = 0
    readings: list[Any] = []
    for i, value in enumerate(values):
        readings.extend(decoder.decode(value).readings)
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


#: the workers ``bench_pipeline`` can measure beside the raw rates
VARIANT_LABELS = {
    "pipe": "pipeline (1 worker, Kafka -> InfluxDB)",
    "serial": "the same worker, one batch at a time (overlapped commits off)",
    "base": "baseline worker (--baseline-repo), same envelopes",
}

#: what ``raw_rate`` can decode with, and how the benches name it
RAW_DECODERS = {
    "json": "orjson (JSON only)",
    "columns": "orjson + columns (ts, value, meter/unit/carrier/quality code)",
    "typed": "msgspec structs (the worker's decoder) + columns",
}


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def raw_rate(
    bootstrap: str,
    topic: str,
    expect_records: int,
    decode: str,
    catalog: MeterVectors | None = None,
) -> tuple[float, int, float]:
    """Readings/s (wall clock, and per CPU-second) of aiokafka ``getmany`` + a decoder:
    ``json`` (orjson only), ``columns`` (orjson into columns) or ``typed`` (msgspec into
    columns; with ``catalog``, the worker's own decoder, whose meters, carriers and
    qualities are literals). The ceiling of any consumer."""
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
    typed = _TYPED if catalog is None else typed_decoder(catalog)
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
                    readings += _typed_columns([m.value for m in msgs], typed)
                else:
                    for m in msgs:
                        readings += len(orjson.loads(m.value)["readings"])
                records += len(msgs)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu_started
        return readings / elapsed, readings, readings / cpu
    finally:
        await consumer.stop()


def raw_rate_fresh(
    bootstrap: str, topic: str, expect_records: int, decode: str, cat_file: Path | None = None
) -> tuple[float, int, float]:
    """``raw_rate`` in a process of its own, started for it, as every worker is.

    Measured inside the bench's process, the raw consumer inherited the heap of everything
    the bench had done before (producing the envelopes, earlier rounds): its rate fell from
    ~850k to ~500k readings/s on 3 M readings, which made the worker's ratio look better.
    """
    code = (
        "import asyncio, json, sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import bench_pipeline as bp; from streams.meter_vectors import MeterVectors; "
        "a = json.loads(sys.argv[1]); "
        "cat = MeterVectors.from_file(Path(a['cat'])) if a['cat'] else None; "
        "print(json.dumps(asyncio.run(bp.raw_rate(a['bootstrap'], a['topic'], a['n'], "
        "a['decode'], cat))))"
    )
    spec = {
        "bootstrap": bootstrap,
        "topic": topic,
        "n": expect_records,
        "decode": decode,
        "cat": str(cat_file) if cat_file else None,
    }
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    rate, n, per_cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return float(rate), int(n), float(per_cpu)


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
) -> tuple[float, int, float, float]:
    """(readings/s, readings accepted, readings per CPU-second, records per batch) of one
    worker draining ``topic`` from the start.

    Timed by the worker itself, from the moment its first batch began to the moment its last
    one was stored (``first_batch_*``/``last_batch_*`` in its counters), as the raw rate is
    timed from its first fetched batch: a window between two polls of the counters would
    miss the first batch, or count one computed before the window opened, and with batches
    of a thousand records (a third of the backlog) either is a third of the figure.

    Records per batch is printed because it moves the cost: how many records Faust hands
    over at once depends on how far its fetcher got, and each batch rewrites the open
    windows it touches."""
    proc, port = start_worker(env_base, name, topic, cat_file, repo)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            c = get(port, "/twin/")["counters"]
            if c["records"] >= envelopes:
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the worker did not process the envelopes in time")
        if "first_batch_wall" not in c:
            raise SystemExit(f"{repo}/streams is too old for this bench (no first_batch_wall)")
        elapsed = c["last_batch_wall"] - c["first_batch_wall"]
        cpu = c["last_batch_cpu"] - c["first_batch_cpu"]
        done = c["accepted"]
        return (
            done / elapsed if elapsed > 0 else float("nan"),
            done,
            done / cpu if cpu > 0 else float("nan"),
            c["records"] / max(1, c["batches"]),
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
        "--batch-within-s",
        type=float,
        help="the workers' CLUSTERTWIN_STREAMS_BATCH_WITHIN_S (how long a batch may wait to "
        "fill); default: the worker's own",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every rate this many times, interleaved, and compare medians",
    )
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

    if args.batch_within_s is not None:
        env_base = {**env_base, "CLUSTERTWIN_STREAMS_BATCH_WITHIN_S": str(args.batch_within_s)}
    within = float(env_base.get("CLUSTERTWIN_STREAMS_BATCH_WITHIN_S", BATCH_WITHIN_DEFAULT))
    print(f"workers wait up to {within} s to fill a batch (CLUSTERTWIN_STREAMS_BATCH_WITHIN_S)")

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
    # The machine's other load (InfluxDB compacting, the page cache, the VM's neighbours)
    # moves single drains a lot: every measurement is taken ``--rounds`` times,
    # interleaved, and the ratios are of medians.
    runs: dict[str, list[tuple[float, float]]] = {}

    def measured(key: str, figures: tuple[float, float]) -> None:
        runs.setdefault(key, []).append(figures)

    variants: list[tuple[str, str, dict[str, str], Path]] = [("pipe", name, env_base, REPO)]
    if args.also_serial:
        serial_env = {**env_base, "CLUSTERTWIN_STREAMS_OVERLAP_COMMITS": "false"}
        variants.append(("serial", f"{name}-serial", serial_env, REPO))
    if args.baseline_repo is not None:
        variants.append(("base", f"{name}-base", env_base, args.baseline_repo))
    for round_no in range(1, args.rounds + 1):
        for decode, label in RAW_DECODERS.items():
            rate, n, per_cpu = raw_rate_fresh(
                settings.kafka_bootstrap, topic, args.envelopes, decode, cat_file
            )
            measured(decode, (rate, per_cpu))
            print(
                f"[round {round_no}] raw aiokafka getmany + {label}: {rate:,.0f} readings/s, "
                f"{per_cpu:,.0f} per CPU-s ({n:,} readings)",
                flush=True,
            )
        for key, worker_name, env, repo in variants:
            rate, accepted, per_cpu, per_batch = throughput(
                env, f"{worker_name}-r{round_no}", topic, cat_file, args.envelopes, repo
            )
            measured(key, (rate, per_cpu))
            print(
                f"[round {round_no}] {VARIANT_LABELS[key]}: {rate:,.0f} readings/s, "
                f"{per_cpu:,.0f} per CPU-s ({accepted:,} of {total:,} readings accepted, "
                f"{per_batch:.0f} records a batch)",
                flush=True,
            )

    def median(key: str) -> tuple[float, float]:
        return (
            statistics.median(r[0] for r in runs[key]),
            statistics.median(r[1] for r in runs[key]),
        )

    (raw_json, raw_json_cpu), (raw, raw_cpu), (typed, typed_cpu) = (
        median("json"),
        median("columns"),
        median("typed"),
    )
    pipe = median("pipe")
    print(f"medians of {args.rounds} rounds:")
    for key in runs:
        rate, per_cpu = median(key)
        label = RAW_DECODERS.get(key) or VARIANT_LABELS[key]
        print(f"  {label}: {rate:,.0f} readings/s, {per_cpu:,.0f} per CPU-s")
    print(
        f"ratio pipeline/raw (decoded into columns): {pipe[0] / raw:.0%} (target >= 50%), "
        f"per CPU-s {pipe[1] / raw_cpu:.0%}; pipeline/raw JSON only: {pipe[0] / raw_json:.0%}, "
        f"per CPU-s {pipe[1] / raw_json_cpu:.0%}; pipeline/raw msgspec columns: "
        f"{pipe[0] / typed:.0%}, per CPU-s {pipe[1] / typed_cpu:.0%}",
        flush=True,
    )
    per_round = [p[0] / r[0] for p, r in zip(runs["pipe"], runs["columns"], strict=True)]
    print(
        "ratio pipeline/raw (columns) round by round: " + ", ".join(f"{x:.0%}" for x in per_round),
        flush=True,
    )
    if args.also_serial:
        serial = median("serial")
        print(
            f"overlapped commits: {pipe[0] / serial[0]:.2f}x wall clock over one batch at a "
            f"time; ratio to raw (columns) without them {serial[0] / raw:.0%}",
            flush=True,
        )
    if args.baseline_repo is not None:
        base = median("base")
        print(
            f"this worker against the baseline ({args.baseline_repo}/streams): "
            f"{pipe[0] / base[0]:.2f}x wall clock, {pipe[1] / base[1]:.2f}x per CPU-s; the "
            f"baseline's ratio to raw (columns) {base[0] / raw:.0%}",
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
