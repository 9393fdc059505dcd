"""The local stack's Grafana service: configuration, secrets and the build script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clustertwin.stack import LocalStack
from clustertwin.stack.base import FILES
from clustertwin.stack.grafana import GRAFANA_MODULE_VERSION, Grafana


def test_registered_but_not_started_by_default(tmp_path: Path) -> None:
    from clustertwin.stack import SERVICE_NAMES

    stack = LocalStack(root=tmp_path)
    assert isinstance(stack.services["grafana"], Grafana)
    assert "grafana" not in SERVICE_NAMES
    assert [s.name for s in stack.select(["grafana"])] == ["grafana"]


def test_port_offset_moves_grafana_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERTWIN_STACK_PORT_OFFSET", "100")
    assert LocalStack(root=tmp_path).services["grafana"].port == 3100


def test_config_is_loopback_sqlite_and_has_no_secret(tmp_path: Path) -> None:
    g = Grafana(port=3123, root=tmp_path)
    text = g._config()
    assert "http_addr = 127.0.0.1" in text and "http_port = 3123" in text
    assert "type = sqlite3" in text and "reporting_enabled = false" in text
    assert "password" not in text.lower()
    env = g.environment()
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert len(password) >= 24
    creds = g.credentials_file
    assert creds.stat().st_mode & 0o777 == 0o600
    assert json.loads(creds.read_text())["password"] == password
    assert Grafana(port=3123, root=tmp_path).environment() == env  # stable across restarts


def test_no_settings_before_first_start(tmp_path: Path) -> None:
    assert Grafana(root=tmp_path).settings() == {}


def test_pinned_pseudo_version_and_build_script() -> None:
    assert (
        GRAFANA_MODULE_VERSION.startswith("v1.9.2-0.")
        and len(GRAFANA_MODULE_VERSION.rsplit("-", 1)[-1]) == 12
    )
    script = FILES / "build-grafana.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needed in ("GOWORK=off", "CGO_ENABLED=1", "gen -tags oss ./pkg/server", "go mod download"):
        assert needed in text
