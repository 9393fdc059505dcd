"""Many faults in one run of the real worker, and still exact totals.

The integration tests in ``tests/integration/streams`` inject one fault each. Here one worker
(a subprocess) consumes a steady stream while, at seeded random moments, it is killed with
SIGKILL five times (each time started again at once, as its supervisor would, so some kills
land while it is still recovering), Kafka is restarted once and InfluxDB is stopped for 60 s.
Afterwards every window (meter, site, cluster x 1 min, 15 min, 1 h), every year-to-date and
every meter's latest reading in InfluxDB equals the offline figure computed reading by
reading; no reading is dead-lettered, late or taken for a duplicate; every window closes.

Only the stack of this test session is affected (``CLUSTERTWIN_STACK_PORT_OFFSET``).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.integration.streams.harness import (
    HEADERS,
    Generator,
    WorkerProc,
    all_complete,
    compare_ytd_latest,
    influx_windows,
    make_catalog,
    producer,
    summarize,
    topic_size,
    wait_equal,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

STEPS = 700  # one envelope per site per step, 5 s of event time each
PACE_S = 0.13  # wall time between steps: about 90 s of production
KILLS = 5
INFLUX_DOWN_S = 60.0
MIN_GAP_S = 4.0


def schedule(rng: random.Random, duration: float) -> list[tuple[float, str]]:
    """Fault times (s from the start of production): one kill at a random moment in each
    fifth of the run, the Kafka restart in its first third, the InfluxDB outage around
    its middle (kills may land inside it)."""
    seg = duration / KILLS
    events = [(rng.uniform(k * seg + 2, (k + 1) * seg - 2), "kill") for k in range(KILLS)]
    events.append((rng.uniform(0.1, 0.3) * duration, "restart kafka"))
    down = rng.uniform(0.35, 0.5) * duration
    events += [(down, "stop influxdb"), (down + INFLUX_DOWN_S, "start influxdb")]
    return sorted(events)


@pytest.mark.timeout(600)
def test_five_sigkills_a_kafka_restart_and_a_60s_influxdb_outage_in_one_run(
    stack, unique_name, tmp_path: Path
):
    cluster = "rf" + unique_name[-8:]
    catalog = make_catalog(cluster, 4, 8)
    path = tmp_path / "catalog.json"
    path.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, path)
    start = int(time.time() * 1000) - 2 * 3600_000
    gen = Generator(catalog, cluster, start_ms=start - start % 60_000 + 1234)
    rng = random.Random(20261130)
    events = schedule(rng, STEPS * PACE_S)
    kafka = stack.local.services["kafka"]
    influx = stack.local.services["influxdb"]
    prod = producer(stack.kafka_bootstrap)
    done: list[str] = []
    self_exits: list[int | None] = []

    def produce() -> None:
        for _ in range(STEPS):
            for site, value in gen.step():
                prod.send(worker.readings_topic, key=site.encode(), value=value, headers=HEADERS)
            time.sleep(PACE_S)
        prod.flush(timeout=300)

    def supervise() -> None:
        """Restart the worker if it exited by itself (its watchdog, after Kafka's restart)."""
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            self_exits.append(worker.proc.returncode)
            worker.restarts += 1
            worker.start()

    influx_down = False
    try:
        worker.start()
        worker.wait_ready()
        producer_thread = threading.Thread(target=produce, name="soak-producer", daemon=True)
        t0 = time.monotonic()
        producer_thread.start()
        last = stopped_at = 0.0
        for at, what in events:
            # a fault that waited for a slow one (Kafka takes a while to come back) still
            # gets a few seconds after it, so two kills never land back to back
            target = max(at, last + MIN_GAP_S)
            if what == "start influxdb":  # down for the full time even if stopped late
                target = max(target, stopped_at + INFLUX_DOWN_S)
            while time.monotonic() - t0 < target:
                supervise()
                time.sleep(0.2)
            if what == "kill":
                worker.kill()
                worker.start()
            elif what == "restart kafka":
                kafka.stop()
                time.sleep(3)
                kafka.start(print)
            elif what == "stop influxdb":
                influx.stop()
                influx_down = True
                stopped_at = time.monotonic() - t0
            else:
                influx.start(print)
                influx_down = False
            last = time.monotonic() - t0
            done.append(f"{last:6.1f} s {what}")
        producer_thread.join(timeout=600)
        assert not producer_thread.is_alive()
        faults = "\n".join(done) + f"\nworker exits by itself: {self_exits}"
        assert sum(1 for d in done if d.endswith("kill")) == KILLS

        with stack.influx_client() as client:
            problems = wait_equal(
                client, stack.influx_bucket, worker.name, gen.expected, 240, supervise=worker
            )
            assert not problems, faults + "\n" + summarize(problems) + "\n" + worker.tail()
            problems = compare_ytd_latest(gen.expected, client, stack.influx_bucket, worker.name)
            assert not problems, faults + "\n" + "\n".join(problems[:20])
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                actual = influx_windows(client, stack.influx_bucket, worker.name)
                if all_complete(actual, passed_by=gen.t - gen.step_ms):
                    break
                time.sleep(2)
            assert all_complete(actual, passed_by=gen.t - gen.step_ms), "windows left open"

        for site in catalog.clusters[cluster]:
            view = worker.get(f"/twin/{cluster}/{site}/")
            assert (view["duplicates"], view["late"]) == (0, 0), view
        for topic in ("CLUSTERTWIN_DEADLETTER_TOPIC", "CLUSTERTWIN_STREAMS_LATE_TOPIC"):
            assert topic_size(stack.kafka_bootstrap, worker.env[topic]) == 0, topic
        print(
            f"\nfaults survived: {KILLS} SIGKILLs, 1 Kafka restart, InfluxDB down "
            f"{INFLUX_DOWN_S:.0f} s; {gen.expected.readings} readings, lost 0, doubled 0\n" + faults
        )
    finally:
        if influx_down:
            influx.start(print)
        prod.close()
        worker.stop()
