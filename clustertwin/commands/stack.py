"""``clustertwin stack``: the native local stack of real servers (no Docker engine needed)."""

from __future__ import annotations

import sys
import time

import click

from clustertwin.stack import SERVICE_NAMES, LocalStack, StackError
from clustertwin.stack.kafka import SECURITY_MODES, Kafka
from clustertwin_base.kafka_acls import ROLES


def _stack(influxdb: str | None, kafka_security: str | None = None) -> LocalStack:
    return LocalStack(influxdb_version=influxdb, kafka_security=kafka_security)


influxdb_option = click.option(
    "--influxdb",
    "influxdb",
    default=None,
    metavar="VERSION",
    help="InfluxDB version to build and run (1.8.10 or 2.7.x); "
    "default from CLUSTERTWIN_INFLUXDB_VERSION.",
)


@click.group()
def stack() -> None:
    """Install, start, check and stop the local Kafka, InfluxDB and Mosquitto."""


@stack.command()
@click.argument("services", nargs=-1)
@influxdb_option
@click.option(
    "--kafka-security",
    type=click.Choice(SECURITY_MODES),
    default=None,
    help="scram: Kafka's client listener requires SASL/SCRAM-SHA-512 (users and random "
    "passwords created at first start). scram-tls: SASL_SSL with a generated CA, one user "
    "per role and the ACLs of clustertwin_base/kafka_acls.py. Default: "
    "CLUSTERTWIN_KAFKA_SECURITY, else the mode this stack last ran with, else none.",
)
def up(services: tuple[str, ...], influxdb: str | None, kafka_security: str | None) -> None:
    """Start SERVICES (default: all), building them into ~/.cache/clustertwin first if needed."""
    began = time.monotonic()
    try:
        started = _stack(influxdb, kafka_security).up(services or None)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    what = ", ".join(started) if started else "nothing (already running)"
    click.echo(f"[stack] up in {time.monotonic() - began:.1f} s; started: {what}")


@stack.command()
@click.argument("services", nargs=-1)
@influxdb_option
def down(services: tuple[str, ...], influxdb: str | None) -> None:
    """Stop SERVICES (default: all). Data stays in the cache for the next `up`."""
    try:
        _stack(influxdb).down(services or None)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc


@stack.command()
@influxdb_option
def status(influxdb: str | None) -> None:
    """Show each service: installed, pid, healthy, address, log file.

    Exit 1 if a service is not healthy.
    """
    rows = _stack(influxdb).status()
    all_up = True
    for row in rows:
        state = "healthy" if row["healthy"] else ("unhealthy" if row["pid"] else "stopped")
        all_up &= state == "healthy"
        click.echo(
            f"{row['service']:<10} {state:<9} pid={row['pid'] or '-':<8} "
            f"installed={'yes' if row['installed'] else 'no':<3} {row['address']:<16} {row['log']}"
        )
    sys.exit(0 if all_up else 1)


@stack.command()
@click.argument("service", type=click.Choice(SERVICE_NAMES))
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines to show.")
@influxdb_option
def logs(service: str, lines: int, influxdb: str | None) -> None:
    """Print the end of SERVICE's log."""
    click.echo(_stack(influxdb).services[service].process.tail(lines))


@stack.command()
@click.option("--show-secrets", is_flag=True, help="Print tokens instead of masking them.")
@click.option(
    "--kafka-role",
    type=click.Choice(ROLES),
    default=None,
    help="scram-tls stack: this role's Kafka user instead of the worker's (e.g. connector, "
    "before `clustertwin connector run`).",
)
@influxdb_option
def env(show_secrets: bool, kafka_role: str | None, influxdb: str | None) -> None:
    """Print the settings clients use as `export` lines.

    Use: eval "$(clustertwin stack env --show-secrets)"
    """
    local = _stack(influxdb)
    values = local.settings()
    if kafka_role is not None:
        kafka = local.services["kafka"]
        if not isinstance(kafka, Kafka) or not kafka.tls:
            raise click.ClickException(
                "--kafka-role needs the stack's Kafka in scram-tls mode "
                "(`clustertwin stack up --kafka-security scram-tls`); other modes have one user"
            )
        values.update(kafka.settings(kafka_role))
    for key, value in sorted(values.items()):
        if not show_secrets and ("TOKEN" in key or "PASSWORD" in key):
            value = "****"
        click.echo(f"export {key}='{value}'")
