"""Reading the ``alerts`` topic back: the current state of every alert, and acknowledgements.

The topic is the system of record: an alert's state is the fold of its events (the latest of
open/update/resolve decides open or resolved; an ``acknowledge`` event marks it acknowledged
whatever comes after). Replayed duplicates fold to the same state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.alerting.model import Alert
from streams.alerting.stage import ALERT_HEADERS


@dataclass
class AlertView:
    """An alert as an operator sees it: its latest event plus the acknowledgement."""

    latest: Alert
    events: int = 1
    acked_by: str | None = None
    acked_at: int | None = None

    @property
    def is_open(self) -> bool:
        return self.latest.event != "resolve"


def fold(alerts: list[Alert]) -> dict[str, AlertView]:
    """Current state per alert id from its events, in topic order."""
    views: dict[str, AlertView] = {}
    seen: set[tuple[str, str, int]] = set()
    for a in alerts:
        if a.event != "acknowledge":
            if a.dedupe_key in seen:
                continue
            seen.add(a.dedupe_key)
        view = views.get(a.id)
        if a.event == "acknowledge":
            if view is None:
                view = views[a.id] = AlertView(a.model_copy(update={"event": "open"}), 0)
            view.acked_by, view.acked_at = a.acked_by, a.acked_at
            continue
        if view is None:
            views[a.id] = AlertView(a)
            continue
        view.events += 1
        # an update never reopens a resolved alert (a replay can deliver it late)
        if view.latest.event != "resolve" or a.event == "resolve":
            view.latest = a
    return views


def read_alerts(
    bootstrap: str,
    topic: str,
    timeout_s: float = 10.0,
    security: Mapping[str, Any] | None = None,
) -> list[Alert]:
    """Every event on the topic, from the beginning up to its current end.

    ``security``: from ``clustertwin_base.kafka_auth.client_security``."""
    consumer = KafkaConsumer(
        **(security or {}),
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        request_timeout_ms=int(timeout_s * 1000) + 5000,
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Alert] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r} took longer than {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.value:
                        out.append(Alert.from_json(r.value))
        return out
    finally:
        consumer.close()


def acknowledge(
    bootstrap: str,
    topic: str,
    view: AlertView,
    by: str,
    security: Mapping[str, Any] | None = None,
) -> Alert:
    """Publish an ``acknowledge`` event for an alert; returns it."""
    now = int(time.time() * 1000)
    ack = view.latest.model_copy(
        update={
            "event": "acknowledge",
            "at": now,
            "acked_by": by,
            "acked_at": now,
            "emitted_at": now,
        }
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **(security or {}))
    try:
        producer.send(topic, key=ack.id.encode(), value=ack.to_json(), headers=ALERT_HEADERS).get(
            timeout=30
        )
    finally:
        producer.close()
    return ack
