"""Clusters spread over worker groups by the routing file, on the real stack.

Two clusters in two groups: their connectors' topics come from the routing rule (as a
connector config that names no topic resolves it), each group's worker is started with only
its group's name, and the readings arrive shuffled and partly twice. Each worker's windows
must equal the offline figures of its own cluster, and no reading may be dead-lettered as
another group's ("unknown cluster"): before the routing, one `readings` topic made each
worker refuse the other's clusters.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustertwin_base.settings import Settings
from connectors.sdk.base import ConnectorConfig
from tests.integration.streams.harness import (
    HEADERS,
    Generator,
    WorkerProc,
    make_catalog,
    producer,
    summarize,
    topic_size,
    wait_equal,
)

pytestmark = pytest.mark.integration


def test_two_cluster_groups_each_count_only_their_own_readings(
    stack: Any, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"{unique_name}-readings"
    dead = f"{unique_name}-dl"
    clusters = {"north": "tn" + unique_name[-8:], "south": "ts" + unique_name[-8:]}
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump({"groups": {g: [c] for g, c in clusters.items()}}))

    # the connector side: a config naming no topic is routed by its cluster
    monkeypatch.setenv("CLUSTERTWIN_ROUTING_FILE", str(routing))
    monkeypatch.setenv("CLUSTERTWIN_READINGS_TOPIC", base)
    monkeypatch.setenv("CLUSTERTWIN_DEADLETTER_TOPIC", dead)
    topics = {
        g: ConnectorConfig.model_validate(
            {"connector": "simulator", "name": f"site-{g}", "cluster": c}
        ).kafka.topic
        for g, c in clusters.items()
    }
    assert topics == {g: f"{base}.{g}" for g in clusters}
    assert Settings().readings_topic_for("not-routed") == base

    workers: dict[str, WorkerProc] = {}
    gens: dict[str, Generator] = {}
    start = int(time.time() * 1000) - 2 * 3600_000
    for group, cluster in clusters.items():
        catalog = make_catalog(cluster, 2, 4)
        path = tmp_path / f"{group}.json"
        path.write_text(catalog.to_json())
        workers[group] = WorkerProc(
            stack,
            f"{unique_name}-{group}",
            path,
            CLUSTERTWIN_READINGS_TOPIC=base,
            CLUSTERTWIN_DEADLETTER_TOPIC=dead,
            CLUSTERTWIN_ROUTING_FILE=str(routing),
            CLUSTERTWIN_STREAMS_GROUP=group,
        )
        gens[group] = Generator(catalog, cluster, start_ms=start - start % 60_000 + 1234)

    prod = producer(stack.kafka_bootstrap)
    try:
        for w in workers.values():
            w.start()
        for w in workers.values():
            w.wait_ready()
        # both groups' envelopes, interleaved, shuffled and a fifth of them sent twice
        messages = [
            (topics[g], site, value)
            for g, gen in gens.items()
            for _ in range(30)
            for site, value in gen.step()
        ]
        rng = random.Random(7)
        messages += rng.sample(messages, len(messages) // 5)
        rng.shuffle(messages)
        for topic, site, value in messages:
            prod.send(topic, key=site.encode(), value=value, headers=HEADERS)
        prod.flush(timeout=120)
        with stack.influx_client() as client:
            for group, w in workers.items():
                problems = wait_equal(
                    client, stack.influx_bucket, w.name, gens[group].expected, 120
                )
                assert not problems, f"{group}:\n{summarize(problems)}\n{w.tail()}"
        for w in workers.values():
            assert "unknown cluster" not in w.tail()
        assert topic_size(stack.kafka_bootstrap, dead) == 0, "a group dead-lettered readings"
    finally:
        prod.close()
        for w in workers.values():
            w.stop()


def test_a_worker_whose_group_is_not_in_the_routing_file_refuses_to_start(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    routing = tmp_path / "routing.yaml"
    routing.write_text("groups:\n  north: [dunkirk]\n")
    env = {
        **os.environ,
        "CLUSTERTWIN_ROUTING_FILE": str(routing),
        "CLUSTERTWIN_STREAMS_GROUP": "west",
        "CLUSTERTWIN_INFLUX_TOKEN": "unused",
    }
    out = subprocess.run(
        [sys.executable, "-m", "streams"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "unknown cluster group 'west'" in out.stderr and "north" in out.stderr
