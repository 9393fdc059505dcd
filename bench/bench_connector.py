"""How many readings per second one connector process publishes to the real Kafka.

Runs the simulator connector (Dunkirk, as fast as possible) through the whole SDK path —
samples, per-reading validation, envelopes, on-disk buffer, idempotent lz4 producer, acks=all
— against the local stack's Kafka, and counts readings acknowledged per second of wall time.
Side by side in one run: envelopes of 2000 readings vs one reading per Kafka message (what
the envelope contract buys), plus the stages alone (simulate, validate, encode) to show
where a connector process spends its time.

    .venv/bin/python bench/bench_connector.py [--readings 400000] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from clustertwin_base.settings import Settings
from connectors.sdk.base import Sample
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import ConnectorRunner, make_publisher
from connectors.simulator import ClusterSimulator, SimulatorConfig, SimulatorConnector
from twin.model import load_cluster
from twin.readings import MeterIndex, ReadingDict, validate_readings


def config(tmp: Path, max_readings: int, tag: str) -> SimulatorConfig:
    return SimulatorConfig.model_validate(
        {
            "connector": "simulator",
            "name": f"bench-{tag}",
            "cluster": "dunkirk",
            "seed": 7,
            "speedup": 0,
            "step_s": 60,
            # far enough back to catch up for the whole run, within the restatement horizon
            # (older readings are refused at the edge, as the stream worker refuses them)
            "start": "now-300d",
            "max_chunk_steps": 200,
            "kafka": {"topic": f"bench-readings-{uuid.uuid4().hex[:8]}", "linger_ms": 20},
            "batch": {"max_readings": max_readings, "max_delay_ms": 1000},
            "buffer": {"dir": str(tmp / tag), "max_bytes": 8 << 30},
        }
    )


def run_pipeline(
    cfg: SimulatorConfig, index: MeterIndex, n: int, bootstrap: str
) -> tuple[float, ConnectorMetrics]:
    metrics = ConnectorMetrics()
    runner = ConnectorRunner(
        SimulatorConnector(cfg, index),
        make_publisher(cfg, metrics, bootstrap=bootstrap),
        metrics=metrics,
    )
    started = time.perf_counter()
    asyncio.run(runner.run(max_readings=n, drain_timeout=600))
    elapsed = time.perf_counter() - started
    if metrics.readings_sent < metrics.readings_accepted:
        raise SystemExit(f"only {metrics.readings_sent} of {metrics.readings_accepted} acked")
    return elapsed, metrics


def stages(cfg: SimulatorConfig, index: MeterIndex, n: int) -> dict[str, float]:
    """Readings/s of each in-process stage alone, on the same data."""
    sim = ClusterSimulator(load_cluster("dunkirk"), cfg)
    k0 = (time.time_ns() // 1_000_000 - 300 * 86_400_000) // 60_000
    steps = max(1, n // len(sim.profiles))
    t = time.perf_counter()
    items = sim.samples(k0, steps)
    simulate = len(items) / (time.perf_counter() - t)
    site_of = {m.meter: m.site for m in index}
    by_site: dict[str, list[dict[str, object]]] = {}
    for s in items:
        assert isinstance(s, Sample)
        row = {
            "meter": s.meter,
            "ts": s.ts,
            "value": s.value,
            "unit": s.unit,
            "carrier": s.carrier,
            "quality": s.quality,
        }
        by_site.setdefault(site_of[s.meter], []).append(row)
    t = time.perf_counter()
    accepted: list[ReadingDict] = []
    for site, raws in by_site.items():
        ok, _bad = validate_readings(raws, site=site, index=index)
        accepted += ok
    validate = len(items) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, len(accepted), 2000):
        orjson.dumps({"readings": accepted[i : i + 2000]})
    encode = len(accepted) / (time.perf_counter() - t)
    return {"simulate": simulate, "validate": validate, "encode": encode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument(
        "--single-readings",
        type=int,
        default=20_000,
        help="readings for the one-reading-per-message comparison",
    )
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bootstrap = args.bootstrap or Settings.load().kafka_bootstrap
    index = MeterIndex.from_cluster(load_cluster("dunkirk"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cfg = config(tmp_path, 2000, "envelopes")
        st = stages(cfg, index, 200_000)
        t_env, m_env = run_pipeline(cfg, index, args.readings, bootstrap)
        t_one, m_one = run_pipeline(
            config(tmp_path, 1, "single"), index, args.single_readings, bootstrap
        )

    env_rate = m_env.readings_sent / t_env
    one_rate = m_one.readings_sent / t_one
    print(
        f"bench_connector: simulator (dunkirk, {len(index)} meters) -> Kafka {bootstrap}, "
        "acks=all, idempotent, lz4, one process"
    )
    print(
        f"  envelopes of <=2000 readings: {m_env.readings_sent:>9,} readings acked in "
        f"{t_env:6.2f} s = {env_rate:>10,.0f} readings/s ({m_env.envelopes_sent:,} messages, "
        f"{m_env.envelopes_sent / t_env:,.0f} msg/s)"
    )
    print(
        f"  one reading per message:      {m_one.readings_sent:>9,} readings acked in "
        f"{t_one:6.2f} s = {one_rate:>10,.0f} readings/s ({m_one.envelopes_sent:,} messages)"
    )
    print(f"  envelope / single ratio: {env_rate / one_rate:,.1f}x")
    print("  stages alone (readings/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in st.items()))


if __name__ == "__main__":
    main()
