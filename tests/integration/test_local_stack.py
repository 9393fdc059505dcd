"""The local stack is real: Kafka, InfluxDB and Mosquitto answer their own protocols.

These tests use the official clients over loopback sockets, as the product does.
"""

from __future__ import annotations

import socket
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from clustertwin.stack import LocalStack
from tests.conftest import StackHandle

N_MESSAGES = 10_000


def test_kafka_topic_produce_and_consume_in_group(stack: StackHandle, unique_name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(unique_name, num_partitions=3, replication_factor=1)])
        # CreateTopics returns once the controller made it; the metadata a broker serves
        # may lag a moment behind (more so while earlier tests' topics are being deleted)
        deadline = time.monotonic() + 15
        while unique_name not in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unique_name in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    for i in range(N_MESSAGES):
        producer.send(unique_name, key=str(i % 17).encode(), value=str(i).encode())
    producer.flush(timeout=60)
    producer.close()

    group = f"{unique_name}-group"
    consumer = KafkaConsumer(
        unique_name,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while len(seen) < N_MESSAGES and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000, max_records=2000).values():
            seen.extend(int(r.value) for r in records)
        consumer.commit()
    partitions = [TopicPartition(unique_name, p) for p in range(3)]
    end_offsets = consumer.end_offsets(partitions)
    committed = {tp: consumer.committed(tp) for tp in partitions}
    consumer.close()

    assert sorted(seen) == list(range(N_MESSAGES))
    assert sum(end_offsets.values()) == N_MESSAGES
    assert committed == end_offsets, "the group's committed offsets must reach the end"

    # A new member of the same group resumes from the committed offsets: nothing left to read.
    again = KafkaConsumer(
        unique_name,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    leftovers = sum(len(v) for v in again.poll(timeout_ms=3000).values())
    again.close()
    assert leftovers == 0


def test_influxdb_write_and_flux_query_10k_points(stack: StackHandle, unique_name: str) -> None:
    from influxdb_client.client.write_api import SYNCHRONOUS

    base_ns = 1_700_000_000_000_000_000
    lines = [
        f"stack_check,run={unique_name},meter=m{i % 10} value={i}i {base_ns + i * 1_000_000_000}"
        for i in range(N_MESSAGES)
    ]
    with stack.influx_client() as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        for start in range(0, N_MESSAGES, 5000):
            write.write(bucket=stack.influx_bucket, record=lines[start : start + 5000])
        flux = f'''
from(bucket: "{stack.influx_bucket}")
  |> range(start: 2023-11-14T00:00:00Z, stop: 2023-11-16T00:00:00Z)
  |> filter(fn: (r) => r._measurement == "stack_check" and r.run == "{unique_name}")
  |> group()
  |> reduce(identity: {{n: 0, total: 0}},
            fn: (r, accumulator) => ({{n: accumulator.n + 1, total: accumulator.total + r._value}}))
'''
        tables = client.query_api().query(flux, org=stack.influx_org)
    rows = [record.values for table in tables for record in table.records]
    assert len(rows) == 1
    assert rows[0]["n"] == N_MESSAGES
    assert rows[0]["total"] == sum(range(N_MESSAGES))


def test_mosquitto_speaks_mqtt(stack: StackHandle) -> None:
    # MQTT CONNECT (protocol 3.1.1, clean session) answered by CONNACK with return code 0.
    client_id = b"clustertwin-stack-test"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    with socket.create_connection((stack.mqtt_host, stack.mqtt_port), timeout=5) as sock:
        sock.sendall(packet)
        assert sock.recv(4) == b"\x20\x02\x00\x00"


def test_second_up_is_a_no_op(stack: StackHandle) -> None:
    began = time.monotonic()
    started = LocalStack(root=stack.local.root).up(progress=lambda _m: None)
    assert started == []
    assert time.monotonic() - began < 15
    assert all(row["healthy"] for row in stack.local.status())
