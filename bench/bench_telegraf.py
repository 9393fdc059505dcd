"""The worker against Telegraf's kafka_consumer -> InfluxDB path, on the same messages.

Telegraf is the usual way to land Kafka JSON in InfluxDB without code. Here it parses each
envelope with its json_v2 parser (one point per reading: meter/unit/carrier/quality and the
envelope's cluster/site as tags, value as field, the reading's timestamp) and writes the
points to the stack's InfluxDB 1.8; it does none of the worker's work (no validation, no
dead letters, no pricing, no windows, no twin state, no at-least-once bookkeeping). So this
compares the cost of landing raw readings with the cost of keeping the live twin.

Prints, on the same topic, in one run: raw aiokafka (JSON only and into columns), Telegraf
(readings/s from its first point to its last, counted in InfluxDB, and per CPU-second) and
one worker (as bench_pipeline measures it).

Telegraf is not packaged in Debian; build it once from the Go module (about 7 min here,
only the three plugins needed) and pass ``--telegraf`` or put it at the default place:

    GOFLAGS=-buildvcs=false go mod download github.com/influxdata/telegraf@v1.37.2
    cd "$(go env GOMODCACHE)/github.com/influxdata/telegraf@v1.37.2" && go build \\
      -tags "custom,inputs.kafka_consumer,outputs.influxdb,parsers.json_v2" \\
      -o ~/.cache/clustertwin/telegraf/telegraf ./cmd/telegraf

Without the binary the bench says so and compares with the raw aiokafka consumer only.

    .venv/bin/python bench/bench_telegraf.py [--envelopes 2000] [--readings 500]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import (  # noqa: E402
    cpu_seconds,
    envelopes,
    prepare_run,
    produce,
    raw_rate_fresh,
    throughput,
)

from clustertwin_base.settings import Settings  # noqa: E402

DEFAULT_TELEGRAF = Path.home() / ".cache" / "clustertwin" / "telegraf" / "telegraf"

CONFIG = """
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 5000
  metric_buffer_limit = 2000000
  omit_hostname = true
  quiet = true

[[inputs.kafka_consumer]]
  brokers = ["{bootstrap}"]
  topics = ["{topic}"]
  consumer_group = "{group}"
  offset = "oldest"
  max_message_len = 16000000
  max_undelivered_messages = 2000
  data_format = "json_v2"
  [[inputs.kafka_consumer.json_v2]]
    measurement_name = "{measurement}"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "cluster"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "site"
    [[inputs.kafka_consumer.json_v2.object]]
      path = "readings"
      timestamp_key = "ts"
      timestamp_format = "unix_ms"
      tags = ["meter", "unit", "carrier", "quality"]
      [inputs.kafka_consumer.json_v2.object.fields]
        value = "float"

[[outputs.influxdb]]
  urls = ["{influx_url}"]
  database = "{database}"
  retention_policy = "{rp}"
  skip_database_creation = true
  username = "${{CT_BENCH_INFLUX_USER}}"
  password = "${{CT_BENCH_INFLUX_PASSWORD}}"
  content_encoding = "gzip"
  timeout = "30s"
"""


def influx_query(settings: Settings, db: str, q: str, method: str = "GET") -> dict:
    qs = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"})
    req = urllib.request.Request(
        f"{settings.influx_url}/query?{qs}",
        method=method,
        headers={"Authorization": f"Token {settings.require_influx_token()}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        data: dict = json.loads(r.read())
    return data


def count_points(settings: Settings, db: str, measurement: str) -> int:
    res = influx_query(settings, db, f'SELECT count("value") FROM "{measurement}"')
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def run_telegraf(
    binary: Path, settings: Settings, topic: str, measurement: str, expect: int
) -> tuple[float, float, int]:
    """(readings/s, readings per CPU-s, points stored) of Telegraf landing the topic."""
    db, _, rp = settings.influx_bucket.partition("/")
    user, _, password = settings.require_influx_token().partition(":")
    conf = Path(tempfile.mkdtemp()) / "telegraf.conf"
    conf.write_text(
        CONFIG.format(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group=f"{measurement}-group",
            measurement=measurement,
            influx_url=settings.influx_url,
            database=db,
            rp=rp or "autogen",
        )
    )
    # credentials through the environment, never in the file
    env = {**os.environ, "CT_BENCH_INFLUX_USER": user, "CT_BENCH_INFLUX_PASSWORD": password}
    log = open(f"/tmp/{measurement}-telegraf.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([str(binary), "--config", str(conf)], env=env, stdout=log, stderr=log)
    try:
        first = last = None
        deadline = time.monotonic() + 900
        n = 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"telegraf exited; see /tmp/{measurement}-telegraf.log")
            n = count_points(settings, db, measurement)
            now = time.perf_counter()
            if first is None and n > 0:
                first = (now, n, cpu_seconds(proc.pid))
            if n >= expect:
                last = (now, n, cpu_seconds(proc.pid))
                break
            time.sleep(0.5)
        if first is None or last is None:
            raise SystemExit(
                f"telegraf stored {n:,} of {expect:,} points in time; "
                f"see /tmp/{measurement}-telegraf.log"
            )
        elapsed, cpu = last[0] - first[0], last[2] - first[2]
        done = last[1] - first[1]
        keys = influx_query(settings, db, f'SHOW TAG KEYS FROM "{measurement}"')["results"][0]
        tags = [v[0] for v in keys.get("series", [{}])[0].get("values", [])]
        print(f"telegraf: points tagged {', '.join(tags)}", flush=True)
        if elapsed <= 0 or done <= 0:
            raise SystemExit("telegraf landed everything between two polls: use more --envelopes")
        return done / elapsed, done / cpu if cpu > 0 else float("nan"), last[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        influx_query(settings, db, f'DROP MEASUREMENT "{measurement}"', method="POST")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envelopes", type=int, default=2000)
    ap.add_argument("--readings", type=int, default=500, help="readings per envelope")
    ap.add_argument("--telegraf", type=Path, default=DEFAULT_TELEGRAF)
    ap.add_argument("--no-worker", action="store_true", help="skip the worker's run")
    args = ap.parse_args()

    run = prepare_run("tg", "benchc", 20, 50, ["readings"])
    settings, env_base, name, cat, cat_file = (
        run.settings,
        run.env,
        run.name,
        run.cat,
        run.cat_file,
    )
    topic = f"{name}-readings"
    t0 = int(time.time() * 1000) - 3 * 86_400_000
    t0 -= t0 % 3_600_000
    print(f"producing {args.envelopes} envelopes x ~{args.readings} readings ...", flush=True)
    total = produce(
        settings.kafka_bootstrap,
        topic,
        envelopes(cat, "benchc", args.envelopes, args.readings, t0, live=False),
    )
    raw_json, _, raw_json_cpu = raw_rate_fresh(
        settings.kafka_bootstrap, topic, args.envelopes, "json"
    )
    raw, _, raw_cpu = raw_rate_fresh(settings.kafka_bootstrap, topic, args.envelopes, "columns")
    print(
        f"raw aiokafka + orjson: JSON only {raw_json:,.0f} readings/s ({raw_json_cpu:,.0f} per "
        f"CPU-s); into columns {raw:,.0f} readings/s ({raw_cpu:,.0f} per CPU-s)",
        flush=True,
    )
    if not args.telegraf.is_file():
        print(
            f"telegraf: no binary at {args.telegraf} (not packaged in Debian; see this file's "
            f"docstring to build it from the Go module): compared with raw aiokafka only",
            flush=True,
        )
    elif not run.env.get("CLUSTERTWIN_INFLUX_VERSION", "1.").startswith("1."):
        print("telegraf: this bench drives InfluxDB 1.8 (outputs.influxdb) only; skipped")
    else:
        version = subprocess.run(
            [str(args.telegraf), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        tg, tg_cpu, stored = run_telegraf(
            args.telegraf, settings, topic, f"telegraf_{name.replace('-', '_')}", total
        )
        print(
            f"{version} kafka_consumer(json_v2) -> outputs.influxdb: {tg:,.0f} readings/s "
            f"({tg_cpu:,.0f} per CPU-s), {stored:,} of {total:,} points stored; "
            f"{tg / raw:.0%} of raw (columns)",
            flush=True,
        )
    if not args.no_worker:
        pipe, accepted, pipe_cpu, _ = throughput(
            env_base, name, topic, cat_file, args.envelopes, REPO
        )
        print(
            f"worker (validate, price, windows, twin state, at-least-once): {pipe:,.0f} "
            f"readings/s ({pipe_cpu:,.0f} per CPU-s), {accepted:,} accepted; "
            f"{pipe / raw:.0%} of raw (columns)",
            flush=True,
        )


if __name__ == "__main__":
    main()
