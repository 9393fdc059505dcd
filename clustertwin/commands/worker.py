"""``clustertwin worker``: run the stream worker, and watch a cluster's live twin.

``worker run`` starts the Faust worker in this process (it serves the live twin over HTTP);
``worker live CLUSTER`` asks a running worker for the twin of a cluster and redraws it in the
terminal until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from streams.config import StreamSettings


@click.group()
def worker() -> None:
    """The stream worker that keeps the live twin (Kafka -> emissions -> InfluxDB)."""


@worker.command()
@click.option("--cluster", "clusters", multiple=True, help="Cluster(s) of the twin [dunkirk].")
@click.option("--catalog", type=click.Path(exists=True, path_type=Path), help="Meter index JSON.")
@click.option("--twin", help="Value of the `twin` tag on every point [live].")
@click.option("--app-id", help="Faust app id (consumer group and table names).")
@click.option("--web-port", type=int, help="Port of the live twin HTTP views [6066].")
@click.option("--loglevel", help="WARNING (default), INFO or DEBUG.")
def run(
    clusters: tuple[str, ...],
    catalog: Path | None,
    twin: str | None,
    app_id: str | None,
    web_port: int | None,
    loglevel: str | None,
) -> None:
    """Run the worker until Ctrl-C. Settings: CLUSTERTWIN_STREAMS_* and CLUSTERTWIN_*."""
    from streams.worker import WorkerConfigError, run_worker

    overrides = {
        "CLUSTERTWIN_STREAMS_CLUSTERS": ",".join(clusters) if clusters else None,
        "CLUSTERTWIN_STREAMS_CATALOG_FILE": str(catalog) if catalog else None,
        "CLUSTERTWIN_STREAMS_TWIN": twin,
        "CLUSTERTWIN_STREAMS_APP_ID": app_id,
        "CLUSTERTWIN_STREAMS_WEB_PORT": str(web_port) if web_port else None,
        "CLUSTERTWIN_STREAMS_LOGLEVEL": loglevel.upper() if loglevel else None,
    }
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    try:
        run_worker()
    except WorkerConfigError as exc:
        error = click.ClickException(str(exc))
        error.exit_code = 2  # as `python -m streams`: a setting to fix, restarting won't help
        raise error from exc


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def render_cluster(twin: dict[str, Any], index: dict[str, Any] | None = None) -> str:
    """A cluster's live twin as a few lines of text (what `worker live` and `demo` print)."""
    lines = [f"cluster {twin.get('cluster')}  sites: {', '.join(twin.get('sites', []))}"]
    for res in ("1m", "15m", "1h"):
        w = twin.get("windows", {}).get(res)
        if not w:
            continue
        t = w["total"]
        start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(w["start"] / 1000))
        lines.append(
            f"  {res:>3} window {start}Z  {t['energy_mwh']:>12,.1f} MWh  "
            f"{t['tco2e']:>11,.2f} tCO2e "
            f"(s1 {t['tco2e_s1']:,.2f}, s2 {t['tco2e_s2_location']:,.2f})"
            f"  {t['readings']} readings, {len(w['sites_reporting'])} sites"
        )
    for year, y in sorted(twin.get("year_to_date", {}).items()):
        t = y["total"]
        lines.append(f"  {year} to date: {t['tco2e']:,.1f} tCO2e, {t['energy_mwh']:,.0f} MWh")
        top = sorted(y["by_site"].items(), key=lambda kv: -kv[1]["tco2e"])[:6]
        for site, f in top:
            lines.append(f"      {site:<28} {f['tco2e']:>14,.1f} tCO2e")
    if index:
        c = index.get("counters", {})
        sink = index.get("sink", {})
        lines.append(
            f"  worker: {c.get('accepted', 0):,} readings in, "
            f"{c.get('deadletters', 0)} dead letters, "
            f"{c.get('late', 0)} late, {sink.get('lines', 0):,} points written"
            + (f", InfluxDB DOWN {sink['down_for_s']:.0f} s" if sink.get("down_for_s") else "")
        )
    return "\n".join(lines)


@worker.command()
@click.argument("cluster")
@click.option("--url", default=None, help="Worker web address [http://127.0.0.1:<web port>].")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print once and exit.")
def live(cluster: str, url: str | None, interval: float, once: bool) -> None:
    """Show CLUSTER's live twin from a running worker, refreshing until Ctrl-C."""
    base = (url or f"http://127.0.0.1:{StreamSettings().web_port}").rstrip("/")
    try:
        while True:
            try:
                twin = fetch_json(f"{base}/twin/{cluster}/")
                index = fetch_json(f"{base}/twin/")
                text = render_cluster(twin, index)
            except urllib.error.HTTPError as exc:
                raise click.ClickException(f"{base}: {exc.code} {exc.read()[:200]!r}") from exc
            except OSError as exc:
                text = f"no worker at {base} ({exc}); start one with `clustertwin worker run`"
            if once:
                click.echo(text)
                return
            click.clear()
            click.echo(time.strftime("%H:%M:%S ") + text)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
