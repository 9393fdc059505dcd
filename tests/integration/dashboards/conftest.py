"""The dashboards' proof data: the real stream worker fed with the real Dunkirk simulator.

Once per test session: the worker runs as a subprocess on its own topics and ``twin`` tag
(so nothing else in the bucket can make a panel pass), the simulator of
``connectors/simulator`` produces 90 one-minute intervals of every Dunkirk meter ending now,
the envelopes go to Kafka, and the fixture waits until the worker has closed every window and
written progress. Offline totals are kept beside, priced reading by reading with the same
catalogue, for the tests that check a panel's figure rather than only its presence.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.meter_vectors import NANO, MeterVectors, offline_price
from streams.transfers import cluster_share, site_views
from streams.twinlink import catalog_from_twin
from tests.integration.streams.harness import HEADERS, WorkerProc, producer

CLUSTER = "dunkirk"
MINUTES = 90
PORT_SITE = "port"
DRILL_SITE = "steelworks"


@dataclass
class ProofData:
    """What was fed to the pipeline, and the range and variables to look at it with."""

    twin: str
    start: datetime
    stop: datetime
    catalog: MeterVectors
    # offline totals over the whole run, in t / MWh
    tco2e_by_site: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # the cluster's total by scope ("s1", "s2_location"), what a target plan counts
    tco2e_by_scope: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    mwh_by_carrier: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    readings_by_site: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    meters_by_site: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # tCO2e of each 1-minute window of the cluster, by window start (ms)
    cluster_minute_tco2e: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    # every (site, carrier, minute start) window the readings fall in
    site_windows: set[tuple[str, str, str, int]] = field(default_factory=set)
    # when the pipeline had finished: the "now" at which the alert rules are evaluated
    ready: datetime = field(default_factory=lambda: datetime.now(UTC))

    def variables(self, site: str = DRILL_SITE) -> dict[str, str]:
        return {"twin": self.twin, "cluster": CLUSTER, "site": site, "port": PORT_SITE}


def _simulated_envelopes(data: ProofData, k0: int, n: int) -> list[tuple[str, bytes]]:
    from connectors.sdk.base import Sample
    from connectors.simulator.connector import ClusterSimulator, SimulatorConfig
    from twin.model import load_cluster

    config = SimulatorConfig(
        connector="simulator",
        name="dash-proof",
        cluster=CLUSTER,
        seed=7,
        step_s=60,
        speedup=0,
        gap_rate=0.2,
        outage_rate=0.0,
        fault_rate=0.0,
    )
    sim = ClusterSimulator(load_cluster(CLUSTER), config)
    site_of = {p.meter: p.site for p in sim.profiles}
    out: list[tuple[str, bytes]] = []
    for k in range(k0, k0 + n):
        by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for sample in sim.samples(k, 1):
            assert isinstance(sample, Sample) and sample.unit and sample.carrier
            site = site_of[sample.meter]
            by_site[site].append(
                {
                    "meter": sample.meter,
                    "ts": sample.ts,
                    "value": sample.value,
                    "unit": sample.unit,
                    "carrier": sample.carrier,
                    "quality": sample.quality,
                }
            )
            figures = [*offline_price(data.catalog, sample.meter, sample.unit, sample.value), 1]
            spec = data.catalog.specs[data.catalog.index[sample.meter]]
            # a transfer between sites: the receiver's tonnes and the sender's credit in the
            # site views, nothing at cluster level (streams.transfers, the twin's rule)
            key = spec.window_key or spec.carrier
            minute = sample.ts - sample.ts % 60_000
            for view_site, carrier, tag, view in site_views(site, key, figures):
                data.tco2e_by_site[view_site] += (view[1] + view[2]) / NANO
                data.site_windows.add((view_site, carrier, tag, minute))  # a point each
            counted = cluster_share(key, figures)
            tco2e = (counted[1] + counted[2]) / NANO
            data.tco2e_by_scope["s1"] += counted[1] / NANO
            data.tco2e_by_scope["s2_location"] += counted[2] / NANO
            data.mwh_by_carrier[spec.carrier] += figures[0] / NANO
            data.readings_by_site[site] += 1
            data.meters_by_site[site].add(sample.meter)
            data.cluster_minute_tco2e[sample.ts - sample.ts % 60_000] += tco2e
        for site, readings in by_site.items():
            body = {
                "schema": "readings/1",
                "cluster": CLUSTER,
                "site": site,
                "source": "dashboards-proof",
                "sent_at": int(time.time() * 1000),
                "readings": readings,
            }
            out.append((site, orjson.dumps(body)))
    return out


def _wait_for_pipeline(client: Any, bucket: str, data: ProofData, timeout: float = 300.0) -> None:
    """Until every 1-minute site window is closed and progress with a pathway is written."""
    query = f'''
from(bucket: "{bucket}")
  |> range(start: {data.start.strftime("%Y-%m-%dT%H:%M:%SZ")})
  |> filter(fn: (r) => r.twin == "{data.twin}")
  |> filter(fn: (r) => (r._measurement == "site_window" and r.res == "1m"
                        and r._field == "complete")
                    or (r._measurement == "progress" and r._field == "pathway_tco2e_year"))
'''
    expected = len(data.site_windows)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        closed = progress = 0
        for table in client.query_api().query(query):
            for rec in table.records:
                if rec.get_measurement() == "progress":
                    progress += 1
                elif rec.get_value() is True:
                    closed += 1
        state = (
            f"{closed}/{expected} site minutes closed, {progress} progress points with a pathway"
        )
        if closed >= expected and progress:
            return
        time.sleep(2)
    raise AssertionError(f"the pipeline did not finish in {timeout:.0f} s: {state}")


@pytest.fixture(scope="session")
def proof(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProofData]:
    name = f"dash-{int(time.time())}"
    catalog = catalog_from_twin([CLUSTER])
    catalog_file = Path(tmp_path_factory.mktemp("dash")) / "catalog.json"
    catalog_file.write_text(catalog.to_json())
    now_ms = int(time.time() * 1000)
    last_k = now_ms // 60_000 - 1  # the last minute that has ended
    k0 = last_k - MINUTES + 1
    data = ProofData(
        twin=name,
        start=datetime.fromtimestamp((k0 - 1) * 60, tz=UTC),
        stop=datetime.fromtimestamp(now_ms / 1000, tz=UTC) + timedelta(minutes=2),
        catalog=catalog,
    )
    envelopes = _simulated_envelopes(data, k0, MINUTES)
    # the first ten minutes come last, as a backfill would: the panels must show the same
    # figures, and the restatements panel the hours they restated
    moved = {
        i
        for i, (_, body) in enumerate(envelopes)
        if orjson.loads(body)["readings"][0]["ts"] < (k0 + 10) * 60_000
    }
    late = [e for i, e in enumerate(envelopes) if i in moved]
    envelopes = [e for i, e in enumerate(envelopes) if i not in moved]
    worker = WorkerProc(stack, name, catalog_file, CLUSTERTWIN_STREAMS_CLUSTERS=CLUSTER)
    # The worker builds its catalogue and target plans from the twin itself (as in
    # production); the file is only the harness's required argument.
    del worker.env["CLUSTERTWIN_STREAMS_CATALOG_FILE"]
    # Faust keeps its table data in `<app id>-data` under its working directory (the repo).
    worker.env["FAUST_DATADIR"] = str(catalog_file.parent / "faust-data")
    prod = producer(stack.kafka_bootstrap)
    try:
        worker.start()
        worker.wait_ready()
        for site, value in envelopes:
            prod.send(worker.readings_topic, key=site.encode(), value=value, headers=HEADERS)
        prod.flush(timeout=120)
        deadline = time.monotonic() + 120
        while worker.get("/twin/")["counters"]["records"] < len(envelopes):
            assert time.monotonic() < deadline, "the worker did not take the first readings"
            time.sleep(0.5)
        for site, value in late:  # after their windows closed
            prod.send(worker.readings_topic, key=site.encode(), value=value, headers=HEADERS)
        prod.flush(timeout=120)
        with stack.influx_client() as client:
            _wait_for_pipeline(client, stack.influx_bucket, data)
        # one more progress round after the last window closed
        time.sleep(3)
        data.ready = datetime.now(UTC)
        data.stop = max(data.stop, data.ready + timedelta(seconds=30))
        yield data
    finally:
        prod.close()
        worker.stop()
