"""``clustertwin backfill``: load a source's past into the live twin while the site stays live.

The connector CONFIG describes reads ``[--from, --to)`` from its source (a historian or CSV
export, a simulation: connectors whose ``reads_history`` is true) and publishes it through
the same runner, validation and topic as the live connector. The worker restates the
windows the readings fall in and counts a reading once however often it is sent, so a
backfill may overlap what the live connector sent, may be run again (a second run changes
nothing) and may be stopped and restarted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import click

from clustertwin.commands.connector import kafka_or_exit, load_or_exit
from connectors.sdk.base import Connector, Item, Sample
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import ConnectorRunner, make_publisher
from connectors.sdk.timespec import parse_time
from twin.readings import now_ms

# tries to open the source (the runner's backoff between them: 0.5, 1, 2, 4 s) before giving up
OPEN_ATTEMPTS = 5


class BackfillSource(Connector[Any]):
    """The live connector's ``history`` as a finite source the runner can drive."""

    def __init__(
        self,
        inner: Connector[Any],
        start_ms: int,
        end_ms: int,
        progress: Callable[[int, int], None],
    ) -> None:
        super().__init__(inner.config, inner.index)
        self.inner = inner
        self.start_ms, self.end_ms = start_ms, end_ms
        self.progress = progress  # (newest reading time so far, samples so far)
        self.samples = 0
        self.newest = start_ms
        self.error: Exception | None = None
        self.open_failures = 0

    async def open(self) -> None:
        # The runner reconnects a live source forever; a backfill against a source that
        # cannot be reached must end, with the reason, after a few tries.
        try:
            await self.inner.open()
        except Exception as exc:
            self.open_failures += 1
            if self.open_failures < OPEN_ATTEMPTS:
                raise
            self.error = exc  # stream() then yields nothing: the run ends and reports it

    async def close(self) -> None:
        await self.inner.close()

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        # A backfill is finite: a source error ends it (the runner would retry a live
        # source forever) and is reported; what was published stays, and a rerun is safe.
        if self.error is not None:
            return
        try:
            async for batch in self.inner.history(self.start_ms, self.end_ms):
                for item in batch:
                    if isinstance(item, Sample):
                        self.samples += 1
                        self.newest = max(self.newest, item.ts)
                self.progress(self.newest, self.samples)
                yield batch
        except Exception as exc:  # reported by the command, not retried
            self.error = exc


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "start", required=True, help="now-30d, or ISO 8601 (UTC by default).")
@click.option("--to", "end", default="now", show_default=True, help="End (exclusive).")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: config, settings).")
def backfill(config: Path, start: str, end: str, bootstrap: str | None) -> None:
    """Load the readings of [--from, --to) from CONFIG's source into the live twin.

    Idempotent: the worker counts every reading once, so running it twice changes nothing.
    Exits 2 when the connector cannot read its source's past, or Kafka refuses it.
    """
    cls, cfg, index = load_or_exit(config)
    refusal = cls.history_refusal(cfg)
    if refusal is not None:
        click.echo(
            f"clustertwin backfill: the {cfg.connector} connector cannot read its source's "
            f"past ({refusal}); use an export (csv) or a historian connector",
            err=True,
        )
        sys.exit(2)
    wall = now_ms()
    try:
        start_ms, end_ms = parse_time(start, wall), min(parse_time(end, wall), wall)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if start_ms >= end_ms:
        raise click.BadParameter(f"--from {start} is not before --to {end}")
    # its own instance name: its own disk buffer, and envelopes that say where they came from
    # (a buffer.dir set in the config is the live one's: the backfill's goes beside it)
    update: dict[str, Any] = {"name": f"{cfg.name}-backfill"}
    if cfg.buffer.dir is not None:
        own = cfg.buffer.dir.with_name(f"{cfg.buffer.dir.name}-backfill")
        update["buffer"] = cfg.buffer.model_copy(update={"dir": own})
    cfg = cfg.model_copy(update=update)
    settings = kafka_or_exit(cfg, bootstrap, "clustertwin backfill")

    minutes = max(1, (end_ms - start_ms) // 60_000)
    with click.progressbar(length=minutes, label="backfill", show_pos=True) as bar:
        done = [0]

        def progress(newest: int, samples: int) -> None:
            at = min(minutes, max(0, (newest - start_ms) // 60_000))
            bar.label = f"backfill ({samples} readings)"
            bar.update(at - done[0])
            done[0] = at

        source = BackfillSource(cls(cfg, index), start_ms, end_ms, progress)

        async def main() -> ConnectorMetrics:
            metrics = ConnectorMetrics()
            runner = ConnectorRunner(
                source,
                make_publisher(cfg, metrics, bootstrap=bootstrap, settings=settings),
                metrics=metrics,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runner.stop)
            return await runner.run()

        metrics = asyncio.run(main())
        if source.error is None:
            bar.update(minutes - done[0])
    click.echo(json.dumps(metrics.snapshot()))
    if source.error is not None:
        click.echo(f"clustertwin backfill: the source failed: {source.error}", err=True)
        sys.exit(1)
