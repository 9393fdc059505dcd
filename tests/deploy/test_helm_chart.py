"""The Helm chart renders, validates, and says what the code means.

Rendered by Helm built from its Go module (clustertwin/stack/chart_tools.py); every manifest
is checked against the Kubernetes schemas (kubernetes-validate, strict: an unknown field is
an error) and every Strimzi resource against Strimzi's published schemas. Then what a schema
cannot see: the KafkaUsers' ACLs equal clustertwin_base.kafka_acls, the topics' configs are
the workers' own, every CLUSTERTWIN_* variable is a setting some part reads, no secret is a
value, and each connector's config passes `connector lint`'s checks.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from clustertwin.stack.chart_tools import ensure_helm, ensure_strimzi_schemas, validate_strimzi
from clustertwin_base.kafka_acls import Acl, Names, acl_table
from clustertwin_base.settings import Settings
from connectors.sdk.registry import lint as lint_connector
from streams.alerting.app import AlertingSettings
from streams.config import StreamSettings
from streams.priced import TOPIC_CONFIG, priced_topic
from streams.runtime.health import LIVE_PATH, READY_PATH

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "clustertwin"
EXAMPLE = CHART / "examples" / "dunkirk.yaml"
# the oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest known
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
STRIMZI_KINDS = {"KafkaTopic", "KafkaUser"}
MINIMAL = ["--set", "influxdb.tokenSecret.name=influxdb-token"]


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm(print)


@pytest.fixture(scope="module")
def strimzi_schemas() -> Path:
    return ensure_strimzi_schemas(print)


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(helm), "template", "t", str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


VARIANTS = {
    "defaults": MINIMAL,
    "dunkirk example": ["-f", str(EXAMPLE)],
    "plaintext, no alerting": [
        *MINIMAL,
        "--set",
        "kafka.securityProtocol=SASL_PLAINTEXT",
        "--set",
        "alerting.enabled=false",
    ],
}


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, helm: Path) -> Iterator[list[dict[str, Any]]]:
    yield render(helm, *VARIANTS[request.param])


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield d["metadata"]["name"], c


def test_lint_strict(helm: Path) -> None:
    for args in VARIANTS.values():
        out = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), *args], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_manifest_is_valid_for_kubernetes(rendered: list[dict[str, Any]]) -> None:
    core = [d for d in rendered if d["kind"] not in STRIMZI_KINDS]
    assert {d["kind"] for d in core} >= {"StatefulSet", "Service"}
    for version in K8S_VERSIONS:
        for doc in core:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc}")


def test_every_strimzi_resource_is_valid(
    rendered: list[dict[str, Any]], strimzi_schemas: Path
) -> None:
    docs = [d for d in rendered if d["kind"] in STRIMZI_KINDS]
    assert {d["kind"] for d in docs} == STRIMZI_KINDS
    assert validate_strimzi(docs, strimzi_schemas) == []


def test_the_strimzi_check_refuses_a_broken_resource(helm: Path, strimzi_schemas: Path) -> None:
    user = next(d for d in render(helm, *MINIMAL) if d["kind"] == "KafkaUser")
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Scribble"]
    topic = next(d for d in render(helm, *MINIMAL) if d["kind"] == "KafkaTopic")
    topic["spec"]["partitions"] = "twelve"
    errors = validate_strimzi([user, topic], strimzi_schemas)
    assert len(errors) == 2, errors
    assert "operations" in errors[0] and "partitions" in errors[1], errors


def _acls_of(user: dict[str, Any]) -> tuple[Acl, ...]:
    return tuple(
        sorted(
            Acl(
                a["resource"]["type"],
                a["resource"]["name"],
                a["resource"]["patternType"],
                tuple(a["operations"]),
            )
            for a in user["spec"]["authorization"]["acls"]
        )
    )


@pytest.mark.parametrize("variant", ["defaults", "dunkirk example"])
def test_kafka_users_grant_exactly_the_acl_table(helm: Path, variant: str) -> None:
    values = yaml.safe_load(EXAMPLE.read_text()) if variant != "defaults" else {}
    topics = values.get("kafka", {}).get("topics", {})
    names = Names(
        **{k: topics[k] for k in ("readings", "deadletter", "late", "alerts") if k in topics},
        **({"worker_app_id": values["worker"]["appId"]} if "worker" in values else {}),
        **({"alerting_app_id": values["alerting"]["appId"]} if "alerting" in values else {}),
    )
    assert names.priced == priced_topic(names.readings)  # the table follows the workers' rule
    users = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in render(helm, *VARIANTS[variant])
        if d["kind"] == "KafkaUser"
    }
    table = acl_table(names)
    assert set(users) == set(table)
    for role, acls in table.items():
        assert _acls_of(users[role]) == acls, role


def test_topics_have_the_workers_own_configs(helm: Path) -> None:
    topics = {
        d["spec"]["topicName"]: d["spec"]
        for d in render(helm, *MINIMAL)
        if d["kind"] == "KafkaTopic"
    }
    defaults = Settings()
    stream = StreamSettings()
    priced = priced_topic(defaults.readings_topic)
    assert set(topics) == {
        defaults.readings_topic,
        defaults.deadletter_topic,
        stream.late_topic,
        priced,
        AlertingSettings().alerts_topic,
    }
    big = TOPIC_CONFIG["max.message.bytes"]
    for name in (defaults.deadletter_topic, stream.late_topic, priced):
        assert topics[name]["config"]["max.message.bytes"] == big, name
    for name, spec in topics.items():  # Helm prints big numbers as floats (8.388608e+06)
        assert all(v.isdigit() for v in spec["config"].values()), (name, spec["config"])
    # co-partitioned: the priced topic follows readings
    assert topics[priced]["partitions"] == topics[defaults.readings_topic]["partitions"]


def test_every_variable_is_a_setting_and_no_secret_is_a_value(
    rendered: list[dict[str, Any]],
) -> None:
    known = {f"CLUSTERTWIN_{f.upper()}" for f in Settings.model_fields}
    known |= {f"CLUSTERTWIN_STREAMS_{f.upper()}" for f in StreamSettings.model_fields}
    known |= {f"CLUSTERTWIN_ALERTS_{f.upper()}" for f in AlertingSettings.model_fields}
    known.add("CLUSTERTWIN_CACHE")  # clustertwin_base.settings.cache_dir
    assert not [d for d in rendered if d["kind"] == "Secret"]
    for owner, c in containers(rendered):
        for env in c["env"]:
            name = env["name"]
            if name.startswith("CLUSTERTWIN_"):
                assert name in known, f"{owner}: {name} is read by no part of ClusterTwin"
            if any(word in name for word in ("PASSWORD", "TOKEN", "WEBHOOK")):
                assert "value" not in env or name.endswith("_FILE"), f"{owner}: {name} as a value"


def test_workers_are_probed_on_their_health_views(rendered: list[dict[str, Any]]) -> None:
    workers = [(o, c) for o, c in containers(rendered) if "connector" not in o]
    assert workers
    for owner, c in workers:
        assert c["livenessProbe"]["httpGet"]["path"] == LIVE_PATH, owner
        assert c["readinessProbe"]["httpGet"]["path"] == READY_PATH, owner
        env = {e["name"]: e.get("value") for e in c["env"]}
        port = c["ports"][0]["containerPort"]
        assert port in (StreamSettings().web_port, AlertingSettings().web_port), owner
        assert "0.0.0.0" in env.values(), f"{owner}: the probes cannot reach a loopback bind"


def test_connector_configs_pass_lint(helm: Path, tmp_path: Path) -> None:
    maps = [
        d
        for d in render(helm, "-f", str(EXAMPLE))
        if d["kind"] == "ConfigMap" and "connector" in d["metadata"]["name"]
    ]
    assert len(maps) == len(yaml.safe_load(EXAMPLE.read_text())["connectors"])
    for m in maps:
        path = tmp_path / f"{m['metadata']['name']}.yaml"
        path.write_text(m["data"]["connector.yaml"])
        _cls, cfg, _index = lint_connector(path)
        assert cfg.name in m["metadata"]["name"]


def test_a_missing_secret_reference_is_refused_by_name(helm: Path) -> None:
    out = subprocess.run(
        [str(helm), "template", "t", str(CHART)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "influxdb.tokenSecret.name" in out.stderr
