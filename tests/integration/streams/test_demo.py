"""The README's main command, end to end: simulator -> Kafka -> Faust -> InfluxDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.streams.harness import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_demo_runs_the_simulated_cluster_and_leaves_the_twin_in_influxdb(stack, unique_name):
    grafana = stack.local.services["grafana"]
    grafana_was_running = grafana.process.pid() is not None
    env = {
        **os.environ,
        # its own worker identity and twin tag, so the check sees this run's points only
        "CLUSTERTWIN_STREAMS_APP_ID": unique_name,
        "CLUSTERTWIN_STREAMS_TWIN": unique_name,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from clustertwin.cli import main; main()",
            "demo",
            "--duration",
            "45",
            "--interval",
            "10",
            "--web-port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "site windows of dunkirk" in out
    points = int(out.split("InfluxDB holds ")[1].split()[0])
    assert points > 0
    assert "tCO2e" in out  # the live summary was printed
    assert "alerting worker started" in out
    assert "exited" not in out, out[-4000:]  # no child (worker, alerts, connector) died

    # The demo left Grafana running with the dashboards provisioned against this InfluxDB.
    from clustertwin.settings import Settings
    from dashboards.provision import connect

    try:
        assert "Grafana at" in out
        settings = Settings.from_stack_settings(stack.local.settings())
        assert settings.grafana_token is not None
        api = connect(settings.grafana_url, settings.grafana_token.get_secret_value())
        found = api.search.search_dashboards(query="ClusterTwin")
        titles = {d["title"] for d in found}
        assert len(titles) >= 4, titles
    finally:
        if not grafana_was_running and os.environ.get("CLUSTERTWIN_KEEP_STACK") != "1":
            stack.local.down(["grafana"])
