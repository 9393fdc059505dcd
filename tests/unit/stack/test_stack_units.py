"""The local stack's logic that needs no server: process tracking, configs, settings."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from clustertwin.stack import LocalStack, StackError
from clustertwin.stack.influxdb import InfluxDB
from clustertwin.stack.kafka import Kafka
from clustertwin.stack.process import ManagedProcess
from clustertwin_base.settings import MissingCredentialError, Settings


def test_managed_process_starts_tracks_and_stops(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path)
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)"])
    assert proc.pid() == pid
    assert proc.stop(timeout=5) is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # a second stop is harmless


def test_a_reused_pid_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", tmp_path)
    # a live process, but started at another time than the one we recorded
    proc.pid_file.write_text(f"{os.getpid()} 1\n")
    assert proc.pid() is None
    proc.pid_file.write_text(f"{os.getpid()}\n")  # an old-format file is not trusted either
    assert proc.pid() is None


def test_a_process_is_ours_even_while_it_is_still_exec_ing(tmp_path: Path) -> None:
    # /proc/PID/cmdline reads empty right after exec; ownership must not depend on it
    for i in range(30):
        proc = ManagedProcess(f"fresh{i}", tmp_path)
        pid = proc.start([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert proc.pid() == pid
        finally:
            proc.kill()


def test_kill_is_immediate(tmp_path: Path) -> None:
    proc = ManagedProcess("stubborn", tmp_path)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc.start([sys.executable, "-c", code])
    assert proc.kill() is True
    assert proc.pid() is None


def test_kafka_config_is_loopback_kraft_with_data_in_the_cache(tmp_path: Path) -> None:
    kafka = Kafka(port=19092, controller_port=19093, root=tmp_path)
    config = kafka._write_config().read_text()
    assert "process.roles=broker,controller" in config
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in config
    assert f"log.dirs={tmp_path}" in config
    assert "0.0.0.0" not in config


def test_influxdb_1_config_enables_auth_and_flux_on_loopback(tmp_path: Path) -> None:
    influx = InfluxDB(version="1.8.10", port=18086, root=tmp_path)
    config = influx._config_v1()
    assert 'bind-address = "127.0.0.1:18086"' in config
    assert "auth-enabled = true" in config
    assert "flux-enabled = true" in config
    assert str(tmp_path) in config


def test_influxdb_rejects_unknown_major(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unsupported InfluxDB version"):
        InfluxDB(version="3.0.0", root=tmp_path)


def test_influxdb_settings_follow_the_major_version(tmp_path: Path) -> None:
    v1 = InfluxDB(version="1.8.10", root=tmp_path)
    v1._save_credentials({"user": "u", "password": "p"})
    assert v1.settings()["CLUSTERTWIN_INFLUX_TOKEN"] == "u:p"
    assert v1.settings()["CLUSTERTWIN_INFLUX_BUCKET"] == "clustertwin/autogen"
    assert oct(v1.credentials_file.stat().st_mode & 0o777) == "0o600"
    v2 = InfluxDB(version="2.7.12", root=tmp_path)
    assert v2.settings() == {}  # not set up yet: no token is invented
    v2._save_credentials({"user": "u", "password": "p", "token": "tok"})
    assert v2.settings()["CLUSTERTWIN_INFLUX_TOKEN"] == "tok"
    assert v2.settings()["CLUSTERTWIN_INFLUX_BUCKET"] == "clustertwin"


def test_unknown_service_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"unknown service\(s\) grafanna; known: influxdb"):
        LocalStack(root=tmp_path).select(["grafanna"])


def test_environment_wins_over_the_stack_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("CLUSTERTWIN_INFLUX_TOKEN=from-file\nCLUSTERTWIN_MQTT_PORT=1999\n")
    monkeypatch.setenv("CLUSTERTWIN_INFLUX_TOKEN", "from-env")
    settings = Settings.load(env_file)
    assert settings.require_influx_token() == "from-env"
    assert settings.mqtt_port == 1999


def test_missing_token_says_where_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLUSTERTWIN_INFLUX_TOKEN", raising=False)
    with pytest.raises(MissingCredentialError, match="CLUSTERTWIN_INFLUX_TOKEN"):
        Settings.load(tmp_path / "absent.env").require_influx_token()


def test_cli_offers_up_down_status_logs() -> None:
    from click.testing import CliRunner

    from clustertwin.cli import main

    result = CliRunner().invoke(main, ["stack", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("up", "down", "status", "logs", "env"):
        assert f"  {command} " in result.output


@pytest.mark.parametrize(("version", "expected"), [("1.8.10", "SIGTERM"), ("2.7.12", "SIGINT")])
def test_influxdb_stops_with_the_signal_its_major_shuts_down_cleanly_on(
    tmp_path: Path, version: str, expected: str
) -> None:
    # influxd 2.x flushes and exits on SIGINT but dies at once on SIGTERM; 1.x handles SIGTERM
    influx = InfluxDB(version=version, root=tmp_path)
    got, ready = tmp_path / "signal", tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "def got(n, _f):\n"
        f"    pathlib.Path({str(got)!r}).write_text(signal.Signals(n).name); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, got); signal.signal(signal.SIGTERM, got)\n"
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)\n"
    )
    influx.process.start([sys.executable, "-c", code])
    for _ in range(100):
        if ready.exists():
            break
        time.sleep(0.05)
    assert influx.stop() is True
    assert got.read_text() == expected


def test_influxdb_stop_also_stops_the_other_major_of_the_same_stack(tmp_path: Path) -> None:
    # both majors use the stack's one port: a 1.8 left running by the old default must not
    # outlive `stack down` (nor block the port) once the stack runs 2.7, and vice versa
    v1 = InfluxDB(version="1.8.10", root=tmp_path)
    v1.process.start([sys.executable, "-c", "import time; time.sleep(60)"])
    v2 = InfluxDB(version="2.7.12", root=tmp_path)
    assert v2.other_process.running()
    assert v2.stop() is True
    assert v1.process.pid() is None
    assert v2.stop() is False
