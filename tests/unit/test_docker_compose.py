"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked instead:
the services production needs, persistent volumes, health checks, dependency order, and that
every secret comes from .env rather than from the file itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.runtime.health import READY_PATH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
VAR = re.compile(r"\$\{([A-Z0-9_]+)(:?[?-])?([^}]*)\}")
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "CLUSTER_ID")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment must be a mapping"
    return {k: str(v) for k, v in env.items()}


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_production_services_present() -> None:
    assert {"kafka", "influxdb", "grafana", "worker", "connector-simulator"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:3.9")
    assert SERVICES["influxdb"]["image"].startswith("influxdb:2.7")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana-oss:")


def test_kafka_runs_kraft_without_zookeeper() -> None:
    env = _env("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in key for key in env)


def test_worker_and_connectors_share_one_image_built_from_the_dockerfile() -> None:
    assert SERVICES["worker"]["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    images = {SERVICES[name]["image"] for name in ("worker", "connector-simulator")}
    assert len(images) == 1


@pytest.mark.parametrize("service", ["kafka", "influxdb", "grafana", "worker"])
def test_long_running_servers_have_healthchecks(service: str) -> None:
    check = SERVICES[service]["healthcheck"]
    assert check["test"] and check["retries"] >= 3


def test_worker_waits_for_healthy_kafka_and_influxdb() -> None:
    depends = SERVICES["worker"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["influxdb"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    for service, path in [
        ("kafka", "/var/lib/kafka/data"),
        ("influxdb", "/var/lib/influxdb2"),
        ("grafana", "/var/lib/grafana"),
    ]:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service]["volumes"]}
        assert path in mounts, f"{service} keeps {path} in a volume"
        assert mounts[path] in declared


def test_grafana_provisioning_is_mounted_from_the_repo() -> None:
    for volume in SERVICES["grafana"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), f"{source} must exist in the repo"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_no_secret_literals(service: str) -> None:
    for key, value in _env(service).items():
        if any(word in key for word in SECRET_WORDS):
            match = VAR.fullmatch(value)
            assert match, f"{service}.{key} must come from .env, not a literal"
            assert match.group(2) == ":?", f"{service}.{key} must be required (${{VAR:?...}})"


def test_env_example_lists_every_variable_and_holds_no_secret() -> None:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    used = {match[0] for text in _strings(COMPOSE) for match in VAR.findall(text)}
    for name in used:
        assert name in example, f"{name} is used by docker-compose.yml but not in .env.example"
    for key, value in example.items():
        if any(word in key for word in SECRET_WORDS):
            assert value == "", f".env.example must not ship a value for {key}"


def test_connector_command_points_at_a_shipped_config() -> None:
    command = SERVICES["connector-simulator"]["command"]
    config = command[-1]
    assert (ROOT / config).exists(), f"{config} is copied into the image and must exist"


def test_alerting_worker_runs_beside_the_stream_worker_on_the_same_clusters() -> None:
    alerting, worker = SERVICES["alerting"], SERVICES["worker"]
    assert alerting["command"] == ["clustertwin", "alerts", "worker"]
    assert alerting["image"] == worker["image"]
    assert (
        alerting["environment"]["CLUSTERTWIN_ALERTS_CLUSTERS"]
        == worker["environment"]["CLUSTERTWIN_STREAMS_CLUSTERS"]
    )
    for service in (alerting, worker):  # the workers' own readiness (streams/runtime/health.py)
        assert READY_PATH in " ".join(service["healthcheck"]["test"])
