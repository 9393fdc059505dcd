"""The Faust app that keeps the live twin: agents, tables, timers and web views.

Faust runs the consumer group, the changelog-backed tables (recovery after a crash or a
rebalance) and the web server; the per-batch work lives in ``streams.site_stage`` and
``streams.cluster_stage`` so it can be profiled and unit-tested without a broker, and the
parts every worker is made of (the Faust settings, raw topics and tables, the batch agent, the
watchdog, the idle timer) live in ``streams.runtime``. This module only wires them together.

Two agents:

* ``readings`` (key = site) -> ``SiteStage``: validation, dead letters, pricing, site and
  meter windows, latest readings, year-to-date; table ``<app>-sites`` (one entry per site).
* ``<app>-cluster-updates`` (key = cluster) -> ``ClusterStage``: cluster windows as the sum of
  their sites' windows; table ``<app>-clusters``.

Records are taken in batches with manual acknowledgement: a record is acknowledged (and its
offset becomes committable) only after its effects are stored (see ``streams.delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from clustertwin_base.settings import Settings
from streams import influx_schema
from streams.cluster_stage import ClusterStage
from streams.config import StreamSettings
from streams.delivery import OverlappedCommits, PreparedBatch, Topics
from streams.editions import YtdChanges
from streams.end_offsets import EndOffsets
from streams.envelope import Limits
from streams.gapfill import (
    GapFiller,
    InfluxReference,
    declarations_from_file,
    declarations_from_twin,
)
from streams.meter_vectors import MeterVectors
from streams.priced import priced_topic
from streams.progress_series import ProgressWriter
from streams.runtime import (
    AppSpec,
    Batch,
    Batching,
    CaughtUp,
    FaustTable,
    IdleTimer,
    Liveness,
    Send,
    StallWatchdog,
    batch_agent,
    create_faust_app,
    influx_sink,
    raw_table,
    raw_topic,
    stored_then_acked,
    topic_sender,
)
from streams.runtime.health import Readiness, install_health_views, json_response, when_ready
from streams.sink import InfluxSink, fields_line
from streams.site_stage import SiteStage
from streams.stored import InfluxStore, SettledReads
from streams.twinlink import plans_from_twin
from streams.webview import ViewSource
from streams.webview import install as install_view
from streams.windows import SiteState, completeness

log = logging.getLogger("streams")


def create_app(
    stream_settings: StreamSettings, settings: Settings, catalog: MeterVectors, partitions: int
) -> faust.App:
    """The twin worker: readings -> site stage -> cluster updates -> cluster stage, the
    watchdog, the idle flush, the progress series and the ``/twin/`` and ``/view/`` pages."""
    cfg = stream_settings
    app = create_faust_app(
        AppSpec(
            cfg.app_id,
            partitions,
            cfg.batch_max,
            cfg.web_port,
            web_host=cfg.web_host,
            web_bind=cfg.web_bind,
            datadir=cfg.datadir,
        ),
        settings,
    )
    readings = raw_topic(app, settings.readings_topic, partitions=partitions)
    updates = raw_topic(app, f"{cfg.app_id}-cluster-updates", partitions=partitions, internal=True)
    outputs = [raw_topic(app, settings.deadletter_topic), raw_topic(app, cfg.late_topic), updates]
    outputs.append(raw_topic(app, priced_topic(settings.readings_topic)))  # what alerting reads
    sites_table = raw_table(app, "sites", partitions)
    clusters_table = raw_table(app, "clusters", partitions)
    sink = influx_sink(app, settings)
    twin = build_twin(
        cfg,
        settings,
        catalog,
        sink,
        (sites_table, clusters_table),
        topic_sender(outputs),
        updates.get_topic_name(),
    )
    app.twin_stages = (twin.site_stage, twin.cluster_stage)  # type: ignore[attr-defined]

    batching = Batching(cfg.batch_max, cfg.batch_within_s)
    site_delivery = SiteDelivery(app, twin)
    batch_agent(
        app, readings, "site-stage", batching, site_delivery.take, on_exit=twin.commits.abandon
    )
    cluster_batch = stored_then_acked(twin.lock, twin.cluster_stage.process)
    cluster_batching = Batching(max(cfg.batch_max, 20_000), cfg.cluster_within_s)
    batch_agent(app, updates, "cluster-stage", cluster_batching, cluster_batch)

    twin.gapfill = GapFiller(
        _fill_declarations(cfg, catalog),
        InfluxReference(sink),
        topic_sender([readings]),
        readings.get_topic_name(),
        cfg.twin,
    )
    install_timers(app, twin, partitions)
    app.on_rebalance_complete.connect(twin.on_rebalance)
    install_twin_views(app, twin)
    return app


@dataclass
class Twin:
    """What the twin worker's agents, timers and views share."""

    cfg: StreamSettings
    settings: Settings
    catalog: MeterVectors
    sink: InfluxSink
    sites_table: Any
    clusters_table: Any
    site_stage: SiteStage
    cluster_stage: ClusterStage
    progress: ProgressWriter
    commits: OverlappedCommits
    # one batch or timer at a time: the stages' state is not shared between tasks
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    liveness: Liveness = field(default_factory=Liveness)
    gapfill: GapFiller | None = None
    # the factor restatements' changes of the year to date, folded into progress
    restated: YtdChanges | None = None

    async def flush_idle(self, caught_up: CaughtUp) -> None:
        """Close the windows of silent sites, once the batch being stored is stored."""
        await self.commits.wait(raise_errors=False)
        await self.site_stage.flush_idle(self.cfg.idle_flush_s, caught_up)

    async def fill_gaps(self, caught_up: CaughtUp) -> None:
        """Fill the due intervals of silent meters (``streams.gapfill``), on stored states."""
        await self.commits.wait(raise_errors=False)
        if self.gapfill is None or self.site_stage.first_batch is None:
            return
        await self.gapfill.run(self.site_state, self.site_stage.clock_inputs, caught_up)

    async def write_progress(self) -> None:
        """The progress series and the worker's counters, one point per 10 s."""
        if self.restated is not None:  # read outside the lock: it may wait on InfluxDB
            self.progress.changes = await self.restated.refresh()
        async with self.lock:
            lines = self.progress.lines(self.site_stage, self.cluster_stage)
            c = self.site_stage.counters
            now_ms = int(time.time() * 1000)
            lines.append(
                fields_line(
                    influx_schema.PIPELINE,
                    {influx_schema.TWIN: self.cfg.twin, influx_schema.APP: self.cfg.app_id},
                    {
                        "records": c.records,
                        "readings": c.readings,
                        "accepted": c.accepted,
                        "deadletters": c.deadletters,
                        "late": c.late,
                        "duplicates": c.duplicates,
                        "cluster_late_updates": self.cluster_stage.counters.cluster_late_updates,
                        "points": c.points + self.cluster_stage.counters.points,
                        "sink_retries": self.sink.stats.retries,
                    },
                    now_ms - now_ms % 10_000,
                )
            )
            await self.sink.write(lines)

    async def on_rebalance(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.cluster_stage.reset_index()

    def site_state(self, site: str) -> SiteState | None:
        raw = self.sites_table.data.get(site.encode())
        return None if raw is None else SiteState.loads(raw)


def build_twin(
    cfg: StreamSettings,
    settings: Settings,
    catalog: MeterVectors,
    sink: InfluxSink,
    tables: tuple[Any, Any],
    send: Send,
    updates_topic: str,
) -> Twin:
    """The two stages over their tables, the progress writer and the overlapped commits."""
    sites_table, clusters_table = tables
    store = InfluxStore(sink)
    site_stage = SiteStage(
        catalog,
        FaustTable(sites_table),
        sink.write,
        send,
        Topics(
            settings.deadletter_topic,
            cfg.late_topic,
            updates_topic,
            priced_topic(settings.readings_topic),
        ),
        cfg.twin,
        cfg.grace_ms,
        limits=Limits(horizon_years=cfg.horizon_years),
        store=store,
        ytd_every_ms=cfg.ytd_every_ms,
    )
    commits = OverlappedCommits(site_stage)
    cluster_stage = ClusterStage(
        catalog,
        FaustTable(clusters_table),
        sink.write,
        cfg.twin,
        int(cfg.cluster_retention_s * 1000),
        # restating a window reads the site windows back: never half-written ones
        store=SettledReads(store, lambda: commits.wait(raise_errors=False)),
    )
    return Twin(
        cfg=cfg,
        settings=settings,
        catalog=catalog,
        sink=sink,
        sites_table=sites_table,
        clusters_table=clusters_table,
        site_stage=site_stage,
        cluster_stage=cluster_stage,
        progress=ProgressWriter(catalog, cfg.twin, plans=_plans(cfg)),
        commits=commits,
        restated=YtdChanges(sink, cfg.twin),
    )


class SiteDelivery:
    """The site agent's batches: prepared under the lock, stored while the next is prepared
    (``OverlappedCommits``), acknowledged only after the commit.

    A record the stage holds back (a gap before it) is not acknowledged; the consumer seeks
    back to it after the commit, so it comes again in order.
    """

    def __init__(self, app: faust.App, twin: Twin) -> None:
        self._app = app
        self._twin = twin

    async def take(self, batch: Batch) -> None:
        # cut by bytes: each part is prepared, stored and acknowledged on its own (in order)
        for part in batch.split(self._twin.cfg.batch_max_bytes):
            await self._take(part)

    async def _take(self, batch: Batch) -> None:
        twin = self._twin
        records = batch.records

        async def stored(prepared: PreparedBatch) -> None:
            await self._stored(batch, prepared)

        async with twin.lock:
            twin.liveness.started()
            await twin.commits.submit(records, stored)
            if not twin.cfg.overlap_commits:
                await twin.commits.wait()

    async def _stored(self, batch: Batch, prepared: PreparedBatch) -> None:
        """Acknowledge what is stored, seek back over gaps (after the commit)."""
        liveness = self._twin.liveness
        held_ids = {(r.partition, r.offset) for r in prepared.held}
        for e, r in zip(batch.events, prepared.records_in, strict=True):
            if (r.partition, r.offset) in held_ids:
                continue
            liveness.stored(r.partition, r.offset)
            await batch.ack(e)
        topic = self._twin.settings.readings_topic
        for partition, offset in prepared.seeks.items():
            await self._app.consumer.seek(TP(topic, partition), offset)
        liveness.progressed()


def install_timers(app: faust.App, twin: Twin, partitions: int) -> None:
    """The watchdog, the idle flush and the progress series."""
    cfg, topic = twin.cfg, twin.settings.readings_topic
    StallWatchdog(
        lambda: app.consumer,
        topic,
        partitions,
        twin.liveness,
        cfg.stall_s,
        outage=lambda: twin.sink.stats.outage_started is not None,
    ).install(app)
    # Not while stopping: Faust keeps running timers while it waits for the agents' records
    # to be acknowledged, and the cluster stage's would wait behind the lock.
    # one view of the readings topic's end offsets (and of whether the broker answers)
    ends = EndOffsets(lambda: app.consumer, topic, partitions)
    IdleTimer(
        ends,
        twin.liveness,
        cfg.idle_flush_s,
        twin.lock,
        twin.flush_idle,
        ready=lambda: not app.should_stop,
    ).install(app, interval_s=1.0, name="idle_flush")
    if twin.gapfill is not None and twin.gapfill.decls:
        IdleTimer(
            ends,
            twin.liveness,
            cfg.idle_flush_s,
            twin.lock,
            twin.fill_gaps,
            ready=lambda: not app.should_stop,
        ).install(app, interval_s=5.0, name="gap_fill")

    async def write_progress() -> None:
        if app.should_stop:
            return  # see the idle flush
        await twin.write_progress()

    app.timer(interval=cfg.progress_every_s)(write_progress)


def install_twin_views(app: faust.App, twin: Twin) -> None:
    """``/twin/`` (the worker's counters), the live view ``/view/`` and the twin as JSON,
    ``/twin/<cluster>/`` and ``/twin/<cluster>/<site>/``."""
    catalog, sink = twin.catalog, twin.sink
    readiness = Readiness(app, (twin.sites_table, twin.clusters_table))
    install_health_views(app, readiness)

    @app.page("/twin/")
    async def twin_index(web: Any, request: Any) -> Any:
        return json_response(
            {
                "twin": twin.cfg.twin,
                "clusters": {c: sites for c, sites in catalog.clusters.items()},
                "counters": twin.site_stage.counters.__dict__,
                "latency_ms": twin.site_stage.latency_summary(),
                "sink": {
                    "lines": sink.stats.lines,
                    "by_measurement": dict(sink.stats.by_measurement),
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
            return json_response({"error": f"unknown cluster {cluster!r}"}, status=404)
        body = twin.cluster_stage.twin_json(cluster)
        body["sites"] = catalog.clusters[cluster]
        body["completeness"] = cluster_completeness(twin, catalog.clusters[cluster])
        return json_response(body)

    async def site_view(view: Any, request: Any, **match: Any) -> Any:
        cluster, site = match["cluster"], match["site"]
        if not catalog.has_site(cluster, site):
            return json_response({"error": f"unknown site {site!r} of {cluster!r}"}, status=404)
        state = twin.site_state(site)
        if state is None:
            return json_response({"cluster": cluster, "site": site, "latest": {}, "no_data": True})
        return json_response(state.twin())

    install_live_view(app, twin)

    # Routed to the worker that holds the key (Faust table_route), served here otherwise.
    route: Any = app.table_route
    # 503 with the reason until the router knows the tables' partitions (it answered 500)
    cluster_get = when_ready(
        readiness, route(table=twin.clusters_table, match_info="cluster")(cluster_view)
    )
    site_get = when_ready(readiness, route(table=twin.sites_table, match_info="site")(site_view))
    app.page("/twin/{cluster}/")(type("ClusterView", (faust.web.View,), {"get": cluster_get}))
    app.page("/twin/{cluster}/{site}/")(type("SiteView", (faust.web.View,), {"get": site_get}))


def cluster_completeness(twin: Twin, sites: Any) -> dict[str, Any]:
    """The cluster's measured, estimated and gap-filled figures and shares: the sums of its
    sites' (``streams.windows.completeness``), of the sites this worker holds
    (``sites_counted``; with several workers, the others hold the rest)."""
    qytd: dict[tuple[int, str, int], list[int]] = {}
    counted = []
    for site in sites:
        state = twin.site_state(site)
        if state is None:
            continue
        counted.append(site)
        for key, vec in state.qytd.items():
            acc = qytd.setdefault(key, [0] * len(vec))
            acc[:] = [a + b for a, b in zip(acc, vec, strict=True)]
    return {"sites_counted": counted, "by_year": completeness(qytd)}


def install_live_view(app: faust.App, twin: Twin) -> None:
    """The live view's routes (static files, an event stream) are plain aiohttp: Faust
    builds its aiohttp application when the web server starts, they are added to it there."""
    view = ViewSource(
        catalog=twin.catalog,
        twin=twin.cfg.twin,
        bucket=twin.settings.influx_bucket,
        plans=twin.progress.plans,
        site_state=twin.site_state,
        held=twin.cluster_stage.held,
        query=twin.sink.query,
    )

    def _on_webserver_init(web: Any) -> None:
        install_view(web.web_app, view)

    app.on_webserver_init = _on_webserver_init  # type: ignore[method-assign]


def _fill_declarations(cfg: StreamSettings, catalog: MeterVectors) -> dict[str, Any]:
    """The gap-fill declarations: of the gap-fill file if set (a bad one stops the start:
    its error names the meter), else of the twin's cluster files (none with a compiled
    catalog)."""
    if cfg.gapfill_file is not None:
        return declarations_from_file(cfg.gapfill_file, catalog)
    if cfg.catalog_file is not None:
        return {}
    try:
        return declarations_from_twin(cfg.cluster_names)
    except Exception as exc:  # the twin itself must keep running
        log.error("no gap-fill declarations from the twin (%s); no gap filling", exc)
        return {}


def _plans(cfg: StreamSettings) -> dict[Any, Any]:
    """Target plans from the twin, for the progress series (none with a compiled catalog)."""
    if cfg.catalog_file is not None:
        return {}
    try:
        return dict(plans_from_twin(cfg.cluster_names))
    except Exception as exc:  # progress is a convenience; the twin itself must keep running
        log.error("no target plans from the twin (%s); progress without pathway", exc)
        return {}
