"""The alerting worker as a Faust app of its own (``python -m streams.alerting worker``).

It consumes ``<readings>-priced`` (``streams.priced``) in its own consumer group, so alerting
scales and fails apart from the twin worker.

Why not ``readings`` itself: decoding and pricing every reading a second time cost a sixth
to a third of this worker's CPU (``bench/bench_alerting.py``) and a Kafka message per
envelope, for figures the stream worker had already computed; a priced message holds a
site's whole input batch, as columns. Why not the window updates, although they carry the
emissions the drift detectors need: the silent-meter, flat-line and jump detectors judge
each meter's own readings (times and values), which no window keeps. The priced messages
carry exactly what the detectors use, with the ``readings`` record offsets, so replays are
judged as before: ``alert-sites`` keeps the last record offset applied per site, and a batch
the stream worker publishes again after a crash is skipped reading by reading.

State lives in two Faust tables with changelogs: ``alert-sites`` (key = site id,
co-partitioned with the priced topic) and ``alert-clusters`` (key = cluster id, fed by the
``<app>-cluster-buckets`` topic). The same ``AlertStage`` can instead be called from the
twin worker's agent (see ``streams/alerting/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clustertwin_base.kafka_auth import client_security
from clustertwin_base.settings import Settings
from streams.alerting.config import AlertConfig
from streams.alerting.engine import AlertEngine
from streams.alerting.notify import WebhookNotifier
from streams.alerting.stage import AlertStage, AlertTopics
from streams.end_offsets import EndOffsets
from streams.meter_vectors import MeterVectors
from streams.priced import TOPIC_CONFIG, priced_topic
from streams.runtime import (
    AppSpec,
    Batch,
    BatchHandler,
    Batching,
    CaughtUp,
    FaustTable,
    IdleTimer,
    Liveness,
    batch_agent,
    create_faust_app,
    influx_sink,
    raw_table,
    raw_topic,
    stored_then_acked,
    topic_sender,
)
from streams.runtime.health import Readiness, install_health_views
from streams.twinlink import catalog_from_twin
from streams.worker import WorkerConfigError, check_servers
from twin.targets import Pathway

log = logging.getLogger("streams.alerting")


class AlertingSettings(BaseSettings):
    """``CLUSTERTWIN_ALERTS_*``: where the alerting worker reads, writes and notifies."""

    model_config = SettingsConfigDict(env_prefix="CLUSTERTWIN_ALERTS_", extra="ignore")

    app_id: str = "clustertwin-alerting"
    twin: str = "live"
    clusters: str = "dunkirk"
    alerts_topic: str = "alerts"
    alerts_partitions: int = Field(1, ge=1, description="when creating the alerts topic")
    catalog_file: Path | None = Field(None, description="compiled meter index (JSON)")
    pathways_file: Path | None = Field(
        None, description='JSON {"cluster" or "cluster/site": {"years": [...], "values": [...]}}'
    )
    config_file: Path | None = Field(None, description="detector tuning (YAML AlertConfig)")
    webhook_url: str | None = Field(None, description="Slack/Teams incoming webhook")
    wall_clock: bool = Field(True, description="also find silence by the wall clock when idle")
    idle_s: float = Field(60.0, gt=0)
    partitions: int = Field(4, ge=1)
    batch_max: int = Field(2000, ge=1)
    batch_within_s: float = Field(0.2, gt=0)
    web_port: int = 6067
    web_bind: str = Field("127.0.0.1", description="interface the views listen on (0.0.0.0: all)")
    datadir: Path | None = Field(None, description="Faust data dir [cache dir/faust/<app id>]")

    @property
    def cluster_names(self) -> list[str]:
        return [c.strip() for c in self.clusters.split(",") if c.strip()]


def load_pathways(cfg: AlertingSettings) -> dict[str, Pathway]:
    """Pathways per cluster and site: a file if given, else the twin's cluster models."""
    if cfg.pathways_file is not None:
        data = orjson.loads(cfg.pathways_file.read_bytes())
        return {
            k: Pathway(np.array(v["years"], dtype=float), np.array(v["values"], dtype=float))
            for k, v in data.items()
        }
    # Deferred: a worker given a pathways file never loads the twin model (pint, pydantic).
    from twin.model import load_cluster

    out: dict[str, Pathway] = {}
    for name in cfg.cluster_names:
        cluster = load_cluster(name)
        if cluster.plan is not None:
            out[cluster.id] = cluster.plan.pathway()
        for site in cluster.sites:
            if site.plan is not None:
                out[f"{cluster.id}/{site.id}"] = site.plan.pathway()
    return out


def load_catalog(cfg: AlertingSettings) -> MeterVectors:
    if cfg.catalog_file is not None:
        return MeterVectors.from_file(cfg.catalog_file)
    return catalog_from_twin(cfg.cluster_names)


def ensure_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    security: Mapping[str, Any] | None = None,
    configs: Mapping[str, str] | None = None,
    replication: int = 1,
) -> None:
    """Create the alerts topic before the first alert, not by the broker's auto-create
    defaults (whatever its partition count, key = alert id keeps each alert's events in order).

    ``security``: from ``clustertwin_base.kafka_auth.client_security``."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="clustertwin-alerting", **(security or {})
    )
    try:
        if name not in admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                topic = NewTopic(name, partitions, replication, topic_configs=dict(configs or {}))
                admin.create_topics([topic])
    finally:
        admin.close()


def create_alerting_app(
    cfg: AlertingSettings | None = None, settings: Settings | None = None
) -> faust.App:
    """The alerting worker: priced readings -> the site detectors, cluster buckets -> the
    cluster detectors, silence by the wall clock, the ``/alerts/`` counters."""
    cfg = cfg or AlertingSettings()
    settings = settings or Settings.load()
    catalog = load_catalog(cfg)
    config = AlertConfig.from_yaml(cfg.config_file) if cfg.config_file else AlertConfig()
    engine = AlertEngine(catalog, config, load_pathways(cfg), twin=cfg.twin)
    app = create_faust_app(
        AppSpec(
            cfg.app_id,
            cfg.partitions,
            cfg.batch_max,
            cfg.web_port,
            web_bind=cfg.web_bind,
            datadir=cfg.datadir,
        ),
        settings,
    )
    # what the site detectors read (its end offsets judge the wall-clock silence too)
    source = raw_topic(app, priced_topic(settings.readings_topic), partitions=cfg.partitions)
    buckets = raw_topic(
        app, f"{cfg.app_id}-cluster-buckets", partitions=cfg.partitions, internal=True
    )
    ensure_alerting_topics(settings, cfg, buckets.get_topic_name(), source.get_topic_name())
    alerts = raw_topic(app, cfg.alerts_topic)
    sites_table = raw_table(app, "alert-sites", cfg.partitions)
    clusters_table = raw_table(app, "alert-clusters", cfg.partitions)
    notifier = WebhookNotifier(cfg.webhook_url) if cfg.webhook_url else None
    sink = influx_sink(app, settings, notifier)
    stage = AlertStage(
        engine,
        FaustTable(sites_table),
        FaustTable(clusters_table),
        topic_sender([alerts, buckets]),
        sink.write,
        AlertTopics(cfg.alerts_topic, buckets.get_topic_name()),
        notifier,
    )
    app.alert_stage = stage  # type: ignore[attr-defined]

    lock, liveness = asyncio.Lock(), Liveness()
    batching = Batching(cfg.batch_max, cfg.batch_within_s)
    batch_agent(app, source, "alert-site-stage", batching, site_alerts(stage, lock, liveness))
    cluster_batch = stored_then_acked(lock, stage.process_cluster)
    batch_agent(app, buckets, "alert-cluster-stage", batching, cluster_batch)
    if cfg.wall_clock:
        wall_clock_silence(app, cfg, stage, lock, liveness, source.get_topic_name(), settings)
    install_counters_page(app, stage, notifier)
    return app


def ensure_alerting_topics(
    settings: Settings, cfg: AlertingSettings, buckets: str, priced: str
) -> None:
    """The alerts topic, and the cluster-buckets and priced topics before Faust subscribes
    to them (the stream worker creates the priced topic too: whichever starts first)."""
    security = client_security(settings)
    rf = settings.kafka_replication_factor
    ensure_topic(
        settings.kafka_bootstrap, cfg.alerts_topic, cfg.alerts_partitions, security, None, rf
    )
    ensure_topic(settings.kafka_bootstrap, priced, cfg.partitions, security, TOPIC_CONFIG, rf)
    # Faust's own creation of internal topics races the first subscription on a new cluster:
    # the agent then ignores the "missing" topic for good and cluster alerts never fire.
    ensure_topic(settings.kafka_bootstrap, buckets, cfg.partitions, security, None, rf)


def site_alerts(stage: AlertStage, lock: asyncio.Lock, liveness: Liveness) -> BatchHandler:
    """The site detectors over a batch of priced messages; acknowledged once the alerts are
    sent and the state is stored, and counted as processed for the wall-clock silence."""

    async def handle(batch: Batch) -> None:
        async with lock:
            await stage.process_priced(batch.partition_values())
        for r in batch.records:
            liveness.stored(r.partition, r.offset)
        liveness.progressed()
        await batch.ack_all()

    return handle


def wall_clock_silence(
    app: faust.App,
    cfg: AlertingSettings,
    stage: AlertStage,
    lock: asyncio.Lock,
    liveness: Liveness,
    topic: str,
    settings: Settings,
) -> None:
    """Meters silent by the wall clock, once no record came for ``idle_s``.

    Not while the broker is down or just back: the consumer's last-fetched end offsets
    would call the worker caught up, and every meter would be reported silent while the
    connectors hold their readings for Kafka's return. Nor while readings wait for the
    stream worker to price them: a stopped stream worker is not silent meters.
    """
    readings = EndOffsets(lambda: app.consumer, settings.readings_topic, cfg.partitions)

    async def tick(caught_up: CaughtUp) -> None:
        sources = await readings.read(timeout_s=5)
        if sources is None:
            return
        await stage.tick(
            int(time.time() * 1000),
            caught_up,
            lambda p, applied: p in sources and applied + 1 >= sources[p],
        )

    IdleTimer(
        EndOffsets(lambda: app.consumer, topic, cfg.partitions),
        liveness,
        cfg.idle_s,
        lock,
        tick,
        ready=lambda: liveness.idle_for() >= cfg.idle_s,
    ).install(app, interval_s=10.0, name="wall_clock_silence")


def install_counters_page(
    app: faust.App, stage: AlertStage, notifier: WebhookNotifier | None
) -> None:
    install_health_views(app, Readiness(app))

    @app.page("/alerts/")
    async def counters(web: Any, request: Any) -> Any:
        return web.json(
            {
                "counters": stage.counters.__dict__,
                "webhook": None if notifier is None else notifier.stats.__dict__,
            }
        )


def main() -> None:
    """Run the alerting worker (Faust reads its command line from ``sys.argv``).

    Refuses to start (exit 2, one line saying what to fix) when Kafka or InfluxDB refuses
    the credentials or they are missing, instead of hanging in the Kafka bootstrap.
    """
    settings = Settings.load()
    try:
        check_servers(settings)
    except WorkerConfigError as exc:
        print(f"clustertwin alerting worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    create_alerting_app(settings=settings).main()
