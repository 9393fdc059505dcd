"""``clustertwin connector list|lint|run``: any installed connector, by its YAML config."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from clustertwin_base.settings import Settings

log = logging.getLogger("clustertwin.connector")


@click.group()
def connector() -> None:
    """Site connectors: list the installed ones, check a config, run one."""


@connector.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """Connectors installed under the clustertwin.connectors entry point group."""
    from connectors.sdk.base import describe
    from connectors.sdk.registry import available

    rows = []
    for info in available():
        try:
            summary = describe(info.load())
        except Exception as exc:  # a broken third-party package must not hide the others
            summary = f"(cannot load: {exc})"
        rows.append(
            {
                "name": info.name,
                "target": info.target,
                "distribution": info.distribution,
                "description": summary,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no connectors installed")
    for row in rows:
        click.echo(f"{row['name']:<12} {row['description']}  [{row['target']}]")


@connector.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def lint(config: Path) -> None:
    """Validate CONFIG: its fields, its cluster, the meter ids it maps and their units."""
    from connectors.sdk.registry import ConfigError, lint_report

    try:
        report = lint_report(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{config}: ok ({report.summary()})")


def load_or_exit(config: Path) -> tuple[Any, Any, Any]:
    """(connector class, config, meter index) of CONFIG, or exit 1 naming the bad item."""
    from connectors.sdk.registry import ConfigError
    from connectors.sdk.registry import lint as do_lint

    try:
        return do_lint(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def kafka_or_exit(cfg: Any, bootstrap: str | None, prog: str) -> Any:
    """The settings, once Kafka accepts the connector's credentials; else exit 2 saying why."""
    from connectors.sdk.runner import ConnectorStartError, check_kafka_access

    settings = Settings.load()
    try:
        check_kafka_access(cfg, bootstrap=bootstrap, settings=settings)
    except ConnectorStartError as exc:
        click.echo(f"{prog}: {exc}", err=True)
        sys.exit(2)
    return settings


@connector.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--max-readings", type=int, default=None, help="Stop after this many samples.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: config, settings).")
@click.option(
    "--metrics-every",
    type=float,
    default=30.0,
    show_default=True,
    help="Log the metrics this often (seconds).",
)
def run(
    config: Path,
    duration: float | None,
    max_readings: int | None,
    bootstrap: str | None,
    metrics_every: float,
) -> None:
    """Run the connector CONFIG describes until Ctrl-C (or a limit).

    Refuses to start (exit 2) when Kafka rejects the credentials or they are missing, and
    stops (exit 2) when the source refuses us for a certificate or configuration reason on
    the first connection (later, such a refusal is retried at the longest backoff).
    """
    from connectors.sdk.base import SourceMisconfigured
    from connectors.sdk.metrics import ConnectorMetrics
    from connectors.sdk.runner import ConnectorRunner, make_publisher

    cls, cfg, index = load_or_exit(config)
    settings = kafka_or_exit(cfg, bootstrap, "clustertwin connector")

    metrics = ConnectorMetrics()

    async def main() -> ConnectorMetrics:
        runner = ConnectorRunner(
            cls(cfg, index),
            make_publisher(cfg, metrics, bootstrap=bootstrap, settings=settings),
            metrics=metrics,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)

        async def report() -> None:
            while True:
                await asyncio.sleep(metrics_every)
                log.info("metrics %s", json.dumps(metrics.snapshot()))

        reporter = asyncio.create_task(report())
        try:
            return await runner.run(max_readings=max_readings, duration=duration)
        finally:
            reporter.cancel()

    try:
        asyncio.run(main())
    except SourceMisconfigured as exc:  # before the source ever worked: waiting cannot fix it
        click.echo(json.dumps(metrics.snapshot()))
        click.echo(f"clustertwin connector: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(metrics.snapshot()))
