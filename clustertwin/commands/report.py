"""``clustertwin report CLUSTER --year Y``: the annual inventory, as CSV or JSON.

For the accountant and the verifier: per site and carrier, scope 1 per gas (gross, captured,
net), scope 2 location and market, scope 3 upstream, the biogenic memo, the transfers
eliminated at cluster level, each line with its factors (id, version, source), its data
quality shares and the uncertainty of its scope 1; then the year's restatements. The rules
are ``twin.inventory``'s; the columns are named in the README (GHG Protocol / ESRS E1-6).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from clustertwin_base.settings import MissingCredentialError, Settings
from streams.inventory_source import EDITIONS, StoredYear, load_year
from streams.sink import InfluxSink
from twin.inventory import COLUMNS, Inventory, build_inventory, rows
from twin.model import load_cluster


def _load(settings: Settings, twin: str, cluster: str, year: int, edition: str) -> StoredYear:
    async def run() -> StoredYear:
        sink = InfluxSink(
            settings.influx_url,
            settings.require_influx_token(),
            settings.influx_org,
            settings.influx_bucket,
        )
        try:
            return await asyncio.wait_for(
                load_year(sink, settings.influx_bucket, twin, cluster, year, edition), 120
            )
        finally:
            await sink.close()

    return asyncio.run(run())


def as_json(inv: Inventory) -> str:
    return json.dumps(
        {
            "cluster": inv.cluster,
            "year": inv.year,
            "gwp": inv.gwp,
            "columns": dict(COLUMNS),
            "rows": rows(inv),
            "restatements": [asdict(r) for r in inv.restatements],
        },
        indent=2,
    )


def as_csv(inv: Inventory) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[c for c, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in rows(inv):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    if inv.restatements:
        buf.write("\n# restatements: site,hour (epoch ms),old tCO2e,new tCO2e,reason\n")
        for r in inv.restatements:
            buf.write(f"# {r.site},{r.hour_ms},{r.old_tco2e},{r.new_tco2e},{r.reason}\n")
    return buf.getvalue()


@click.command()
@click.argument("cluster")
@click.option("--year", type=int, required=True, help="The reporting year.")
@click.option("--twin", "twin", default="live", show_default=True, help="The twin tag to read.")
@click.option("--gwp", default="AR6", show_default=True, help="GWP set of the figures.")
@click.option(
    "--edition",
    type=click.Choice(EDITIONS),
    default="current",
    show_default=True,
    help="current: with the factor revisions restated; previous: as the worker computed it.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File (default: stdout).",
)
def report(
    cluster: str, year: int, twin: str, gwp: str, edition: str, fmt: str, out: Path | None
) -> None:
    """Write the annual inventory of CLUSTER for --year from the live twin's stored figures.

    Exits 2 when the cluster or the InfluxDB settings cannot be used, 1 when the twin holds
    nothing for that year.
    """
    try:
        model = load_cluster(cluster)
    except Exception as exc:
        click.echo(f"clustertwin report: cluster {cluster!r}: {exc}", err=True)
        sys.exit(2)
    try:
        stored = _load(Settings.load(), twin, model.id, year, edition)
    except MissingCredentialError as exc:
        click.echo(f"clustertwin report: {exc}", err=True)
        sys.exit(2)
    if not stored.site_rows and not stored.cluster_rows:
        click.echo(
            f"clustertwin report: twin {twin!r} holds no figures of {model.id} for {year}", err=True
        )
        sys.exit(1)
    inv = build_inventory(
        model, year, stored.site_rows, stored.cluster_rows, stored.quality, stored.restatements, gwp
    )
    text = as_json(inv) if fmt == "json" else as_csv(inv)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"{out}: {len(inv.lines)} lines, {len(inv.site_totals)} sites, {year}", err=True)
