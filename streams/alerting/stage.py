"""Alerting as a stage of the stream worker: records in, alerts to Kafka and InfluxDB out.

Order of effects per batch (what makes at-least-once delivery exact):

1. decode and price the records, run the engine on each site's state in memory;
2. write detector statistics and alert states to InfluxDB (deterministic tags and event-time
   timestamps: a replay overwrites the same points), publish alert events to the ``alerts``
   topic and bucket summaries to the cluster topic, awaiting the broker's acknowledgement;
3. only then put the new site states into the table (changelog), and let the caller
   acknowledge the records.

A crash before 3 replays the batch against the old state: the same events with the same ids
are published again (consumers de-duplicate on ``(id, event, at)``). After 3, the record
offsets are in the states and the records are skipped. Webhook posts are queued after 2.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streams.alerting.engine import AlertEngine, ClusterAlertState, EngineOutput, SiteAlertState
from streams.alerting.model import Alert
from streams.alerting.notify import WebhookNotifier
from streams.delivery import StateTable
from streams.envelope import DecodedBatch, Limits, Record, decode_batch
from streams.eventtime import cluster_clocks
from streams.meter_vectors import NANO

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
Write = Callable[[Iterable[str]], Awaitable[None]]

ALERT_HEADERS = [("content-type", b"application/json"), ("clustertwin-schema", b"alert/1")]


@dataclass
class AlertTopics:
    alerts: str = "alerts"
    cluster_buckets: str = "clustertwin-alerting-cluster-buckets"


@dataclass
class AlertCounters:
    batches: int = 0
    readings: int = 0
    events: int = 0
    opened: int = 0
    resolved: int = 0
    lines: int = 0


class AlertStage:
    """The hook the worker calls: ``await stage.process(records)`` once per batch of
    ``readings`` records (or ``process_decoded`` to reuse the pipeline's decoding), and
    ``await stage.process_cluster(messages)`` for the cluster-bucket topic."""

    def __init__(
        self,
        engine: AlertEngine,
        sites: StateTable,
        clusters: StateTable,
        send: Send,
        write: Write,
        topics: AlertTopics | None = None,
        notifier: WebhookNotifier | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.sites = sites
        self.clusters = clusters
        self.send = send
        self.write = write
        self.topics = topics or AlertTopics()
        self.notifier = notifier
        self.limits = limits or Limits()
        self.counters = AlertCounters()

    async def process(self, records: Sequence[Record]) -> None:
        await self.process_decoded(decode_batch(records, self.engine.catalog, self.limits))

    async def process_decoded(self, decoded: DecodedBatch) -> None:
        """Run the detectors over a decoded batch (bad readings were already set aside)."""
        self.counters.batches += 1
        catalog = self.engine.catalog
        n = len(decoded.env)
        self.counters.readings += n
        priced = catalog.price(decoded.row, decoded.value) if n else np.zeros((0, 4), np.int64)
        # tCO2e = scope 1 + scope 2 (location-based), as everywhere in the twin
        tco2e = (priced[:, 1] + priced[:, 2]).astype(np.float64) / NANO
        env_site = [e.site for e in decoded.envelopes]
        by_site: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(env_site):
            by_site[s].append(i)
        env_offsets = np.array([e.record.offset for e in decoded.envelopes], dtype=np.int64)
        site_codes = {s: k for k, s in enumerate(by_site)}
        env_code = np.array([site_codes[s] for s in env_site], dtype=np.int64)
        reading_site = env_code[decoded.env] if n else np.empty(0, np.int64)
        out = EngineOutput()
        states: dict[str, SiteAlertState] = {}
        for k, (site, env_ids) in enumerate(by_site.items()):
            first = decoded.envelopes[env_ids[0]]
            raw = self.sites.get(site.encode())
            state = (
                SiteAlertState.loads(raw)
                if raw is not None
                else self.engine.new_site_state(first.cluster, site, first.record.partition)
            )
            sel = np.flatnonzero(reading_site == k)
            state.seen_at = max(
                state.seen_at, max(decoded.envelopes[i].record.timestamp for i in env_ids)
            )
            out.extend(
                self.engine.process_site(
                    state,
                    decoded.meter[sel],
                    decoded.ts[sel],
                    decoded.value[sel],
                    tco2e[sel],
                    env_offsets[decoded.env[sel]],
                    int(max(decoded.envelopes[i].record.offset for i in env_ids)),
                )
            )
            states[site] = state
        await self._emit(out)
        for site, state in states.items():
            self.sites.put(site.encode(), state.dumps(), state.partition)

    async def tick(self, now_ms: int, caught_up: Callable[[int], bool]) -> None:
        """Live operation: find meters (and sites) silent while their cluster goes on.

        Silence is judged by the cluster's event-time clock (``streams.eventtime``), not
        the wall clock: a replay of last week at 60x, or a backfill, finds a meter silent
        only when the clock passes its allowance, not because its readings are a week old.
        Only for partitions whose records have all been processed.
        """
        out = EngineOutput()
        states: dict[str, SiteAlertState] = {}
        empty_i = np.empty(0, np.int64)
        empty_f = np.empty(0, np.float64)
        every: list[SiteAlertState] = []
        for key in list(self.sites.all_keys()):
            raw = self.sites.get(key)
            if raw is not None:
                every.append(SiteAlertState.loads(raw))
        clocks = cluster_clocks(((s.cluster, s.wm, s.seen_at) for s in every), now_ms)
        for state in every:
            if not caught_up(state.partition):
                continue
            key = state.site.encode()
            clock = clocks.get(state.cluster, -1)
            res = self.engine.process_site(
                state, empty_i, empty_i, empty_f, empty_f, empty_i, -1, clock=clock
            )
            if res.events or res.lines or res.buckets:
                out.extend(res)
                states[key.decode()] = state
        if states:
            await self._emit(out)
            for site, state in states.items():
                self.sites.put(site.encode(), state.dumps(), state.partition)

    async def process_cluster(self, messages: Sequence[tuple[int, bytes]]) -> None:
        """``messages``: (partition, payload) from the cluster-bucket topic, in order."""
        by_cluster: dict[str, tuple[int, list[list[Any]]]] = {}
        for partition, payload in messages:
            body = orjson.loads(payload)
            entry = by_cluster.setdefault(body["cluster"], (partition, []))
            entry[1].extend(body["b"])
        out = EngineOutput()
        states: dict[str, ClusterAlertState] = {}
        for cluster, (partition, summaries) in by_cluster.items():
            raw = self.clusters.get(cluster.encode())
            state = (
                ClusterAlertState.loads(raw)
                if raw is not None
                else ClusterAlertState(cluster, partition)
            )
            n_sites = len(self.engine.catalog.clusters.get(cluster, [])) or 1
            out.extend(self.engine.process_cluster(state, summaries, n_sites))
            states[cluster] = state
        out.buckets.clear()
        await self._emit(out)
        for cluster, state in states.items():
            self.clusters.put(cluster.encode(), state.dumps(), state.partition)

    async def _emit(self, out: EngineOutput) -> None:
        if out.lines:
            await self.write(out.lines)
            self.counters.lines += len(out.lines)
        sends: list[Awaitable[None]] = []
        now = int(time.time() * 1000)
        for alert in out.events:
            alert.emitted_at = now
            sends.append(
                self.send(self.topics.alerts, alert.id.encode(), alert.to_json(), ALERT_HEADERS)
            )
        per_cluster: dict[str, list[list[Any]]] = defaultdict(list)
        for b in out.buckets:
            per_cluster[b.cluster].append(b.to_list())
        for cluster, rows in per_cluster.items():
            payload = orjson.dumps({"cluster": cluster, "b": rows})
            sends.append(self.send(self.topics.cluster_buckets, cluster.encode(), payload, []))
        if sends:
            await asyncio.gather(*sends)
        self._count(out.events)
        if self.notifier is not None:
            for alert in out.events:
                self.notifier.submit(alert)

    def _count(self, events: list[Alert]) -> None:
        self.counters.events += len(events)
        self.counters.opened += sum(1 for e in events if e.event == "open")
        self.counters.resolved += sum(1 for e in events if e.event == "resolve")
