"""Start the stream worker: load the meter index, make sure the topics exist, run Faust.

``python -m streams`` and ``clustertwin worker run`` both end here. The worker refuses to
start, with a message saying what to set, when the InfluxDB token or the cluster model is
missing, instead of starting and failing on the first batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from clustertwin_base.kafka_auth import (
    KafkaAuthError,
    KafkaUnreachable,
    check_credentials,
    client_security,
)
from clustertwin_base.settings import MissingCredentialError, Settings
from streams.app import create_app
from streams.config import StreamSettings
from streams.meter_vectors import CatalogError, MeterVectors
from streams.priced import TOPIC_CONFIG, priced_topic
from streams.runtime import raise_log_levels
from streams.sink import InfluxAuthError, InfluxUnreachable, check_write_access
from streams.twinlink import catalog_from_twin

log = logging.getLogger("streams")


class WorkerConfigError(RuntimeError):
    """The worker cannot start; the message says why and what to change."""


def load_catalog(cfg: StreamSettings) -> MeterVectors:
    if cfg.catalog_file is not None:
        return MeterVectors.from_file(cfg.catalog_file)

    return catalog_from_twin(cfg.cluster_names)


def check_servers(settings: Settings, timeout: float = 10.0) -> None:
    """Refuse to start when Kafka or InfluxDB refuses our credentials (or they are missing).

    Asked once, within ``timeout`` each: otherwise a wrong password shows as a worker that
    hangs in its Kafka bootstrap or retries InfluxDB writes forever. A server that is only
    down is no reason to refuse: the worker waits for it (and is restarted by its
    supervisor) as it always has.
    """
    try:
        check_credentials(settings, timeout=timeout)
    except (KafkaAuthError, MissingCredentialError) as exc:
        raise WorkerConfigError(str(exc)) from exc
    except KafkaUnreachable as exc:
        log.warning("%s; starting anyway", exc)
    try:
        check_write_access(
            settings.influx_url,
            settings.require_influx_token(),
            settings.influx_org,
            settings.influx_bucket,
            timeout=timeout,
        )
    except (InfluxAuthError, MissingCredentialError) as exc:
        raise WorkerConfigError(str(exc)) from exc
    except InfluxUnreachable as exc:
        log.warning("%s; starting anyway, writes are retried", exc)


def ensure_topics(settings: Settings, cfg: StreamSettings) -> int:
    """Create the topics the worker reads and writes if missing; return `readings` partitions.

    The cluster-updates topic gets as many partitions as `readings`, as Faust's co-partitioned
    tables require.
    """
    # dead letters carry whole bad messages (up to MAX_DEADLETTER_BYTES): their topics must
    # take more than a broker's default 1 MB, or a big bad message stalls the worker
    big = {"max.message.bytes": str(8 * 1024 * 1024)}
    priced = priced_topic(settings.readings_topic)  # streams.priced: what alerting reads
    configs = {settings.deadletter_topic: big, cfg.late_topic: big, priced: TOPIC_CONFIG}

    def create(admin: KafkaAdminClient, wanted: dict[str, int]) -> None:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=settings.kafka_replication_factor,
                topic_configs=configs.get(name, {}),
            )
            for name, n in wanted.items()
            if name not in existing
        ]
        for topic in new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([topic])

    security = client_security(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="ct-worker", **security
    )
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **security)
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
                create(admin, {f"{cfg.app_id}-cluster-updates": len(parts), priced: len(parts)})
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
    check_servers(settings)
    partitions = ensure_topics(settings, cfg)
    app = create_app(cfg, settings, catalog, partitions)
    # the app's worker class (streams.runtime.QuietWorker), its stop bounded
    worker_cls = bounded_stop_worker(cast(type[Any], app.conf.Worker), cfg.stop_timeout_s)
    worker = worker_cls(app, loglevel=cfg.loglevel, quiet=True)
    raise_log_levels(cfg.loglevel)
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


def arm_stop_deadline(seconds: float) -> threading.Timer:
    """Exit the process if a requested stop has not finished within ``seconds``.

    Faust waits without limit, when stopping, for every record handed to an agent to be
    acknowledged and for its last offset commit. With two workers the second can rebalance
    while stopping, close its consumer and then retry that commit against an unreachable
    group coordinator forever (seen in 3 of 5 two-worker stops). Exiting is safe: nothing
    unstored is ever acknowledged, so its records come again.
    """

    def expire() -> None:
        log.error(
            "stop still not finished after %.0f s: exiting now (nothing unstored was "
            "acknowledged; its records come again)",
            seconds,
        )
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def bounded_stop_worker(worker_cls: type[Any], stop_timeout_s: float) -> type[Any]:
    """A Faust ``Worker`` class whose stop on SIGTERM/SIGINT is bounded (``arm_stop_deadline``)."""

    class BoundedStopWorker(worker_cls):
        def _schedule_shutdown(self, signal: Any) -> None:
            if not getattr(self, "_stop_deadline", None):
                self._stop_deadline = arm_stop_deadline(stop_timeout_s)
            super()._schedule_shutdown(signal)

    return BoundedStopWorker


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run_worker(argv=argv or sys.argv[1:])
    except WorkerConfigError as exc:
        print(f"clustertwin worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
