"""What the worst inputs cost the worker per envelope: one dead letter per reading vs grouped.

For each hostile case (an envelope of 50,000 bad readings of one kind, or a whole bad
message), side by side in one run:

- ``old``: what the worker did before grouping: every rejected reading explained by the
  contract's scalar rules and sent as its own dead letter (an envelope of one);
- ``grouped``: what it does now (``streams.envelope``, ``twin.deadletter``): the first
  ``MAX_EXPLAINED_READINGS`` rejected readings of an envelope explained, the rest named by
  the batch check they failed, and one dead letter per envelope.

Each row gives the decode-and-judge time, the time to build the dead-letter messages
(payloads and headers), how many messages and bytes go to Kafka, and, with ``--kafka``
(the local stack), the time to produce them and have the broker acknowledge them. The
worker's stall watchdog fires after 60 s (``CLUSTERTWIN_STREAMS_STALL_S``) without a stored
batch; the last column says how many such envelopes one batch could hold before it would.

    .venv/bin/python bench/bench_hostile.py [--readings 50000] [--kafka]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streams.envelope as envelope_mod
from streams.envelope import Record, Reject, decode_batch
from streams.meter_vectors import MeterSpec, MeterVectors

NOW = int(time.time() * 1000)
STALL_S = 60.0


def catalog() -> MeterVectors:
    return MeterVectors(
        [
            MeterSpec(
                meter=f"m{i}",
                site="s0",
                cluster="c",
                carrier="natural_gas",
                units={"MWh": (1.0, (0.2, 0.0, 0.0, 0.0))},
                provenance="bench",
            )
            for i in range(50)
        ]
    )


def _reading(i: int) -> dict[str, Any]:
    return {
        "meter": f"m{i % 50}",
        "ts": NOW - 60_000 + i,
        "value": 1.0,
        "unit": "MWh",
        "carrier": "natural_gas",
        "quality": "measured",
    }


def _envelope(readings: list[Any]) -> bytes:
    body = {"schema": "readings/1", "cluster": "c", "site": "s0", "source": "bench"}
    return orjson.dumps({**body, "sent_at": NOW, "readings": readings})


CASES: dict[str, Callable[[int], bytes]] = {
    "unknown meters (5,000 distinct)": lambda n: _envelope(
        [{**_reading(i), "meter": f"ghost-{i % 5000}"} for i in range(n)]
    ),
    "negative values": lambda n: _envelope([{**_reading(i), "value": -1.0 - i} for i in range(n)]),
    "wrong types (ts a string)": lambda n: _envelope(
        [{**_reading(i), "ts": str(i)} for i in range(n)]
    ),
    "far-future timestamps": lambda n: _envelope(
        [{**_reading(i), "ts": NOW + 3_600_000 + i} for i in range(n)]
    ),
    "nested 100,000 deep": lambda n: b"[" * 100_000,
    "8 MiB + 1 of bytes": lambda n: b'{"x":"' + b"x" * (8 * 1024 * 1024) + b'"}',
}


def messages(rejects: list[Reject]) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    return [(r.record.key, r.payload(), r.headers()) for r in rejects]


def run(raw: bytes, cat: MeterVectors, grouped: bool) -> tuple[float, float, list[Any]]:
    record = Record("readings", 0, 1, NOW, b"s0", raw)
    saved = envelope_mod.MAX_EXPLAINED_READINGS
    if not grouped:
        envelope_mod.MAX_EXPLAINED_READINGS = 10**9  # every rejected reading explained
    try:
        t0 = time.perf_counter()
        batch = decode_batch([record], cat)
        t1 = time.perf_counter()
    finally:
        envelope_mod.MAX_EXPLAINED_READINGS = saved
    out = messages(batch.deadletters() if grouped else batch.rejects)
    return t1 - t0, time.perf_counter() - t1, out


def produce(bootstrap: str, topic: str, out: list[Any]) -> float:
    """Seconds to send ``out`` and have every message acknowledged (one producer)."""
    from kafka import KafkaProducer

    prod = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_request_size=16 * 1024 * 1024,
        linger_ms=5,
    )
    try:
        prod.partitions_for(topic)  # metadata (and the topic) before the clock starts
        t0 = time.perf_counter()
        futures = [prod.send(topic, key=k, value=v, headers=h) for k, v, h in out]
        prod.flush(timeout=600)
        for f in futures:
            f.get(timeout=60)
        return time.perf_counter() - t0
    finally:
        prod.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=50_000, help="readings per bad envelope")
    ap.add_argument("--kafka", action="store_true", help="also produce to the local stack")
    args = ap.parse_args()
    bootstrap = topic = ""
    if args.kafka:
        from clustertwin_base.settings import Settings

        bootstrap = Settings.load().kafka_bootstrap
        topic = f"bench-hostile-{uuid.uuid4().hex[:8]}"
    cat = catalog()
    run(CASES["negative values"](100), cat, True)  # warm the decoders
    print(
        f"{'case':34} {'way':8} {'judge s':>8} {'build s':>8} {'msgs':>7} {'MB':>6} "
        f"{'send s':>7} {'per env s':>9} {'env/60 s':>8}"
    )
    for name, make in CASES.items():
        raw = make(args.readings)
        for way in ("old", "grouped"):
            judge, build, out = run(raw, cat, way == "grouped")
            send = produce(bootstrap, topic, out) if args.kafka else 0.0
            total = judge + build + send
            size = sum(len(v) + sum(len(x) for _, x in h) for _, v, h in out) / 1e6
            fits = STALL_S / total if total else float("inf")
            print(
                f"{name:34} {way:8} {judge:8.3f} {build:8.3f} {len(out):7d} {size:6.1f} "
                f"{send if args.kafka else float('nan'):7.2f} {total:9.3f} {fits:8.0f}"
            )
    print(f"(envelope: {args.readings} readings; 'env/60 s': such envelopes per stall_s)")


if __name__ == "__main__":
    main()
