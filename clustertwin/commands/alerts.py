"""``clustertwin alerts``: what is wrong right now, and telling the others you are on it."""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime

import click
import orjson

from clustertwin_base.kafka_auth import (
    KafkaAuthError,
    KafkaUnreachable,
    check_credentials,
    client_security,
)
from clustertwin_base.settings import MissingCredentialError, Settings


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _kafka(settings: Settings) -> dict[str, object]:
    """Client security for these commands, after checking once that Kafka accepts it (a
    refused password would otherwise surface as a bootstrap timeout)."""
    try:
        check_credentials(settings)
        return client_security(settings)
    except (KafkaAuthError, MissingCredentialError, KafkaUnreachable) as exc:
        raise click.ClickException(str(exc)) from exc


def _topic(topic: str | None) -> str:
    from streams.alerting.app import AlertingSettings

    return topic or AlertingSettings().alerts_topic


@click.group()
def alerts() -> None:
    """List and acknowledge emission and data alerts (from the `alerts` topic)."""


@alerts.command("list")
@click.option(
    "--state",
    type=click.Choice(["open", "resolved", "all"]),
    default="open",
    show_default=True,
)
@click.option("--category", type=click.Choice(["emission", "data"]), default=None)
@click.option("--cluster", default=None, help="Only this cluster.")
@click.option("--site", default=None, help="Only this site.")
@click.option("--twin", default=None, help="Only this twin (live, a scenario...).")
@click.option("--topic", default=None, help="Alerts topic [CLUSTERTWIN_ALERTS_ALERTS_TOPIC].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_alerts(
    state: str,
    category: str | None,
    cluster: str | None,
    site: str | None,
    twin: str | None,
    topic: str | None,
    as_json: bool,
) -> None:
    """Show alerts, newest first."""
    from streams.alerting.store import fold, read_alerts

    settings = Settings.load()
    views = fold(read_alerts(settings.kafka_bootstrap, _topic(topic), security=_kafka(settings)))
    rows = []
    for v in views.values():
        a = v.latest
        if (state == "open" and not v.is_open) or (state == "resolved" and v.is_open):
            continue
        if category and a.category.value != category:
            continue
        if cluster and a.scope.cluster != cluster:
            continue
        if site and a.scope.site != site:
            continue
        if twin and a.twin != twin:
            continue
        rows.append(v)
    rows.sort(key=lambda v: v.latest.opened, reverse=True)
    if as_json:
        for v in rows:
            d = v.latest.model_dump(mode="json", by_alias=True, exclude_none=True)
            d["state"] = "open" if v.is_open else "resolved"
            d["acked_by"], d["acked_at"] = v.acked_by, v.acked_at
            click.echo(orjson.dumps(d).decode())
        return
    if not rows:
        click.echo(f"no {state if state != 'all' else ''} alerts".replace("  ", " "))
        return
    click.echo(
        f"{'ID':16}  {'STATE':8}  {'SEVERITY':8}  {'KIND':22}  {'SCOPE':36}  "
        f"{'OPENED (UTC)':16}  {'RESOLVED':16}  ACK"
    )
    for v in rows:
        a = v.latest
        click.echo(
            f"{a.id:16}  {'open' if v.is_open else 'resolved':8}  {a.severity.value:8}  "
            f"{a.kind.value:22}  {a.scope.label[:36]:36}  {_when(a.opened):16}  "
            f"{_when(a.resolved):16}  {v.acked_by or '-'}"
        )
        click.echo(f"    {a.explanation}")


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", default=None, help="Who acknowledges [$USER].")
@click.option("--topic", default=None, help="Alerts topic [CLUSTERTWIN_ALERTS_ALERTS_TOPIC].")
def ack(alert_id: str, by: str | None, topic: str | None) -> None:
    """Acknowledge the alert ALERT_ID (a unique prefix is enough)."""
    from streams.alerting.store import acknowledge, fold, read_alerts

    settings = Settings.load()
    name = _topic(topic)
    security = _kafka(settings)
    views = fold(read_alerts(settings.kafka_bootstrap, name, security=security))
    matches = [v for k, v in views.items() if k.startswith(alert_id)]
    if not matches:
        raise click.ClickException(f"no alert with id {alert_id!r} on topic {name!r}")
    if len(matches) > 1:
        ids = ", ".join(sorted(v.latest.id for v in matches)[:10])
        raise click.ClickException(f"{alert_id!r} matches several alerts: {ids}")
    who = by or os.environ.get("USER") or getpass.getuser()
    a = acknowledge(settings.kafka_bootstrap, name, matches[0], who, security=security)
    click.echo(f"acknowledged {a.id} ({a.kind.value} at {a.scope.label}) as {who}")


@alerts.command("worker")
@click.option("-l", "--loglevel", default="warn", show_default=True)
def worker(loglevel: str) -> None:
    """Run the alerting worker (Faust; settings from CLUSTERTWIN_ALERTS_*).

    Exits 2 with one line saying what to fix when Kafka or InfluxDB refuses the credentials.
    """
    from streams.alerting.app import main

    sys.argv = ["clustertwin-alerts", "worker", "-l", loglevel]
    main()
