"""The Faust app that keeps the live twin: agents, tables, timers and web views.

Faust runs the consumer group, the changelog-backed tables (recovery after a crash or a
rebalance) and the web server; the per-batch work lives in ``streams.pipeline`` so it can be
profiled and unit-tested without a broker.

Two agents:

* ``readings`` (key = site) -> ``SiteStage``: validation, dead letters, pricing, site and
  meter windows, latest readings, year-to-date; table ``<app>-sites`` (one entry per site).
* ``<app>-cluster-updates`` (key = cluster) -> ``ClusterStage``: cluster windows as the sum of
  their sites' windows; table ``<app>-clusters``.

Records are taken in batches with manual acknowledgement: a record is acknowledged (and its
offset becomes committable) only after its effects are stored (see ``streams.pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import faust
from aiohttp.web import Response
from faust.types import TP

from clustertwin_base.kafka_auth import faust_credentials
from clustertwin_base.settings import Settings, cache_dir
from streams.cluster_stage import ClusterStage
from streams.config import StreamSettings
from streams.delivery import OverlappedCommits, PreparedBatch, Topics
from streams.end_offsets import EndOffsets
from streams.envelope import MAX_DEADLETTER_BYTES, Limits, Record
from streams.meter_vectors import MeterVectors
from streams.progress_series import ProgressWriter
from streams.sink import InfluxSink, fields_line
from streams.site_stage import SiteStage
from streams.stored import InfluxStore
from streams.webview import ViewSource
from streams.webview import install as install_view
from streams.windows import SiteState

log = logging.getLogger("streams")


class FaustTable:
    """``StateTable`` over a Faust table, writing changelog records to explicit partitions.

    A batch mixes records of several partitions, so the partition cannot come from Faust's
    "current event"; it is the partition the key's records arrive on.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    def put(self, key: bytes, value: bytes, partition: int) -> Any:
        store = self.table.data
        store[key] = value
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition
        return self.table.send_changelog(partition, key, value)

    def delete(self, key: bytes, partition: int) -> Any:
        store = self.table.data
        store.pop(key, None)
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition.pop(key, None)
        return self.table.send_changelog(partition, key, None)

    def all_keys(self) -> Iterable[bytes]:
        return list(self.table.data.keys())


def record_from_event(event: Any) -> Record:
    """A Faust event as the plain record the stages take, so they never see Faust types."""
    m = event.message
    headers = m.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp=round(m.timestamp * 1000),
        key=m.key,
        value=m.value,
        headers=[(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in headers],
    )


def _json(data: Any, status: int = 200) -> Response:
    import orjson

    return Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


def _plans(cfg: StreamSettings) -> dict[Any, Any]:
    """Target plans from the twin, for the progress series (none with a compiled catalog)."""
    if cfg.catalog_file is not None:
        return {}
    from streams.twinlink import plans_from_twin

    try:
        return dict(plans_from_twin(cfg.cluster_names))
    except Exception as exc:  # progress is a convenience; the twin itself must keep running
        log.error("no target plans from the twin (%s); progress without pathway", exc)
        return {}


def faust_datadir(configured: Path | None, app_id: str) -> Path:
    """Faust creates only the last level of its data directory, so make the parents here."""
    datadir = configured or cache_dir() / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return datadir


def create_app(
    stream_settings: StreamSettings, settings: Settings, catalog: MeterVectors, partitions: int
) -> faust.App:
    cfg = stream_settings
    app = faust.App(
        cfg.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=True,
        web_host=cfg.web_host,
        web_port=cfg.web_port,
        web_in_thread=False,
        producer_acks=-1,
        producer_compression_type=None,
        # dead letters carry bad messages whole, up to MAX_DEADLETTER_BYTES (aiokafka's
        # default of 1 MB made a bigger bad message fail its dead-letter send and stall)
        producer_max_request_size=MAX_DEADLETTER_BYTES + 64 * 1024,
        broker_commit_interval=1.0,
        # Faust's default (1 MB per partition) brings ~16 typical envelopes per fetch; a
        # backlog then drains in smaller batches, each rewriting its open windows
        consumer_max_fetch_size=16 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, cfg.batch_max * 2),
        table_standby_replicas=0,
        autodiscover=False,
        processing_guarantee="at_least_once",
        datadir=str(faust_datadir(cfg.datadir, cfg.app_id)),
    )
    readings = app.topic(
        settings.readings_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    updates_topic = app.topic(
        f"{cfg.app_id}-cluster-updates",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=True,
    )
    deadletter_topic = app.topic(
        settings.deadletter_topic, key_serializer="raw", value_serializer="raw"
    )
    late_topic = app.topic(cfg.late_topic, key_serializer="raw", value_serializer="raw")
    sites_table = app.Table(
        "sites",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
    )
    clusters_table = app.Table(
        "clusters",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
    )

    sink = InfluxSink(
        settings.influx_url,
        settings.require_influx_token(),
        settings.influx_org,
        settings.influx_bucket,
    )

    async def close_sink(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Release the HTTP session to InfluxDB after the consumer has stopped."""
        await sink.close()

    # mode types the handler as taking a positional-only sender; ours takes it plainly
    app.on_before_shutdown.connect(cast(Any, close_sink))

    topics_by_name = {
        settings.deadletter_topic: deadletter_topic,
        cfg.late_topic: late_topic,
        updates_topic.get_topic_name(): updates_topic,
    }

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        fut = await topics_by_name[topic].send(key=key, value=value, headers=headers, force=True)
        await fut

    lock = asyncio.Lock()
    store = InfluxStore(sink)
    site_stage = SiteStage(
        catalog,
        FaustTable(sites_table),
        sink.write,
        send,
        Topics(settings.deadletter_topic, cfg.late_topic, updates_topic.get_topic_name()),
        cfg.twin,
        cfg.grace_ms,
        limits=Limits(horizon_years=cfg.horizon_years),
        store=store,
    )
    cluster_stage = ClusterStage(
        catalog,
        FaustTable(clusters_table),
        sink.write,
        cfg.twin,
        int(cfg.cluster_retention_s * 1000),
        store=store,
    )
    progress = ProgressWriter(catalog, cfg.twin, plans=_plans(cfg))
    processed: dict[int, int] = {}
    app.twin_stages = (site_stage, cluster_stage)  # type: ignore[attr-defined]

    commits = OverlappedCommits(site_stage)

    @app.agent(readings, name="site-stage")
    async def site_agent(stream: Any) -> None:
        try:
            async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):
                records = [record_from_event(e) for e in events]

                async def stored(prepared: PreparedBatch, events: list[Any] = events) -> None:
                    """Acknowledge what is stored, seek back over gaps (after the commit)."""
                    held_ids = {(r.partition, r.offset) for r in prepared.held}
                    for e, r in zip(events, prepared.records_in, strict=True):
                        if (r.partition, r.offset) in held_ids:
                            continue
                        if r.offset > processed.get(r.partition, -1):
                            processed[r.partition] = r.offset
                        await stream.ack(e)
                    for partition, offset in prepared.seeks.items():
                        await app.consumer.seek(TP(settings.readings_topic, partition), offset)
                    busy["since"] = None
                    busy["last"] = time.monotonic()

                async with lock:
                    if busy["since"] is None:
                        busy["since"] = time.monotonic()
                    await commits.submit(records, stored)
                    if not cfg.overlap_commits:
                        await commits.wait()
        finally:
            # Cancelled by a rebalance (Faust restarts the agent) or stopping: what is not
            # stored is not acknowledged and comes again; start the next agent from the table.
            await commits.abandon()

    @app.agent(updates_topic, name="cluster-stage")
    async def cluster_agent(stream: Any) -> None:
        async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):
            async with lock:
                await cluster_stage.process(
                    [(e.message.partition, e.message.value) for e in events]
                )
            for e in events:
                await stream.ack(e)

    end_offsets = EndOffsets(lambda: app.consumer, settings.readings_topic, partitions)

    busy: dict[str, float | None] = {"since": None, "last": time.monotonic()}
    stalls = {"count": 0}

    @app.timer(interval=5.0)
    async def watchdog() -> None:
        """Exit if readings wait and nothing moves (seen once after a Kafka restart: the
        consumer never resumed). Exiting is safe, unstored effects are never acknowledged;
        the supervisor (compose restart policy, systemd, the demo) starts a fresh worker."""
        now = time.monotonic()
        if sink.stats.outage_started is not None:
            stalls["count"] = 0
            return
        since, last = busy["since"], busy["last"] or now
        stalled = since is not None and now - since > cfg.stall_s
        if not stalled and since is None and now - last > cfg.stall_s:
            tps = [TP(settings.readings_topic, p) for p in range(partitions)]
            try:
                ends = await asyncio.wait_for(app.consumer.highwaters(*tps), 15)
                committed = getattr(app.consumer, "_committed_offset", {})
                stalled = any(
                    end > max(processed.get(tp.partition, -1) + 1, committed.get(tp) or 0)
                    for tp, end in ends.items()
                    if tp in app.consumer.assignment()
                )
            except Exception as exc:
                log.warning("watchdog: cannot read end offsets (%r)", exc)
                stalled = True
        stalls["count"] = stalls["count"] + 1 if stalled else 0
        if stalls["count"] >= 2:
            log.error(
                "no progress for %.0f s while readings wait in Kafka: exiting so the "
                "worker is restarted",
                now - (since or last),
            )
            logging.shutdown()
            os._exit(70)

    @app.timer(interval=1.0)
    async def idle_flush() -> None:
        """Close the windows of silent sites, unless their silence may be a broker outage.

        Not while stopping: Faust keeps running timers while it waits for the agents'
        records to be acknowledged, and the cluster stage's would wait behind this lock.

        While Kafka is down, producers keep their readings (connectors buffer to disk) and
        deliver them, with their old timestamps, once it is back: flushing then would make
        them all late. So a site is idle only after ``idle_flush_s`` of silence with the
        broker reachable, and "caught up" is judged on end offsets read now (the consumer's
        last-fetched high watermark is stale during an outage).
        """
        if app.should_stop:
            return
        ends = await end_offsets.read(timeout_s=5)
        if ends is None or end_offsets.answering_for() < cfg.idle_flush_s:
            return
        async with lock:
            await commits.wait(raise_errors=False)
            await site_stage.flush_idle(
                cfg.idle_flush_s, lambda p: end_offsets.caught_up(p, ends, processed)
            )

    @app.timer(interval=cfg.progress_every_s)
    async def write_progress() -> None:
        if app.should_stop:
            return  # see idle_flush
        async with lock:
            lines = progress.lines(site_stage, cluster_stage)
            c = site_stage.counters
            now_ms = int(time.time() * 1000)
            lines.append(
                fields_line(
                    "pipeline",
                    {"twin": cfg.twin, "app": cfg.app_id},
                    {
                        "records": c.records,
                        "readings": c.readings,
                        "accepted": c.accepted,
                        "deadletters": c.deadletters,
                        "late": c.late,
                        "duplicates": c.duplicates,
                        "cluster_late_updates": cluster_stage.counters.cluster_late_updates,
                        "points": c.points + cluster_stage.counters.points,
                        "sink_retries": sink.stats.retries,
                    },
                    now_ms - now_ms % 10_000,
                )
            )
            await sink.write(lines)

    @app.on_rebalance_complete.connect
    async def _on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        cluster_stage.reset_index()

    # -- live twin views ------------------------------------------------------------------
    @app.page("/twin/")
    async def twin_index(web: Any, request: Any) -> Any:
        return _json(
            {
                "twin": cfg.twin,
                "clusters": {c: sites for c, sites in catalog.clusters.items()},
                "counters": site_stage.counters.__dict__,
                "latency_ms": site_stage.latency_summary(),
                "sink": {
                    "lines": sink.stats.lines,
                    "retries": sink.stats.retries,
                    "last_error": sink.stats.last_error,
                    "down_for_s": (
                        None
                        if sink.stats.outage_started is None
                        else time.monotonic() - sink.stats.outage_started
                    ),
                },
            }
        )

    async def cluster_view(view: Any, request: Any, **match: Any) -> Any:
        cluster = match["cluster"]
        if cluster not in catalog.clusters:
            return _json({"error": f"unknown cluster {cluster!r}"}, status=404)
        body = cluster_stage.twin_json(cluster)
        body["sites"] = catalog.clusters[cluster]
        return _json(body)

    def _site_state(site: str) -> SiteState | None:
        raw = sites_table.data.get(site.encode())
        return None if raw is None else SiteState.loads(raw)

    async def site_view(view: Any, request: Any, **match: Any) -> Any:
        cluster, site = match["cluster"], match["site"]
        if not catalog.has_site(cluster, site):
            return _json({"error": f"unknown site {site!r} of {cluster!r}"}, status=404)
        state = _site_state(site)
        if state is None:
            return _json({"cluster": cluster, "site": site, "latest": {}, "no_data": True})
        return _json(state.twin())

    view = ViewSource(
        catalog=catalog,
        twin=cfg.twin,
        bucket=settings.influx_bucket,
        plans=progress.plans,
        site_state=_site_state,
        held=cluster_stage.held,
        query=sink.query,
    )

    # Faust builds its aiohttp application when the web server starts; the view's routes
    # (static files, an event stream) are plain aiohttp, added to it there.
    def _on_webserver_init(web: Any) -> None:
        install_view(web.web_app, view)

    app.on_webserver_init = _on_webserver_init  # type: ignore[method-assign]

    # Routed to the worker that holds the key (Faust table_route), served here otherwise.
    route: Any = app.table_route
    cluster_get = route(table=clusters_table, match_info="cluster")(cluster_view)
    site_get = route(table=sites_table, match_info="site")(site_view)
    app.page("/twin/{cluster}/")(type("ClusterView", (faust.web.View,), {"get": cluster_get}))
    app.page("/twin/{cluster}/{site}/")(type("SiteView", (faust.web.View,), {"get": site_get}))

    return app
