"""10,000 generated bad inputs against the real worker: all dead-lettered, no good reading lost.

One worker, one run. Good envelopes from the harness generator (whose offline totals are
known) go to the real readings topic interleaved with the bad inputs of ``badinput``:
whole bad messages between them, bad single readings inside them, re-sent copies of earlier
envelopes. Then:

* the dead-letter topic holds exactly one dead letter per bad message and one per envelope
  with bad readings (its original bytes; the envelope's rejected indices grouped by reason,
  ``twin.deadletter``), each reason naming the fault, and nothing else (no good reading is
  ever dead-lettered);
* every window in InfluxDB equals the offline total of the good readings alone, and so do the
  year-to-date and latest-reading series: nothing lost, nothing counted twice;
* nothing went to the late topic, and the worker is the same process throughout, its log
  free of errors.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.envelope import MAX_DEADLETTER_BYTES
from tests.integration.streams.harness import (
    Generator,
    WorkerProc,
    compare_ytd_latest,
    make_catalog,
    producer,
    summarize,
    topic_size,
    wait_equal,
)
from tests.reliability import badinput
from tests.reliability.badinput import METERS, SITES, Outgoing, assemble
from twin import deadletter

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def send_all(bootstrap: str, topic: str, plan: list[Outgoing]) -> dict[tuple[int, int], Outgoing]:
    """Produce everything, in order; return each record's (partition, offset)."""
    prod = producer(bootstrap)
    # messages over 1 MB (and one over the worker's 8 MiB limit, which only reaches the broker
    # compressed) go through a producer that allows them
    big = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type="gzip",
        max_request_size=32 * 1024 * 1024,
    )
    try:
        futures = [
            ((big if o.big else prod).send(topic, key=o.key, value=o.value, headers=o.headers), o)
            for o in plan
        ]
        prod.flush(timeout=180)
        big.flush(timeout=180)
        placed = {}
        for fut, o in futures:
            md = fut.get(timeout=60)
            placed[(md.partition, md.offset)] = o
        return placed
    finally:
        prod.close()
        big.close()


def read_topic(bootstrap: str, topic: str, want: int, timeout: float) -> list[Any]:
    """Records of a one-partition topic from the start until ``want`` of them (or timeout),
    then whatever else is there."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=5000)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= want:
                end = consumer.end_offsets([tp])[tp]
                if records[-1].offset + 1 >= end:
                    break
        return records
    finally:
        consumer.close()


def check_deadletters(
    records: list[Any], placed: dict[tuple[int, int], Outgoing], readings_topic: str
) -> list[str]:
    """One dead letter per bad record, with its reason(s) and original bytes.

    A bad message is its own dead letter; the bad readings of one envelope are one dead
    letter too (``twin.deadletter``): the envelope's bytes, its rejected indices grouped by
    reason. Every expected (record, reading index) must be listed exactly once, under a reason
    naming its fault, and nothing else.
    """
    expected: dict[tuple[int, int, int | None], tuple[str, Any, Outgoing]] = {}
    for (p, o), out in placed.items():
        for index, kind, original in out.expect:
            expected[(p, o, index)] = (kind, original, out)
    problems: list[str] = []
    seen: set[tuple[int, int, int | None]] = set()
    letters: set[tuple[int, int]] = set()
    for rec in records:
        h = dict(rec.headers)
        where = (int(h["clustertwin-dl-partition"]), int(h["clustertwin-dl-offset"]))
        if where in letters:
            problems.append(f"dead-lettered twice: {where}")
            continue
        letters.add(where)
        if where not in placed:
            problems.append(f"unexpected dead letter {where}: {h.get('clustertwin-reason')!r}")
            continue
        out = placed[where]
        problems += _check_common(h, rec, out, where, readings_topic)
        letter = deadletter.read(rec.headers)
        if deadletter.REJECTED_HEADER not in h:
            entries = [(None, letter.reason)]
        else:
            if not letter.complete:
                problems.append(f"{where}: rejected readings not all listed")
            entries = [(i, why) for why, ix in letter.groups.items() for i in ix]
            if letter.rejected != len(entries):
                problems.append(f"{where}: {letter.rejected} rejected, {len(entries)} listed")
        for index, why in entries:
            key = (*where, index)
            if key in seen or key not in expected:
                problems.append(f"{key}: {'listed twice' if key in seen else 'unexpected'}")
                continue
            seen.add(key)
            kind = expected[key][0]
            if not any(r in why for r in badinput.REASONS[kind]):
                problems.append(f"{kind} {key}: reason {why!r}")
    missing = Counter(expected[k][0] for k in set(expected) - seen)
    if missing:
        problems.insert(0, f"missing dead letters by kind: {dict(missing)}")
    return problems


def _check_common(
    h: dict[str, bytes], rec: Any, out: Outgoing, where: tuple[int, int], readings_topic: str
) -> list[str]:
    """Headers every dead letter has, and its value: the original bytes (cut when too big)."""
    problems = []
    if h.get("clustertwin-dl-reason") != h.get("clustertwin-reason"):
        problems.append(f"{where}: the two reason headers differ")
    if h.get("clustertwin-dl-kind") != b"deadletter":
        problems.append(f"{where}: kind {h.get('clustertwin-dl-kind')!r}")
    if h.get("clustertwin-dl-topic") != readings_topic.encode():
        problems.append(f"{where}: topic {h.get('clustertwin-dl-topic')!r}")
    if h.get("content-type") != b"application/json":
        problems.append(f"{where}: original headers not kept")
    if rec.key != out.key:
        problems.append(f"{where}: key {rec.key!r} != {out.key!r}")
    if len(out.value) > MAX_DEADLETTER_BYTES:
        ok = (
            rec.value == out.value[:MAX_DEADLETTER_BYTES]
            and h.get("clustertwin-dl-truncated") == str(len(out.value)).encode()
        )
    else:
        ok = rec.value == out.value and "clustertwin-dl-truncated" not in h
    if not ok:
        problems.append(f"{where}: not the original bytes")
    return problems


@pytest.mark.timeout(600)
def test_10000_bad_inputs_are_dead_lettered_and_no_good_reading_is_lost(
    stack, unique_name, tmp_path: Path
):
    # a fixed cluster name keeps the generated inputs the same on every run (the run's own
    # topics, consumer group and twin tag keep it apart from other runs)
    cluster = "rbad"
    catalog = make_catalog(cluster, SITES, METERS)
    path = tmp_path / "catalog.json"
    path.write_text(catalog.to_json())
    worker = WorkerProc(stack, unique_name, path)
    worker.start()  # it starts while the inputs are generated
    try:
        now = int(time.time() * 1000)
        messages, bad_readings = badinput.generate(catalog, cluster, now)
        start = now - 3600_000
        gen = Generator(catalog, cluster, start_ms=start - start % 60_000 + 1234)
        plan = assemble(gen, messages, bad_readings, seed=8)
        tried = len(messages) + len(bad_readings) + badinput.DUP_ENVELOPES
        assert tried == badinput.TOTAL == 10_000
        worker.wait_ready()
        assert worker.proc is not None
        pid = worker.proc.pid

        placed = send_all(stack.kafka_bootstrap, worker.readings_topic, plan)
        want = sum(1 for o in placed.values() if o.expect)  # one dead letter per bad record
        records = read_topic(
            stack.kafka_bootstrap, worker.env["CLUSTERTWIN_DEADLETTER_TOPIC"], want, 240
        )
        problems = check_deadletters(records, placed, worker.readings_topic)
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
        assert len(records) == want

        with stack.influx_client() as client:
            problems = wait_equal(client, stack.influx_bucket, worker.name, gen.expected, 120)
            assert not problems, summarize(problems) + "\n" + worker.tail()
            problems = compare_ytd_latest(gen.expected, client, stack.influx_bucket, worker.name)
            assert not problems, "\n".join(problems[:20])

        assert topic_size(stack.kafka_bootstrap, worker.env["CLUSTERTWIN_STREAMS_LATE_TOPIC"]) == 0
        counters = worker.get("/twin/")["counters"]
        assert counters["accepted"] == gen.expected.readings
        assert counters["deadletters"] == want
        assert worker.proc.poll() is None and worker.proc.pid == pid, "the worker restarted"
        crash = re.findall(r".*(?:Traceback|\[ERROR\]|\[CRITICAL\]|crashed).*", worker.tail(10**6))
        assert not crash, "worker log:\n" + "\n".join(crash[:20])
        print(
            f"\nbad inputs tried: {tried} ({len(messages)} messages, {len(bad_readings)} "
            f"readings, {badinput.DUP_ENVELOPES} re-sent envelopes); dead letters: {want} "
            f"(grouped per envelope); "
            f"good readings: {gen.expected.readings}, lost: 0"
        )
    finally:
        worker.stop()
