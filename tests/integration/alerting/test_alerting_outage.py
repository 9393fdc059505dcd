"""A Kafka outage is not the silence of the meters.

While the broker is down, connectors keep their readings and deliver them, with their own
timestamps, once it is back. The alerting worker must not take the quiet of the outage for
silent meters: its last-fetched end offsets say it has read everything, which is no longer
true. Real stack: live readings every second, the real broker stopped for longer than the
silence allowance, then the buffered readings delivered. No meter may be reported silent;
then the readings really stop, with the broker up, and every meter must be.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streams.alerting.simulate import SimCluster, SimMeter, SimSite
from tests.conftest import StackHandle
from tests.integration.alerting.test_alerting_stack import (
    _free_port,
    running,
    stream_worker_env,
    worker_env,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
INTERVAL_MS = 1000
SILENT_INTERVALS = 5  # a meter is silent after 5 s without a reading


class _Connector(threading.Thread):
    """Sends one envelope a second, live; while ``paused`` it buffers them, as a
    connector's disk buffer does during a broker outage, and sends them in order after."""

    def __init__(self, sim: SimCluster, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.sim, self.topic = sim, topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", retries=1_000, linger_ms=5
        )
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.idle = threading.Event()  # set while paused and not sending
        self.buffered = 0

    def run(self) -> None:
        start = int(time.time() * 1000)
        start -= start % INTERVAL_MS
        held: list[tuple[str, int, bytes]] = []
        for site, t, body in self.sim.envelopes(start, 10_000):
            while time.time() * 1000 < t:
                time.sleep(0.02)
            if self.stopped.is_set():
                return
            if self.paused.is_set():
                held.append((site, t, body))
                self.buffered += 1
                self.idle.set()
                continue
            self.idle.clear()
            for s, ts, b in [*held, (site, t, body)]:
                self.producer.send(self.topic, key=s.encode(), value=b, timestamp_ms=ts)
            held = []

    def close(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.join(timeout=10)
            self.producer.close()


def _influx_alerts(stack: StackHandle, twin: str) -> list[tuple[str, str, int]]:
    flux = (
        f'from(bucket: "{stack.influx_bucket}") |> range(start: -1h) '
        f'|> filter(fn: (r) => r._measurement == "alert_state" and r.twin == "{twin}" '
        'and r._field == "open") |> group()'
    )
    with stack.influx_client() as client:
        return [
            (r.values["kind"], r.values.get("meter") or "", int(r.get_value()))
            for table in client.query_api().query(flux)
            for r in table.records
        ]


def _counters(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/alerts/", timeout=5) as resp:
        return dict(json.loads(resp.read())["counters"])


def _wait(what: str, cond: Any, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


def test_a_kafka_outage_raises_no_silent_meter_alerts(
    stack: StackHandle, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name.lower().replace("_", "-")
    cluster = f"{name}-c"
    meters = tuple(SimMeter(f"{name}-m{j}", "natural_gas", 1.0 + j) for j in range(3))
    sim = SimCluster(cluster, (SimSite(f"{name}-s", meters),), interval_ms=INTERVAL_MS, noise=0.01)
    (tmp_path / "catalog.json").write_text(sim.catalog().to_json())
    (tmp_path / "pathways.json").write_text("{}")
    (tmp_path / "rules.yaml").write_text(
        f"expected_interval_s: {INTERVAL_MS / 1000}\nsilent_intervals: {SILENT_INTERVALS}\n"
    )
    readings = f"{name}-readings"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    admin.create_topics([NewTopic(readings, 1, 1)])
    admin.close()
    port = _free_port()
    env = worker_env(
        stack,
        name,
        tmp_path,
        readings=readings,
        alerts=f"{name}-alerts",
        clusters=cluster,
        port=port,
        CLUSTERTWIN_ALERTS_CONFIG_FILE=str(tmp_path / "rules.yaml"),
        CLUSTERTWIN_ALERTS_PARTITIONS="1",
        CLUSTERTWIN_ALERTS_WALL_CLOCK="1",
        # as in production, silence counts only once the broker has answered for this long
        # after an outage: time for the producers to deliver what they held (kafka-python
        # took up to ~10 s here to reconnect, and over 15 s once with the whole suite
        # loading both cores)
        CLUSTERTWIN_ALERTS_IDLE_S="25",
    )
    log_path = tmp_path / "worker.log"
    kafka = stack.local.services["kafka"]
    connector = _Connector(sim, stack.kafka_bootstrap, readings)
    # the stream worker prices the readings; the alerting worker reads what it priced
    twin_env = stream_worker_env(stack, name, tmp_path, readings=readings, clusters=cluster)
    with (
        running(["streams"], twin_env, tmp_path / "stream-worker.log"),
        open(log_path, "wb") as log,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.alerting", "worker", "-l", "warn"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            connector.start()
            # the worker reads the live readings and learns the meters' 1-s interval
            _wait("readings", lambda: _counters(port)["readings"] >= 30, 120, log_path)

            connector.paused.set()
            connector.idle.wait(10)
            connector.producer.flush(30)
            kafka.stop()
            # six silence allowances, and three of the worker's 10-s wall-clock checks, two of
            # them after IDLE_S without records
            time.sleep(30)
            kafka.start(print)
            assert connector.buffered >= 20
            connector.paused.clear()
            before = _counters(port)["readings"]
            # the held readings arrive (their own timestamps: no gap) and live ones follow
            _wait(
                "the readings held during the outage",
                lambda: _counters(port)["readings"] >= before + 3 * (connector.buffered + 10),
                180,
                log_path,
            )
            silent = [a for a in _influx_alerts(stack, name) if a[0] == "meter_silent"]
            assert silent == [], (
                f"silent meters reported during a Kafka outage: {silent}; worker log:\n"
                + log_path.read_text()[-3000:]
            )

            # now the meters really stop, with the broker up: each must be reported
            connector.close()
            _wait(
                "silent-meter alerts",
                lambda: (
                    {m for k, m, _ in _influx_alerts(stack, name) if k == "meter_silent"}
                    == {m.meter for m in meters}
                ),
                90,
                log_path,
            )
        finally:
            connector.close()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
