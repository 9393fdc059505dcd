"""The README's main command, end to end: simulator -> Kafka -> Faust -> InfluxDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc: no psutil needed)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_demo_and_every_child_it_started(stack, unique_name):
    env = {
        **os.environ,
        "CLUSTERTWIN_STREAMS_APP_ID": unique_name,
        "CLUSTERTWIN_STREAMS_TWIN": unique_name,
    }
    demo = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from clustertwin.cli import main; main()",
            "demo",
            "--interval",
            "2",
            "--web-port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: set[int] = set()
    try:
        assert demo.stdout is not None
        seen = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            seen.append(line)
            if "simulator connector started" in line or not line:
                break
        assert "simulator connector started" in "".join(seen), "".join(seen)[-3000:]
        children = _children(demo.pid)
        assert len(children) >= 3, children  # worker, alerting worker, connector
        began = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=60)
        took = time.monotonic() - began
        assert demo.returncode == 0, rest[-3000:]
        assert "[demo] stopping" in rest
        assert took < 35, took  # every child within the one stop bound
        left = [p for p in children if _alive(p)]
        assert not left, f"children still running after the demo stopped: {left}"
    finally:
        if demo.poll() is None:
            demo.kill()
        for p in children | _children(demo.pid):  # orphans of a failed stop, too
            if _alive(p):
                os.kill(p, signal.SIGKILL)
