"""At-least-once with exact effects, proven against the real local stack.

Each test runs the worker as a subprocess on its own topics, consumer group and ``twin`` tag,
produces a known stream of envelopes, injects a fault mid-stream, and then requires every
window in InfluxDB (meter, site and cluster; 1 min, 15 min, 1 h) to equal the offline total
computed reading by reading from what was produced: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.streams.harness import (
    HEADERS,
    Generator,
    WorkerProc,
    all_complete,
    influx_windows,
    make_catalog,
    producer,
    summarize,
    wait_equal,
)

pytestmark = pytest.mark.integration


def _setup(stack, unique_name: str, tmp_path: Path, sites: int = 3, meters: int = 8):
    cluster = "tc" + unique_name[-8:]
    catalog = make_catalog(cluster, sites, meters)
    path = tmp_path / "catalog.json"
    path.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, path)
    # event time starts 2 h back: the run spans many 1-min and some 15-min windows, and
    # once the stream stops, the idle flush can close every one of them (1 h included)
    start = int(time.time() * 1000) - 2 * 3600_000
    gen = Generator(catalog, cluster, start_ms=start - start % 60_000 + 1234)
    return worker, gen


def _produce(prod, topic: str, gen: Generator, steps: int, pause: float = 0.0) -> None:
    for _ in range(steps):
        for site, value in gen.step():
            prod.send(topic, key=site.encode(), value=value, headers=HEADERS)
        if pause:
            time.sleep(pause)
    prod.flush(timeout=120)


def test_sigkill_mid_stream_and_restart_loses_and_duplicates_nothing(stack, unique_name, tmp_path):
    worker, gen = _setup(stack, unique_name, tmp_path)
    prod = producer(stack.kafka_bootstrap)
    try:
        worker.start()
        worker.wait_ready()
        _produce(prod, worker.readings_topic, gen, steps=40, pause=0.02)
        # kill while it is busy: more data is already waiting in Kafka
        _produce(prod, worker.readings_topic, gen, steps=40)
        worker.kill()
        _produce(prod, worker.readings_topic, gen, steps=40)
        worker.start()
        worker.wait_ready()
        _produce(prod, worker.readings_topic, gen, steps=20, pause=0.02)
        time.sleep(1.5)
        worker.kill()  # a second crash, shortly after recovery
        worker.start()
        worker.wait_ready()
        _produce(prod, worker.readings_topic, gen, steps=40, pause=0.01)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, gen.expected, 120)
            assert not problems, (
                f"generator start {gen.start}\n" + summarize(problems) + "\n" + worker.tail()
            )
            # every window that event time has passed is final
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                actual = influx_windows(client, stack.influx_bucket, worker.name)
                if all_complete(actual, passed_by=gen.t - gen.step_ms):
                    break
                time.sleep(2)
            assert all_complete(actual, passed_by=gen.t - gen.step_ms), "windows left open"
        site = gen.catalog.clusters[gen.cluster][0]
        twin = worker.get(f"/twin/{gen.cluster}/{site}/")
        assert twin["site"] == site and twin["duplicates"] == 0 and twin["late"] == 0
    finally:
        prod.close()
        worker.stop()


def test_kafka_restart_mid_stream_loses_and_duplicates_nothing(stack, unique_name, tmp_path):
    worker, gen = _setup(stack, unique_name, tmp_path)
    prod = producer(stack.kafka_bootstrap)
    kafka = stack.local.services["kafka"]
    try:
        worker.start()
        worker.wait_ready()
        _produce(prod, worker.readings_topic, gen, steps=50, pause=0.02)
        kafka.stop()
        time.sleep(3)
        kafka.start(print)
        # the worker reconnects by itself, or its watchdog sees no progress and exits and
        # it is restarted as a supervisor would; either way nothing is lost or doubled
        _produce(prod, worker.readings_topic, gen, steps=50, pause=0.01)
        with stack.influx_client() as client:
            problems = wait_equal(
                client, stack.influx_bucket, worker.name, gen.expected, 180, supervise=worker
            )
            assert not problems, summarize(problems) + "\n" + worker.tail()
    finally:
        prod.close()
        worker.stop()


def test_influxdb_outage_mid_stream_loses_and_duplicates_nothing(stack, unique_name, tmp_path):
    worker, gen = _setup(stack, unique_name, tmp_path)
    prod = producer(stack.kafka_bootstrap)
    influx = stack.local.services["influxdb"]
    try:
        worker.start()
        worker.wait_ready()
        _produce(prod, worker.readings_topic, gen, steps=40, pause=0.02)
        influx.stop()
        try:
            # readings keep coming while InfluxDB is down; longer than the idle flush, so a
            # backlog must not be mistaken for silence
            _produce(prod, worker.readings_topic, gen, steps=60, pause=0.05)
            time.sleep(12)
            status = worker.get("/twin/")
            assert status["sink"]["retries"] > 0 and status["sink"]["down_for_s"] is not None
        finally:
            influx.start(print)
        _produce(prod, worker.readings_topic, gen, steps=40, pause=0.01)
        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, gen.expected, 150)
            assert not problems, summarize(problems) + "\n" + worker.tail()
        assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
        site = gen.catalog.clusters[gen.cluster][1]
        assert worker.get(f"/twin/{gen.cluster}/{site}/")["late"] == 0
    finally:
        prod.close()
        worker.stop()
