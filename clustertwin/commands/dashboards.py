"""``clustertwin dashboards``: generate, check and picture the Grafana dashboards.

Provisioning is by file only (docker-compose mounts ``dashboards/provisioning`` into the
official Grafana image); no command here talks to a Grafana server.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from clustertwin_base.settings import Settings


@click.group()
def dashboards() -> None:
    """Grafana dashboards and alert rules, as code (see dashboards/README.md)."""


@dashboards.command()
@click.option(
    "--check",
    is_flag=True,
    help="Fail if the committed files are stale or break Grafana's schema; write nothing.",
)
def build(check: bool) -> None:
    """Regenerate dashboards/json/*.json and the alert-rule provisioning file."""
    from dashboards import build as builder

    if check:
        stale = builder.stale_files()
        for path in stale:
            click.echo(f"stale: {path}", err=True)
        if stale:
            click.echo("run `clustertwin dashboards build` and commit the result", err=True)
        invalid = builder.schema_errors()
        for error in invalid:
            click.echo(f"schema: {error}", err=True)
        if stale or invalid:
            sys.exit(1)
        click.echo("dashboards: generated files are up to date and match Grafana's schema")
        return
    changed = builder.write_all()
    for path in changed:
        click.echo(f"wrote {path}")
    click.echo(f"dashboards: {len(changed)} file(s) changed")


@dashboards.command()
@click.option("--cluster", default="dunkirk", show_default=True)
@click.option("--site", default=None, help="Site for the drill-down (default: the first one).")
@click.option(
    "--port", "port_site", default=None, help="Port site (default: first with shore power)."
)
@click.option("--twin", default="live", show_default=True)
@click.option("--hours", default=2.0, show_default=True, help="Time range ending now.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(__file__).resolve().parents[2] / "dashboards" / "img",
    show_default=True,
)
def render(
    cluster: str, site: str | None, port_site: str | None, twin: str, hours: float, out: Path
) -> None:
    """Draw each dashboard as a PNG from live InfluxDB data (the README pictures)."""
    from dashboards import build as builder
    from dashboards import render as renderer
    from dashboards.runner import first_tag_value

    settings = Settings.load()
    stop = datetime.now(UTC)
    start = stop - timedelta(hours=hours)
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(
        url=settings.influx_url,
        token=settings.require_influx_token(),
        org=settings.influx_org,
        timeout=60_000,
    ) as client:
        pick = {
            "client": client,
            "org": settings.influx_org,
            "bucket": settings.influx_bucket,
            "start": start,
            "stop": stop,
            "twin": twin,
            "cluster": cluster,
        }
        site = site or first_tag_value(tag="site", carrier=None, **pick)
        port_site = port_site or first_tag_value(tag="site", carrier="shore_power", **pick)
        variables = {"twin": twin, "cluster": cluster, "site": site or "", "port": port_site or ""}
        for uid, model in builder.dashboard_models().items():
            path = renderer.render_dashboard(
                model,
                client,
                org=settings.influx_org,
                bucket=settings.influx_bucket,
                start=start,
                stop=stop,
                variables=variables,
                out=out / f"{uid}.png",
            )
            click.echo(f"wrote {path}")
