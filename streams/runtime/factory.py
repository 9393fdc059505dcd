"""The Faust app both workers are built from: one place for the settings that keep them alike.

The twin worker and the alerting worker each declared a ``faust.App`` with twenty keyword
arguments, and the copies drifted (the alerting worker lost the fetch and request sizes).
Every setting that is a decision about delivery, sizes or logging lives here; an app gives
only what is its own (id, partitions, web port, batch size, data directory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import faust

from clustertwin_base.kafka_auth import faust_credentials
from clustertwin_base.settings import Settings, cache_dir
from streams.envelope import MAX_DEADLETTER_BYTES
from streams.sink import InfluxSink

# Libraries that log a lot at DEBUG on the hot path; kept at WARNING or above.
CHATTY_LOGGERS = ("aiokafka", "kafka", "faust", "mode")


@dataclass(frozen=True)
class AppSpec:
    """What differs between the workers' Faust apps; everything else is shared policy."""

    app_id: str
    partitions: int
    batch_max: int
    web_port: int
    # the host in the URLs Faust routes table requests to; None: Faust's default
    web_host: str | None = None
    # the interface the web server listens on: Faust's default is every interface, and the
    # views have no sign-in, so the workers default to loopback and deployments open it
    web_bind: str = "127.0.0.1"
    datadir: Path | None = None


def faust_datadir(configured: Path | None, app_id: str) -> Path:
    """Faust creates only the last level of its data directory, so make the parents here."""
    datadir = configured or cache_dir() / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return datadir


def quiet_libraries(level: int) -> None:
    """Keep the chatty libraries at WARNING or above, whatever the root logger's level.

    ``faust worker`` leaves the root logger at DEBUG (its progress spinner wants every
    record), so aiokafka formats a debug record per fetch; that alone cost a third of the
    stream worker's throughput.
    """
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))


def raise_log_levels(loglevel: str) -> None:
    """The root logger at ``loglevel`` and the chatty libraries at WARNING or above, before
    Faust configures logging (a library may log while the worker is being built)."""
    logging.getLogger().setLevel(loglevel)
    quiet_libraries(logging.getLogger().level)


class QuietWorker(faust.Worker):
    """The Faust worker class of both apps: it quiets the libraries once Faust has set up
    logging, so a worker started by ``app.main()`` (the alerting worker) gets the same
    levels as one the launcher builds."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_libraries(level)


def create_faust_app(spec: AppSpec, settings: Settings) -> faust.App:
    """A Faust app with the delivery policy both workers need.

    At least once, with manual acknowledgement by the agents; the memory store, the state
    comes back from the tables' changelogs; no autodiscovery (agents are wired explicitly).
    """
    web_host: dict[str, Any] = {} if spec.web_host is None else {"web_host": spec.web_host}
    return faust.App(
        spec.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=spec.partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        web_enabled=True,
        web_port=spec.web_port,
        web_bind=spec.web_bind,
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
        stream_buffer_maxsize=max(4096, spec.batch_max * 2),
        table_standby_replicas=0,
        autodiscover=False,
        processing_guarantee="at_least_once",
        datadir=str(faust_datadir(spec.datadir, spec.app_id)),
        Worker=QuietWorker,
        **web_host,
    )


class Closable(Protocol):
    async def close(self) -> None: ...


def influx_sink(app: faust.App, settings: Settings, *others: Closable | None) -> InfluxSink:
    """The InfluxDB sink, closed (then each of ``others``, by its ``close``) once the
    consumer has stopped: closing earlier would fail the last batch's writes."""
    sink = InfluxSink(
        settings.influx_url,
        settings.require_influx_token(),
        settings.influx_org,
        settings.influx_bucket,
    )

    async def close_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Release the HTTP sessions after the consumer has stopped."""
        await sink.close()
        for other in others:
            if other is not None:
                await other.close()

    # mode types the handler as taking a positional-only sender; ours takes it plainly
    app.on_before_shutdown.connect(cast(Any, close_clients))
    return sink
