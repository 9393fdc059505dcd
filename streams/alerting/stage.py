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
import logging
import struct
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streams.alerting.engine import AlertEngine
from streams.alerting.model import Alert
from streams.alerting.notify import WebhookNotifier
from streams.alerting.state import ClusterAlertState, EngineOutput, SiteAlertState
from streams.delivery import StateTable
from streams.envelope import DecodedBatch, Limits, Record, decode_batch
from streams.eventtime import cluster_clocks
from streams.priced import PricedGroup, concat, groups_from_readings

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
Write = Callable[[Iterable[str]], Awaitable[None]]

log = logging.getLogger(__name__)

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
    undecodable: int = 0


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
        """``readings`` records, decoded and priced here (what the worker did before the
        priced topic; for tests, the bench, or alerting inside the twin worker)."""
        await self.process_decoded(decode_batch(records, self.engine.catalog, self.limits))

    async def process_decoded(self, decoded: DecodedBatch) -> None:
        """A decoded ``readings`` batch (bad readings were already set aside), priced here."""
        await self._process(groups_from_readings(decoded, self.engine.catalog))

    async def process_priced(self, messages: Sequence[tuple[int, bytes]]) -> None:
        """(partition, payload) of the priced topic (``streams.priced``), in order: what the
        stream worker already decoded and priced, so nothing is priced again here."""
        groups: list[tuple[int, PricedGroup]] = []
        for partition, payload in messages:
            try:
                groups.append((partition, PricedGroup.decode(payload)))
            except (ValueError, KeyError, TypeError, struct.error) as exc:
                # not ours to dead-letter: the stream worker wrote it; skip it, say so
                self.counters.undecodable += 1
                log.error("partition %d: priced message not decoded (%s); skipped", partition, exc)
        await self._process(groups)

    async def _process(self, groups: Sequence[tuple[int, PricedGroup]]) -> None:
        """Run the detectors over each site's priced readings (one engine call per site)."""
        self.counters.batches += 1
        catalog = self.engine.catalog
        by_site: dict[str, list[tuple[int, PricedGroup]]] = defaultdict(list)
        for partition, group in groups:
            by_site[group.site].append((partition, group))
        out = EngineOutput()
        states: dict[str, SiteAlertState] = {}
        for site, parts in by_site.items():
            partition = parts[-1][0]
            g = concat([p[1] for p in parts])
            meter = g.meter_index(catalog)
            known = meter >= 0  # a meter this worker's catalog does not hold is not judged
            self.counters.readings += int(known.sum())
            raw = self.sites.get(site.encode())
            state = (
                SiteAlertState.loads(raw)
                if raw is not None
                else self.engine.new_site_state(g.cluster, site, partition)
            )
            state.partition = partition  # the table partition is the one the input comes on
            state.seen_at = max(state.seen_at, g.seen_at)
            state.source = g.source
            out.extend(
                self.engine.process_site(
                    state,
                    meter[known],
                    g.ts[known],
                    g.value[known],
                    g.tco2e[known],
                    g.offset[known],
                    g.max_offset,
                )
            )
            states[site] = state
        await self._emit(out)
        for site, state in states.items():
            self.sites.put(site.encode(), state.dumps(), state.partition)

    async def tick(
        self,
        now_ms: int,
        caught_up: Callable[[int], bool],
        source_caught_up: Callable[[int, int], bool] | None = None,
    ) -> None:
        """Live operation: find meters (and sites) silent while their cluster goes on.

        Silence is judged by the cluster's event-time clock (``streams.eventtime``), not
        the wall clock: a replay of last week at 60x, or a backfill, finds a meter silent
        only when the clock passes its allowance, not because its readings are a week old.
        Only for partitions whose records have all been processed: ``caught_up(partition)``
        of the input, and, when the input is the priced topic, ``source_caught_up(readings
        partition, highest readings offset applied there)``: readings still waiting for the
        stream worker are not silence either.
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
        applied: dict[int, int] = {}
        for s in every:
            applied[s.source] = max(applied.get(s.source, -1), s.offset)
        for state in every:
            if not caught_up(state.partition):
                continue
            if (
                source_caught_up is not None
                and state.source >= 0
                and not source_caught_up(state.source, applied[state.source])
            ):
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
