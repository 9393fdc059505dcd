"""``clustertwin restate CLUSTER --factor ID``: restate a factor revision over stored data.

A revision is a new version of a factor with a ``valid_from`` (in the shipped library, in
a library file given with ``--factors``, or among the cluster file's own ``factors``). The
readings the twin stored in its validity
period are recomputed with it (``twin.revision``) and the change is recorded per site,
carrier and year (``streams.factor_restate``); ``clustertwin report`` then shows the
restated year to date (``--edition previous``: as it was) and lists the restatement.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from clustertwin_base.settings import MissingCredentialError, Settings
from twin.emissions import library_for
from twin.factors import FactorError, FactorLibrary, default_library
from twin.model import Cluster, load_cluster
from twin.revision import Revision, SiteRestatement, revision_of
from twin.yaml_loader import load_yaml

NANO = 1_000_000_000


def _library(files: tuple[Path, ...]) -> FactorLibrary:
    lib = default_library()
    if not files:
        return lib
    extra = FactorLibrary.from_documents((str(p), load_yaml(p.read_text())) for p in files)
    return lib.with_factors(extra)


@click.command()
@click.argument("cluster")
@click.option(
    "--factor", "factor_id", required=True, help="The revised factor's id (library or cluster)."
)
@click.option("--version", default=None, help="The revision (default: the newest version).")
@click.option(
    "--factors",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A factor library file holding the revision (repeatable).",
)
@click.option("--twin", "twin", default="live", show_default=True, help="The twin tag.")
@click.option("--gwp", default="AR6", show_default=True, help="GWP set of the figures.")
def restate(
    cluster: str,
    factor_id: str,
    version: str | None,
    files: tuple[Path, ...],
    twin: str,
    gwp: str,
) -> None:
    """Restate CLUSTER's stored figures for a revision of --factor.

    Exits 2 when the cluster, the factor or the InfluxDB settings cannot be used. Running
    it again changes nothing.
    """
    try:
        model = load_cluster(cluster)
        library = library_for(model, _library(files))
        revision = revision_of(library, factor_id, version)
    except (FactorError, OSError) as exc:
        click.echo(f"clustertwin restate: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        click.echo(f"clustertwin restate: cluster {cluster!r}: {exc}", err=True)
        sys.exit(2)
    try:
        rows = _run(Settings.load(), twin, model, library, revision, gwp)
    except MissingCredentialError as exc:
        click.echo(f"clustertwin restate: {exc}", err=True)
        sys.exit(2)
    stop = revision.stop.isoformat() if revision.stop else "open"
    click.echo(
        f"{factor_id}: v{revision.old.version} -> v{revision.new.version} "
        f"from {revision.start.isoformat()} to {stop}"
    )
    for r in rows:
        click.echo(
            f"{r.year} {r.site} {r.carrier}: {r.readings} reading(s), "
            f"{r.tco2e_changed_nano / NANO:+.9f} tCO2e"
        )
    if not rows:
        click.echo("no stored reading in the period uses the factor: nothing restated")


def _run(
    settings: Settings,
    twin: str,
    model: Cluster,
    library: FactorLibrary,
    revision: Revision,
    gwp: str,
) -> list[SiteRestatement]:
    from streams.factor_restate import restate_factor
    from streams.sink import InfluxSink

    async def run() -> list[SiteRestatement]:
        sink = InfluxSink(
            settings.influx_url,
            settings.require_influx_token(),
            settings.influx_org,
            settings.influx_bucket,
        )
        try:
            return await asyncio.wait_for(
                restate_factor(sink, twin, model, library, revision, gwp),
                300,
            )
        finally:
            await sink.close()

    return asyncio.run(run())
