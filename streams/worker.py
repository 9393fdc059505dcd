"""Start the stream worker: load the meter index, make sure the topics exist, run Faust.

``python -m streams`` and ``clustertwin worker run`` both end here. The worker refuses to
start, with a message saying what to set, when the InfluxDB token or the cluster model is
missing, instead of starting and failing on the first batch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Sequence

from clustertwin.settings import MissingCredentialError, Settings
from streams.catalog import CatalogError, MeterCatalog
from streams.config import StreamSettings

log = logging.getLogger("streams")


class WorkerConfigError(RuntimeError):
    """The worker cannot start; the message says why and what to change."""


def load_catalog(cfg: StreamSettings) -> MeterCatalog:
    if cfg.catalog_file is not None:
        return MeterCatalog.from_file(cfg.catalog_file)
    from streams.twinlink import catalog_from_twin

    return catalog_from_twin(cfg.cluster_names)


def ensure_topics(settings: Settings, cfg: StreamSettings) -> int:
    """Create the topics the worker reads and writes if missing; return `readings` partitions.

    The cluster-updates topic gets as many partitions as `readings`, as Faust's co-partitioned
    tables require.
    """
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    def create(admin: KafkaAdminClient, wanted: dict[str, int]) -> None:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1)
            for name, n in wanted.items()
            if name not in existing
        ]
        for topic in new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([topic])

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="ct-worker")
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        create(
            admin,
            {
                settings.readings_topic: cfg.readings_partitions,
                settings.deadletter_topic: 1,
                cfg.late_topic: 1,
            },
        )
        for _ in range(100):
            parts = consumer.partitions_for_topic(settings.readings_topic)
            if parts:
                create(admin, {f"{cfg.app_id}-cluster-updates": len(parts)})
                return len(parts)
            time.sleep(0.2)
            consumer.topics()  # refresh metadata
    finally:
        consumer.close()
        admin.close()
    raise WorkerConfigError(f"topic {settings.readings_topic!r} has no partitions")


def run_worker(
    cfg: StreamSettings | None = None,
    settings: Settings | None = None,
    argv: Sequence[str] = (),
) -> None:
    """Run until stopped (SIGTERM/SIGINT). Blocks."""
    cfg = cfg or StreamSettings()
    settings = settings or Settings.load()
    try:
        settings.require_influx_token()
        catalog = load_catalog(cfg)
    except (MissingCredentialError, CatalogError) as exc:
        raise WorkerConfigError(str(exc)) from exc
    partitions = ensure_topics(settings, cfg)
    from faust import Worker

    from streams.app import create_app

    app = create_app(cfg, settings, catalog, partitions)
    worker = Worker(app, loglevel=cfg.loglevel, quiet=True)
    # Faust leaves the root logger at DEBUG for libraries that log before it configures
    # logging; that alone costs a third of the throughput.
    logging.getLogger().setLevel(cfg.loglevel)
    for name in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    log.warning(
        "worker %s: twin %r, %d meters in %s, readings=%s (%d partitions), web :%d",
        cfg.app_id,
        cfg.twin,
        len(catalog),
        ",".join(catalog.clusters),
        settings.readings_topic,
        partitions,
        cfg.web_port,
    )
    worker.execute_from_commandline()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run_worker(argv=argv or sys.argv[1:])
    except WorkerConfigError as exc:
        print(f"clustertwin worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
