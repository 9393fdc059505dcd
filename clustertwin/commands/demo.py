"""``clustertwin demo``: the simulated Dunkirk cluster, live, end to end on the local stack.

Brings up the local stack (real Kafka and InfluxDB), starts the stream worker, the alerting
worker and the simulator connector as child processes, prints the URL of the live web view
the worker serves, and a short summary of the live twin until Ctrl-C.
With ``--duration`` it stops by itself and exits 0 only if the twin in InfluxDB has data, so
CI can run it as a smoke test of the whole chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[2]
SIMULATOR_CONFIG = REPO / "connectors" / "simulator" / "sample.yaml"


def _twin_points(settings: Any, twin: str, cluster: str) -> int:
    """How many site windows of ``cluster`` the twin ``twin`` has in InfluxDB."""
    from influxdb_client import InfluxDBClient

    query = f"""
from(bucket: "{settings.influx_bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "site_window" and r.twin == "{twin}"
                    and r.cluster == "{cluster}" and r._field == "tco2e")
  |> group()
  |> count()
"""
    with InfluxDBClient(
        url=settings.influx_url,
        token=settings.require_influx_token(),
        org=settings.influx_org,
        timeout=30_000,
    ) as client:
        tables = client.query_api().query(query)
    return sum(int(r.get_value()) for t in tables for r in t.records)


_CLI = "from clustertwin.cli import main; main()"


STOP_S = 30.0


def _stop_all(children: list[tuple[subprocess.Popen[bytes] | None, str]]) -> None:
    """Ask every child to stop at once, then wait for them within one bound: each stops
    safely on SIGTERM (the connector keeps what it has not sent in its disk buffer, the
    workers acknowledge only what is stored), so none needs the others to go first."""
    running = [(p, n) for p, n in children if p is not None and p.poll() is None]
    for proc, _name in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    for proc, name in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"[demo] {name} did not stop in {STOP_S:.0f} s; killing it")
            proc.kill()
            proc.wait(10)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a service manager, ``docker stop``, ``timeout``) stops the demo as Ctrl-C
    does, children included, instead of leaving them running."""
    raise KeyboardInterrupt


@click.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--cluster", default="dunkirk", show_default=True)
@click.option(
    "--connector-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=SIMULATOR_CONFIG,
    show_default=True,
    help="Connector config driving the demo (the simulator by default).",
)
@click.option("--interval", default=5.0, show_default=True, help="Seconds between summaries.")
@click.option("--web-port", default=6066, show_default=True, help="Worker's live twin port.")
@click.option(
    "--alerts/--no-alerts", default=True, show_default=True, help="Run the alerting worker."
)
def demo(
    duration: float | None,
    cluster: str,
    connector_config: Path,
    interval: float,
    web_port: int,
    alerts: bool,
) -> None:
    """Run the simulated cluster live: simulator -> Kafka -> Faust -> InfluxDB -> web view."""
    from clustertwin.stack import LocalStack
    from clustertwin_base.settings import Settings

    base = f"http://127.0.0.1:{web_port}"
    view_url = f"{base}/view/#/c/{cluster}"
    click.echo(f"[demo] live view: {view_url}  (open it in a browser once the worker is up)")
    stack = LocalStack()
    stack.up(["influxdb", "kafka"])
    settings = Settings.from_stack_settings(stack.settings())
    twin = os.environ.get("CLUSTERTWIN_STREAMS_TWIN", "live")
    env = {
        **os.environ,
        **stack.settings(),
        "CLUSTERTWIN_STREAMS_CLUSTERS": cluster,
        "CLUSTERTWIN_STREAMS_WEB_PORT": str(web_port),
        "CLUSTERTWIN_ALERTS_CLUSTERS": cluster,
    }
    children = _Children.open(env)
    click.echo(f"[demo] logs in {children.logs}")
    started = time.monotonic()
    ok = False
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        children.start_worker(base, view_url, cluster)
        if alerts:
            children.start_alerting()
        children.start_connector(connector_config)
        while duration is None or time.monotonic() - started < duration:
            time.sleep(interval)
            children.check_running()
            click.echo(f"--- {time.strftime('%H:%M:%S')} ---\n{_summary(base, cluster)}")
        ok = True
    except KeyboardInterrupt:
        ok = True
        click.echo("\n[demo] stopping")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already: a second is no news
        children.stop()
    if duration is not None:
        points = _twin_points(settings, twin, cluster)
        click.echo(f"[demo] InfluxDB holds {points} site windows of {cluster} (twin {twin!r})")
        if not ok or points == 0:
            raise SystemExit(1)


def _summary(base: str, cluster: str) -> str:
    """The live twin of ``cluster`` as the worker serves it, or why it does not answer."""
    from clustertwin.commands.worker import fetch_json, render_cluster

    try:
        return render_cluster(fetch_json(f"{base}/twin/{cluster}/"), fetch_json(f"{base}/twin/"))
    except (OSError, urllib.error.HTTPError) as exc:
        return f"(worker not answering: {exc})"


class _Children:
    """The demo's child processes (worker, alerting worker, connector) and their log files.

    Each writes to its own log under the cache directory, so the terminal keeps only the
    demo's summary; all of them are stopped together (``_stop_all``) however the demo ends.
    """

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.worker_log = open(logs / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        self.connector_log = open(logs / "connector.log", "ab")  # noqa: SIM115
        self.alerts_log = open(logs / "alerts.log", "ab")  # noqa: SIM115
        self.worker: subprocess.Popen[bytes] | None = None
        self.connector: subprocess.Popen[bytes] | None = None
        self.alerting: subprocess.Popen[bytes] | None = None

    @classmethod
    def open(cls, env: dict[str, str]) -> _Children:
        logs = Path(os.environ.get("CLUSTERTWIN_CACHE", Path.home() / ".cache" / "clustertwin"))
        logs = logs / "demo"
        logs.mkdir(parents=True, exist_ok=True)
        return cls(env, logs)

    def start_worker(self, base: str, view_url: str, cluster: str) -> None:
        """Start the stream worker and wait (120 s at most) until it serves ``/twin/``."""
        from clustertwin.commands.worker import fetch_json

        worker = subprocess.Popen(
            [sys.executable, "-m", "streams"],
            env=self.env,
            stdout=self.worker_log,
            stderr=self.worker_log,
        )
        self.worker = worker
        deadline = time.monotonic() + 120
        while True:
            if worker.poll() is not None:
                raise click.ClickException(
                    f"the worker exited ({worker.returncode}); see {self.logs / 'worker.log'}"
                )
            try:
                fetch_json(f"{base}/twin/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise click.ClickException("the worker did not start in 120 s") from None
                time.sleep(0.5)
        click.echo(f"[demo] worker up; live view: {view_url}")
        click.echo(f"[demo] the twin as JSON: {base}/twin/{cluster}/")

    def start_alerting(self) -> None:
        self.alerting = subprocess.Popen(
            [sys.executable, "-c", _CLI, "alerts", "worker"],
            env=self.env,
            stdout=self.alerts_log,
            stderr=self.alerts_log,
        )
        click.echo("[demo] alerting worker started (`clustertwin alerts list` shows alerts)")

    def start_connector(self, connector_config: Path) -> None:
        self.connector = subprocess.Popen(
            [sys.executable, "-c", _CLI, "connector", "run", str(connector_config)],
            env=self.env,
            stdout=self.connector_log,
            stderr=self.connector_log,
        )
        click.echo(f"[demo] simulator connector started ({connector_config.name}); Ctrl-C stops")

    def check_running(self) -> None:
        """A child that died ends the demo, pointing at its log."""
        for proc, name in (
            (self.worker, "worker"),
            (self.connector, "connector"),
            (self.alerting, "alerts"),
        ):
            if proc is not None and proc.poll() is not None:
                raise click.ClickException(
                    f"the {name} exited ({proc.returncode}); see {self.logs / (name + '.log')}"
                )

    def stop(self) -> None:
        _stop_all(
            [(self.connector, "connector"), (self.alerting, "alerts"), (self.worker, "worker")]
        )
        self.worker_log.close()
        self.connector_log.close()
        self.alerts_log.close()
