"""The alerting worker as a Faust app of its own (``python -m streams.alerting worker``).

It consumes ``readings`` in its own consumer group, so alerting scales and fails apart from
the twin worker; the same ``AlertStage`` can instead be called from the twin worker's agent
(see ``streams/alerting/README.md``). State lives in two Faust tables with changelogs:
``alert-sites`` (key = site id, co-partitioned with the readings) and ``alert-clusters``
(key = cluster id, fed by the ``<app>-cluster-buckets`` topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import faust
import numpy as np
import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clustertwin_base.kafka_auth import client_security, faust_credentials
from clustertwin_base.settings import Settings
from streams.alerting.config import AlertConfig
from streams.alerting.engine import AlertEngine
from streams.alerting.notify import WebhookNotifier
from streams.alerting.stage import AlertStage, AlertTopics
from streams.end_offsets import EndOffsets
from streams.meter_vectors import MeterVectors
from streams.sink import InfluxSink
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
    from streams.twinlink import catalog_from_twin

    return catalog_from_twin(cfg.cluster_names)


def ensure_topic(
    bootstrap: str, name: str, partitions: int, security: Mapping[str, Any] | None = None
) -> None:
    """Create the alerts topic before the first alert, not by the broker's auto-create
    defaults (whatever its partition count, key = alert id keeps each alert's events in order).

    ``security``: from ``clustertwin_base.kafka_auth.client_security``."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="clustertwin-alerting", **(security or {})
    )
    try:
        if name not in admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def create_alerting_app(
    cfg: AlertingSettings | None = None, settings: Settings | None = None
) -> faust.App:
    from streams.app import FaustTable, faust_datadir, record_from_event

    cfg = cfg or AlertingSettings()
    settings = settings or Settings.load()
    catalog = load_catalog(cfg)
    config = AlertConfig.from_yaml(cfg.config_file) if cfg.config_file else AlertConfig()
    engine = AlertEngine(catalog, config, load_pathways(cfg), twin=cfg.twin)
    app = faust.App(
        cfg.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=cfg.partitions,
        topic_replication_factor=1,
        web_enabled=True,
        web_port=cfg.web_port,
        web_in_thread=False,
        producer_acks=-1,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, cfg.batch_max * 2),
        table_standby_replicas=0,
        autodiscover=False,
        processing_guarantee="at_least_once",
        datadir=str(faust_datadir(cfg.datadir, cfg.app_id)),
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    readings = app.topic(settings.readings_topic, partitions=cfg.partitions, **raw)
    buckets_topic = app.topic(
        f"{cfg.app_id}-cluster-buckets", partitions=cfg.partitions, internal=True, **raw
    )
    security = client_security(settings)
    ensure_topic(settings.kafka_bootstrap, cfg.alerts_topic, cfg.alerts_partitions, security)
    # Faust's own creation of internal topics races the first subscription on a new cluster:
    # the agent then ignores the "missing" topic for good and cluster alerts never fire.
    ensure_topic(settings.kafka_bootstrap, buckets_topic.get_topic_name(), cfg.partitions, security)
    alerts_topic = app.topic(cfg.alerts_topic, **raw)
    table_kw: dict[str, Any] = {
        "default": None,
        "key_type": bytes,
        "value_type": bytes,  # raw codec: the stage stores its own orjson bytes
        "partitions": cfg.partitions,
    }
    sites_table = app.Table("alert-sites", **table_kw)
    clusters_table = app.Table("alert-clusters", **table_kw)
    sink = InfluxSink(
        settings.influx_url,
        settings.require_influx_token(),
        settings.influx_org,
        settings.influx_bucket,
    )
    topics = {cfg.alerts_topic: alerts_topic, buckets_topic.get_topic_name(): buckets_topic}

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        fut = await topics[topic].send(key=key, value=value, headers=headers, force=True)
        await fut

    notifier = WebhookNotifier(cfg.webhook_url) if cfg.webhook_url else None
    stage = AlertStage(
        engine,
        FaustTable(sites_table),
        FaustTable(clusters_table),
        send,
        sink.write,
        AlertTopics(cfg.alerts_topic, buckets_topic.get_topic_name()),
        notifier,
    )
    app.alert_stage = stage  # type: ignore[attr-defined]

    async def close_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Release the HTTP sessions (InfluxDB, webhook) after the consumer has stopped."""
        await sink.close()
        if notifier is not None:
            await notifier.close()

    # mode types the handler as taking a positional-only sender; ours takes it plainly
    app.on_before_shutdown.connect(cast(Any, close_clients))

    lock = asyncio.Lock()
    processed: dict[int, int] = {}
    last_record = [time.monotonic()]

    @app.agent(readings, name="alert-site-stage")
    async def site_agent(stream: Any) -> None:
        async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):
            records = [record_from_event(e) for e in events]
            async with lock:
                await stage.process(records)
            for r in records:
                processed[r.partition] = max(processed.get(r.partition, -1), r.offset)
            last_record[0] = time.monotonic()
            for e in events:
                await stream.ack(e)

    @app.agent(buckets_topic, name="alert-cluster-stage")
    async def cluster_agent(stream: Any) -> None:
        async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):
            async with lock:
                await stage.process_cluster(
                    [(e.message.partition, e.message.value) for e in events]
                )
            for e in events:
                await stream.ack(e)

    end_offsets = EndOffsets(lambda: app.consumer, settings.readings_topic, cfg.partitions)

    if cfg.wall_clock:

        @app.timer(interval=10.0)
        async def wall_clock_silence() -> None:
            """Meters silent by the wall clock, once no record came for ``idle_s``.

            Not while the broker is down or just back: the consumer's last-fetched end
            offsets would call the worker caught up, and every meter would be reported
            silent while the connectors hold their readings for Kafka's return.
            """
            if time.monotonic() - last_record[0] < cfg.idle_s:
                return
            ends = await end_offsets.read(timeout_s=5)
            if ends is None or end_offsets.answering_for() < cfg.idle_s:
                return
            async with lock:
                await stage.tick(
                    int(time.time() * 1000),
                    lambda p: end_offsets.caught_up(p, ends, processed),
                )

    @app.page("/alerts/")
    async def counters(web: Any, request: Any) -> Any:
        return web.json(
            {
                "counters": stage.counters.__dict__,
                "webhook": None if notifier is None else notifier.stats.__dict__,
            }
        )

    return app


def main() -> None:
    """Run the alerting worker (Faust reads its command line from ``sys.argv``).

    Refuses to start (exit 2, one line saying what to fix) when Kafka or InfluxDB refuses
    the credentials or they are missing, instead of hanging in the Kafka bootstrap.
    """
    from streams.worker import WorkerConfigError, check_servers

    settings = Settings.load()
    try:
        check_servers(settings)
    except WorkerConfigError as exc:
        print(f"clustertwin alerting worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    create_alerting_app(settings=settings).main()
