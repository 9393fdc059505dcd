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
    env = {
        **os.environ,
        # its own worker identity and twin tag, so the check sees this run's points only
        "CLUSTERTWIN_STREAMS_APP_ID": unique_name,
        "CLUSTERTWIN_STREAMS_TWIN": unique_name,
    }
    port = free_port()
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
            str(port),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # the web view's address is the first thing the demo says
    assert out.splitlines()[0] == (
        f"[demo] live view: http://127.0.0.1:{port}/view/#/c/dunkirk"
        "  (open it in a browser once the worker is up)"
    ), out[:2000]
    assert "site windows of dunkirk" in out
    points = int(out.split("InfluxDB holds ")[1].split()[0])
    assert points > 0
    assert "tCO2e" in out  # the live summary was printed
    assert "alerting worker started" in out
    assert "exited" not in out, out[-4000:]  # no child (worker, alerts, connector) died
    assert "Grafana" not in out
