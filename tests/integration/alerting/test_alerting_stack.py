"""Alerting end to end on the real local stack: simulated readings with injected faults go
through Kafka into the alerting worker (a real Faust process with its tables), and the alerts
come out on the ``alerts`` topic, in InfluxDB and in ``clustertwin alerts``.

Event time is accelerated: days of plant operation are produced in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streams.alerting.model import Alert
from streams.alerting.simulate import HOUR_MS, fault_scenario, noise_scenario
from streams.meter_vectors import MeterVectors
from tests.conftest import StackHandle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(
    stack: StackHandle,
    name: str,
    tmp_path: Path,
    *,
    readings: str,
    alerts: str,
    clusters: str,
    port: int,
    **extra: str,
) -> dict[str, str]:
    """Environment of an alerting worker on the local stack, named after the test, with the
    catalog and pathways the test wrote to ``tmp_path``; ``extra`` adds or overrides."""
    return {
        **os.environ,
        "CLUSTERTWIN_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "CLUSTERTWIN_READINGS_TOPIC": readings,
        "CLUSTERTWIN_INFLUX_URL": stack.influx_url,
        "CLUSTERTWIN_INFLUX_TOKEN": stack.influx_token,
        "CLUSTERTWIN_INFLUX_ORG": stack.influx_org,
        "CLUSTERTWIN_INFLUX_BUCKET": stack.influx_bucket,
        "CLUSTERTWIN_ALERTS_APP_ID": f"{name}-alerting",
        "CLUSTERTWIN_ALERTS_TWIN": name,
        "CLUSTERTWIN_ALERTS_ALERTS_TOPIC": alerts,
        "CLUSTERTWIN_ALERTS_CLUSTERS": clusters,
        "CLUSTERTWIN_ALERTS_CATALOG_FILE": str(tmp_path / "catalog.json"),
        "CLUSTERTWIN_ALERTS_PATHWAYS_FILE": str(tmp_path / "pathways.json"),
        "CLUSTERTWIN_ALERTS_WEB_PORT": str(port),
        "CLUSTERTWIN_ALERTS_DATADIR": str(tmp_path / "faust"),
        **extra,
    }


def stream_worker_env(
    stack: StackHandle, name: str, tmp_path: Path, *, readings: str, clusters: str, **extra: str
) -> dict[str, str]:
    """Environment of the stream worker in front of the alerting worker: it validates and
    prices the readings and publishes them on ``<readings>-priced``, which the alerting
    worker reads; the same catalog file as the alerting worker's."""
    return {
        **os.environ,
        "CLUSTERTWIN_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "CLUSTERTWIN_READINGS_TOPIC": readings,
        "CLUSTERTWIN_DEADLETTER_TOPIC": f"{name}-deadletter",
        "CLUSTERTWIN_INFLUX_URL": stack.influx_url,
        "CLUSTERTWIN_INFLUX_TOKEN": stack.influx_token,
        "CLUSTERTWIN_INFLUX_ORG": stack.influx_org,
        "CLUSTERTWIN_INFLUX_BUCKET": stack.influx_bucket,
        "CLUSTERTWIN_STREAMS_APP_ID": f"{name}-twin",
        "CLUSTERTWIN_STREAMS_TWIN": name,
        "CLUSTERTWIN_STREAMS_CLUSTERS": clusters,
        "CLUSTERTWIN_STREAMS_CATALOG_FILE": str(tmp_path / "catalog.json"),
        "CLUSTERTWIN_STREAMS_LATE_TOPIC": f"{name}-late",
        "CLUSTERTWIN_STREAMS_WEB_PORT": str(_free_port()),
        "CLUSTERTWIN_STREAMS_DATADIR": str(tmp_path / "faust-twin"),
        **extra,
    }


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[Any]:
    """A worker process (``python -m ...``) with its output in ``log_path``, stopped after."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def run(stack: StackHandle, unique_name: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Produce the scenarios to a fresh readings topic and run the stream worker and the
    alerting worker (which reads what the stream worker priced) on it."""
    name = unique_name.lower().replace("_", "-")
    start = (int(time.time() * 1000) // HOUR_MS - 5 * 24) * HOUR_MS
    fault = fault_scenario(start)
    noise = noise_scenario(start, days=4)
    catalog = MeterVectors([*fault.sim.catalog().specs, *noise.sim.catalog().specs])
    (tmp_path / "catalog.json").write_text(catalog.to_json())
    pathways = {
        k: {"years": y, "values": v} for sc in (fault, noise) for k, (y, v) in sc.pathways.items()
    }
    (tmp_path / "pathways.json").write_text(json.dumps(pathways))
    readings, alerts = f"{name}-readings", f"{name}-alerts"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    admin.create_topics([NewTopic(readings, 4, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=20, acks="all")
    import heapq

    n = 0
    for site, t, body in heapq.merge(
        fault.sim.envelopes(fault.start_ms, fault.n_intervals),
        noise.sim.envelopes(noise.start_ms, noise.n_intervals),
        key=lambda e: e[1],
    ):
        producer.send(
            readings,
            key=site.encode(),
            value=body,
            timestamp_ms=t,
            headers=[("clustertwin-schema", b"readings/1")],
        )
        n += 1
    producer.flush()
    producer.close()
    port = _free_port()
    env = worker_env(
        stack,
        name,
        tmp_path,
        readings=readings,
        alerts=alerts,
        clusters="fcluster,ncluster",
        port=port,
        CLUSTERTWIN_ALERTS_WALL_CLOCK="0",
    )
    twin_env = stream_worker_env(
        stack, name, tmp_path, readings=readings, clusters="fcluster,ncluster"
    )
    with (
        running(["streams"], twin_env, tmp_path / "stream-worker.log"),
        running(["streams.alerting", "worker", "-l", "warn"], env, tmp_path / "worker.log") as proc,
    ):
        yield {
            "alerts": alerts,
            "twin": name,
            "fault": fault,
            "noise": noise,
            "env": env,
            "proc": proc,
            "log": tmp_path / "worker.log",
            "twin_log": tmp_path / "stream-worker.log",
            "envelopes": n,
            "start": start,
        }


def _consume(bootstrap: str, topic: str, until: Any, timeout_s: float) -> list[Alert]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: list[Alert] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not consumer.assignment():
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    tps = [TopicPartition(topic, p) for p in parts]
                    consumer.assign(tps)
                    consumer.seek_to_beginning(*tps)
                else:
                    time.sleep(0.5)
                    continue
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(Alert.from_json(r.value) for r in recs)
            if until(out):
                break
    finally:
        consumer.close()
    return out


def test_faults_open_and_resolve_exactly_the_expected_alerts(
    stack: StackHandle, run: dict[str, Any]
) -> None:
    fault = run["fault"]
    expected = sorted((k, s) for k, s, _, _ in fault.expected)

    def done(evs: list[Alert]) -> bool:
        return sum(e.event == "resolve" for e in evs) >= len(expected)

    events = _consume(stack.kafka_bootstrap, run["alerts"], done, timeout_s=150)
    assert done(events), (
        f"only {[(e.event, e.kind.value, e.scope.label) for e in events]}; worker log:\n"
        + run["log"].read_text()[-3000:]
        + "\nstream worker log:\n"
        + run["twin_log"].read_text()[-3000:]
    )
    # give a straggler the chance to show up before asserting "exactly"
    time.sleep(3)
    events = _consume(stack.kafka_bootstrap, run["alerts"], lambda e: False, timeout_s=4)
    opens = sorted((e.kind.value, e.scope.label) for e in events if e.event == "open")
    resolves = sorted((e.kind.value, e.scope.label) for e in events if e.event == "resolve")
    assert opens == expected
    assert resolves == expected
    assert not [e for e in events if e.scope.cluster == "ncluster"], "alert on plain noise"
    for kind, scope, f_start, f_end in fault.expected:
        (o,) = [
            e
            for e in events
            if e.event == "open" and (e.kind.value, e.scope.label) == (kind, scope)
        ]
        (r,) = [e for e in events if e.event == "resolve" and e.id == o.id]
        assert f_start <= o.opened <= f_start + 3 * HOUR_MS
        assert r.resolved is not None and f_end <= r.resolved <= f_end + 2 * HOUR_MS
        assert o.twin == run["twin"] and o.explanation

    # InfluxDB: alert states and detector statistics, queryable for Grafana
    q = stack.influx_client().query_api()
    bucket = stack.influx_bucket
    flux = (
        f'from(bucket: "{bucket}") |> range(start: -8d) '
        f'|> filter(fn: (r) => r._measurement == "alert_state" and r.twin == "{run["twin"]}" '
        'and r._field == "open") |> group() '
    )
    rows = [(r.values["kind"], r.get_value()) for t in q.query(flux) for r in t.records]
    assert sorted(k for k, v in rows if v == 1 and k) and len([v for _, v in rows if v == 0]) == 5
    assert {k for k, v in rows if v == 0} == {k for k, _ in expected}
    flux = (
        f'from(bucket: "{bucket}") |> range(start: -8d) '
        f'|> filter(fn: (r) => r._measurement == "alert_detector" and r.twin == "{run["twin"]}" '
        'and r.site == "fsite0" and r._field == "cusum_hi") |> group() |> max()'
    )
    (peak,) = [r.get_value() for t in q.query(flux) for r in t.records]
    assert peak > 8.0  # the CUSUM crossed its threshold during the step

    # the command line
    from clustertwin.cli import main

    cli_env = {"CLUSTERTWIN_KAFKA_BOOTSTRAP": stack.kafka_bootstrap}
    runner = CliRunner()
    res = runner.invoke(
        main, ["alerts", "list", "--state", "all", "--json", "--topic", run["alerts"]], env=cli_env
    )
    assert res.exit_code == 0, res.output
    listed = [json.loads(line) for line in res.output.splitlines()]
    assert (
        sorted((d["kind"], "/".join(p for p in d["scope"].values() if p)) for d in listed)
        == expected
    )
    assert {d["state"] for d in listed} == {"resolved"}
    target = listed[0]["id"]
    res = runner.invoke(
        main, ["alerts", "ack", target[:8], "--by", "ops", "--topic", run["alerts"]], env=cli_env
    )
    assert res.exit_code == 0 and f"acknowledged {target}" in res.output, res.output
    res = runner.invoke(
        main, ["alerts", "list", "--state", "resolved", "--topic", run["alerts"]], env=cli_env
    )
    assert res.exit_code == 0
    row = next(line for line in res.output.splitlines() if line.startswith(target))
    assert row.rstrip().endswith("ops")
    res = runner.invoke(main, ["alerts", "ack", "zzzz", "--topic", run["alerts"]], env=cli_env)
    assert res.exit_code != 0 and "no alert with id" in res.output
