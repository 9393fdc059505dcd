"""Security: a secured stack, and refusals that say what is wrong instead of hanging.

A Kafka 3.9.1 with SASL/SCRAM-SHA-512 on its client listener (``CLUSTERTWIN_KAFKA_SECURITY=
scram``) and the stack's InfluxDB (which always requires its token) are started on their own
port offset, beside whatever stack the other tests use. Against them:

* clients built from the stack's settings (``clustertwin_base.kafka_auth``) produce and consume;
* the connector runner, the stream worker and the alerting worker, run as the operator runs
  them (CLI subprocesses), start with the right credentials and refuse to start with a wrong
  or missing Kafka password or InfluxDB token: a distinct exit code and one line naming the
  user and the setting, well within the time a bootstrap timeout would take;
* the HTTP push connector, a real aiohttp server run by ``clustertwin connector run``,
  answers 401 without a valid bearer token and 413 to a body over its bound, and what it
  accepts reaches the secured Kafka.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import SecretStr

from clustertwin_base.kafka_auth import KafkaAuthError, check_credentials, client_security
from clustertwin_base.settings import Settings, cache_dir, stack_port_offset
from streams.sink import InfluxAuthError, check_write_access

pytestmark = pytest.mark.integration

#: The secured stack sits this far above the test run's own offset (0 in CI, 9132 for Kafka).
SECURED_OFFSET_DELTA = 40
CLI = "from clustertwin.cli import main; main()"
#: Settings a child keeps from this environment (where the builds are, which InfluxDB);
#: every other CLUSTERTWIN_* comes from the secured stack's file, so a shell export of
#: another stack's credentials cannot leak into a test.
KEPT_SETTINGS = ("CLUSTERTWIN_CACHE", "CLUSTERTWIN_INFLUXDB_VERSION")
USER = "clustertwin"  # the client SCRAM user the secured stack creates
#: Generous bound for a refusal: a kafka-python bootstrap timeout alone is 30 s, a hang forever.
REFUSAL_TIMEOUT_S = 60


@dataclass
class SecuredStack:
    offset: int
    run_root: Path
    values: dict[str, str]  # the CLUSTERTWIN_* settings the stack wrote

    @property
    def settings(self) -> Settings:
        return Settings.from_stack_settings(self.values)

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment of a child process that reads this stack's settings file, with
        ``overrides`` winning over it (as an operator's exported variables would)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CLUSTERTWIN_") or k in KEPT_SETTINGS
        }
        env["CLUSTERTWIN_STACK_PORT_OFFSET"] = str(self.offset)
        env.update(overrides)
        return env


def _cli(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = REFUSAL_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredStack]:
    """Kafka with SASL/SCRAM + InfluxDB with its token, on their own ports; stopped after
    (unless CLUSTERTWIN_KEEP_STACK=1 or they were already running). Builds are cached."""
    offset = stack_port_offset() + SECURED_OFFSET_DELTA
    stack = SecuredStack(offset, cache_dir() / f"stack-{offset}", {})
    cwd = tmp_path_factory.mktemp("secured-stack")
    env = stack.env(CLUSTERTWIN_KAFKA_SECURITY="scram")
    up = _cli(["stack", "up", "kafka", "influxdb"], env, cwd, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    started_line = [line for line in up.stdout.splitlines() if "started:" in line][-1]
    started = [name for name in ("kafka", "influxdb") if name in started_line.split("started:")[1]]
    stack.values = _read_env_file(stack.run_root / "stack.env")
    try:
        yield stack
    finally:
        if started and os.environ.get("CLUSTERTWIN_KEEP_STACK") != "1":
            down = _cli(["stack", "down", *started], stack.env(), cwd, timeout=120)
            assert down.returncode == 0, down.stdout + down.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _simulator_config(path: Path, topic: str, name: str) -> Path:
    path.write_text(
        "\n".join(
            [
                "connector: simulator",
                f"name: {name}",
                "cluster: dunkirk",
                "seed: 7",
                "speedup: 0",
                "step_s: 900",
                "start: now-1d",
                "kafka:",
                f"  topic: {topic}",
                f"  deadletter_topic: {topic}-dl",
                "buffer:",
                f"  dir: {path.parent / (name + '-buffer')}",
                "",
            ]
        )
    )
    return path


# -- the secured configuration --------------------------------------------------------------


def test_secured_stack_keeps_its_secrets_in_owner_only_files(secured: SecuredStack) -> None:
    values = secured.values
    assert values["CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert values["CLUSTERTWIN_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert values["CLUSTERTWIN_KAFKA_SASL_USERNAME"] == USER
    assert len(values["CLUSTERTWIN_KAFKA_SASL_PASSWORD"]) >= 24
    assert values["CLUSTERTWIN_INFLUX_TOKEN"]
    kafka_dir = secured.run_root / "kafka"
    for path in (
        secured.run_root / "stack.env",
        kafka_dir / "credentials.json",
        kafka_dir / "server.properties",  # holds the broker's own SCRAM password
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    server = (kafka_dir / "server.properties").read_text()
    assert f"listeners=SASL_PLAINTEXT://127.0.0.1:{9092 + secured.offset}" in server
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in server
    assert not list(kafka_dir.glob("format.args"))  # the format arguments did not linger
    shown = _cli(["stack", "env"], secured.env(), secured.run_root)
    assert shown.returncode == 0, shown.stderr
    assert values["CLUSTERTWIN_KAFKA_SASL_PASSWORD"] not in shown.stdout
    assert "export CLUSTERTWIN_KAFKA_SASL_PASSWORD='****'" in shown.stdout


def test_influxdb_of_the_secured_stack_requires_its_token(secured: SecuredStack) -> None:
    settings = secured.settings
    args = (settings.influx_url, settings.influx_org, settings.influx_bucket)
    check_write_access(args[0], settings.require_influx_token(), *args[1:], timeout=10)
    for token in ("", "clustertwin-admin:not-the-password", "not-a-user:x"):
        with pytest.raises(InfluxAuthError, match="rejected the token"):
            check_write_access(args[0], token, *args[1:], timeout=10)
    anonymous = urllib.request.Request(
        f"{settings.influx_url}/api/v2/write?bucket={settings.influx_bucket}&org=x",
        data=b"m v=1",
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=10)
    assert refused.value.code == 401


def test_clients_with_the_stack_credentials_produce_and_consume(secured: SecuredStack) -> None:
    settings = secured.settings
    check_credentials(settings, timeout=10)  # accepted: no exception
    security = client_security(settings)
    topic = f"sec-roundtrip-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **security)
    try:
        producer.send(topic, key=b"k", value=b"secured hello").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **security
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while not values and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
    finally:
        consumer.close()
    assert values == [b"secured hello"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"kafka_sasl_password": SecretStr("not-the-password")},
            f"Kafka rejected the SASL credentials for user '{USER}'",
        ),
        (
            {"kafka_sasl_username": "mallory"},
            "Kafka rejected the SASL credentials for user 'mallory'",
        ),
        ({"kafka_security_protocol": "PLAINTEXT"}, "requires SASL authentication"),
        ({"kafka_sasl_mechanism": "SCRAM-SHA-256"}, "does not offer SASL mechanism"),
    ],
    ids=["wrong-password", "unknown-user", "no-sasl", "wrong-mechanism"],
)
def test_the_broker_refuses_what_is_wrong_and_says_so(
    secured: SecuredStack, change: dict[str, object], message: str
) -> None:
    with pytest.raises(KafkaAuthError, match=message):
        check_credentials(secured.settings.model_copy(update=change), timeout=10)


# -- connectors ------------------------------------------------------------------------------


def test_connector_publishes_with_the_right_credentials(
    secured: SecuredStack, tmp_path: Path
) -> None:
    topic = f"sec-conn-{uuid.uuid4().hex[:8]}"
    config = _simulator_config(tmp_path / "sim.yaml", topic, "sec-ok")
    run = _cli(["connector", "run", str(config), "--max-readings", "300"], secured.env(), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert metrics["readings_sent"] >= 300
    assert metrics["kafka_failures"] == 0


def test_publisher_names_a_refused_password_while_it_keeps_the_data(
    secured: SecuredStack, tmp_path: Path
) -> None:
    """Past start-up (a password rotated under a running connector) the publisher keeps
    buffering, as in any outage, but its error says Kafka refused the credentials."""
    from connectors.sdk.buffer import Record
    from connectors.sdk.metrics import ConnectorMetrics
    from connectors.sdk.registry import load_config
    from connectors.sdk.runner import make_publisher

    config_path = _simulator_config(tmp_path / "sim.yaml", "sec-rotated", "sec-rotated")
    _cls, config = load_config(config_path)
    wrong = secured.settings.model_copy(update={"kafka_sasl_password": SecretStr("rotated-away")})
    metrics = ConnectorMetrics()
    publisher = make_publisher(config, metrics, settings=wrong)
    publisher.start()
    try:
        publisher.append(Record(topic="sec-rotated", key=b"site", value=b"{}"))
        deadline = time.monotonic() + 60
        while "rejected the SASL" not in (metrics.last_error or ""):
            assert time.monotonic() < deadline, metrics.last_error
            time.sleep(0.2)
    finally:
        drained = publisher.close(timeout=0.5)
    assert not drained
    assert f"Kafka rejected the SASL credentials for user '{USER}'" in (metrics.last_error or "")
    assert metrics.readings_sent == 0


CONNECTOR_REFUSALS = [
    (
        {"CLUSTERTWIN_KAFKA_SASL_PASSWORD": "not-the-password"},
        f"Kafka rejected the SASL credentials for user '{USER}'",
    ),
    ({"CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "requires SASL authentication"),
    ({"CLUSTERTWIN_KAFKA_SASL_PASSWORD": ""}, f"No SASL password for Kafka user '{USER}'"),
]
REFUSAL_IDS = ["wrong-password", "no-credentials", "no-password"]


@pytest.mark.parametrize(("overrides", "message"), CONNECTOR_REFUSALS, ids=REFUSAL_IDS)
def test_connector_refuses_to_start_with_wrong_or_missing_credentials(
    secured: SecuredStack, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    config = _simulator_config(tmp_path / "sim.yaml", "sec-refused", "sec-refused")
    run = _cli(
        ["connector", "run", str(config), "--max-readings", "100"],
        secured.env(**overrides),
        tmp_path,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr
    assert run.stderr.strip().startswith("clustertwin connector: ")
    assert "Traceback" not in run.stderr
    # nothing was read from the source or buffered: it refused before starting
    assert not (tmp_path / "sec-refused-buffer").exists() or not any(
        (tmp_path / "sec-refused-buffer").iterdir()
    )


# -- workers ---------------------------------------------------------------------------------

WORKER_REFUSALS = [
    *CONNECTOR_REFUSALS,
    (
        {"CLUSTERTWIN_INFLUX_TOKEN": "clustertwin-admin:not-the-password"},
        "rejected the token (HTTP 401",
    ),
    ({"CLUSTERTWIN_INFLUX_TOKEN": ""}, "No InfluxDB token: set CLUSTERTWIN_INFLUX_TOKEN"),
]
WORKER_IDS = [*REFUSAL_IDS, "wrong-influx-token", "no-influx-token"]


@pytest.mark.parametrize(("overrides", "message"), WORKER_REFUSALS, ids=WORKER_IDS)
def test_stream_worker_refuses_to_start_with_wrong_or_missing_credentials(
    secured: SecuredStack, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    env = secured.env(
        CLUSTERTWIN_STREAMS_APP_ID=f"sec-refused-{uuid.uuid4().hex[:6]}",
        CLUSTERTWIN_STREAMS_WEB_PORT=str(_free_port()),
        **overrides,
    )
    run = _cli(["worker", "run"], env, tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr[-2000:]
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    # `python -m streams` (what the container runs) refuses the same way
    module = subprocess.run(
        [sys.executable, "-m", "streams"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )
    assert module.returncode == 2, module.stderr[-2000:]
    assert module.stderr.strip().startswith("clustertwin worker: ")
    assert message in module.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [WORKER_REFUSALS[0], WORKER_REFUSALS[1], WORKER_REFUSALS[3]],
    ids=["wrong-password", "no-credentials", "wrong-influx-token"],
)
def test_alerting_worker_refuses_to_start_with_wrong_credentials(
    secured: SecuredStack, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    env = secured.env(
        CLUSTERTWIN_ALERTS_APP_ID=f"sec-alerts-{uuid.uuid4().hex[:6]}",
        CLUSTERTWIN_ALERTS_WEB_PORT=str(_free_port()),
        CLUSTERTWIN_ALERTS_DATADIR=str(tmp_path / "faust"),
        **overrides,
    )
    run = _cli(["alerts", "worker"], env, tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr[-2000:]
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    if "INFLUX" not in next(iter(overrides)):
        listed = _cli(["alerts", "list"], env, tmp_path)  # the CLI's own Kafka reads
        assert listed.returncode == 1, listed.stdout + listed.stderr
        assert message in listed.stderr
        assert "Traceback" not in listed.stderr


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def test_stream_worker_processes_readings_over_sasl(secured: SecuredStack, tmp_path: Path) -> None:
    """The Faust worker's aiokafka consumer, producer and changelogs all authenticate."""
    topic = f"sec-readings-{uuid.uuid4().hex[:8]}"
    config = _simulator_config(tmp_path / "sim.yaml", topic, "sec-worker-feed")
    fed = _cli(["connector", "run", str(config), "--max-readings", "500"], secured.env(), tmp_path)
    assert fed.returncode == 0, fed.stderr[-2000:]
    sent = json.loads(fed.stdout.strip().splitlines()[-1])["readings_sent"]
    port = _free_port()
    env = secured.env(
        CLUSTERTWIN_READINGS_TOPIC=topic,
        CLUSTERTWIN_DEADLETTER_TOPIC=f"{topic}-dl",
        CLUSTERTWIN_STREAMS_LATE_TOPIC=f"{topic}-late",
        CLUSTERTWIN_STREAMS_APP_ID=f"sec-worker-{uuid.uuid4().hex[:6]}",
        CLUSTERTWIN_STREAMS_TWIN=f"sec-{uuid.uuid4().hex[:6]}",
        CLUSTERTWIN_STREAMS_WEB_PORT=str(port),
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    accepted = 0
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/", timeout=5) as r:
                    accepted = json.loads(r.read())["counters"]["accepted"]
            except (OSError, ValueError, KeyError):
                pass
            if accepted >= sent:
                break
            time.sleep(1)
    finally:
        code = _stop(worker) if worker.poll() is None else worker.returncode
    log_text = log_path.read_text(errors="replace")[-3000:]
    assert accepted == sent, f"worker exit {code}; accepted {accepted} of {sent}\n{log_text}"
    assert "SaslAuthenticationFailed" not in log_text


# -- HTTP push -------------------------------------------------------------------------------

PUSH_TOKEN = "push-" + uuid.uuid4().hex  # generated per run, handed over by environment only
MAX_BODY = 4096


@pytest.fixture
def push_endpoint(secured: SecuredStack, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`clustertwin connector run` of an HTTP push config: (url, topic, log path)."""
    port = _free_port()
    topic = f"sec-push-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "push.yaml"
    config.write_text(
        "\n".join(
            [
                "connector: http",
                "name: sec-push",
                "cluster: dunkirk",
                f"port: {port}",
                "token_env: SEC_TEST_PUSH_TOKEN",
                f"max_body_bytes: {MAX_BODY}",
                "kafka:",
                f"  topic: {topic}",
                "batch:",
                "  max_delay_ms: 100",
                "buffer:",
                f"  dir: {tmp_path / 'push-buffer'}",
                "",
            ]
        )
    )
    log_path = tmp_path / "push.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "connector", "run", str(config)],
            env=secured.env(SEC_TEST_PUSH_TOKEN=PUSH_TOKEN),
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"push endpoint did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}/readings", topic, log_path
    finally:
        if proc.poll() is None:
            assert _stop(proc) == 0, log_path.read_text()[-2000:]


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _raw_post(url: str, head: bytes, body: bytes) -> bytes:
    """A request urllib would not send (undecodable header bytes, chunked without length)."""
    host_port = url.split("//")[1].split("/")[0]
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /readings HTTP/1.1\r\nHost: " + host_port.encode() + b"\r\n"
            b"Connection: close\r\n" + head + b"\r\n" + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def _reading(ts: int) -> dict[str, object]:
    return {"meter": "lng-natgas", "ts": ts, "value": 41.2}


def test_http_push_requires_a_valid_bearer_token(push_endpoint: tuple[str, str, Path]) -> None:
    url, _topic, _log = push_endpoint
    body = json.dumps({"readings": [_reading(int(time.time() * 1000))]}).encode()
    json_type = {"Content-Type": "application/json"}
    for headers in (
        {},  # no token at all
        {"Authorization": f"Bearer {PUSH_TOKEN}x"},  # wrong token
        {"Authorization": f"Bearer {PUSH_TOKEN[:-1]}"},  # a prefix of the right one
        {"Authorization": f"Basic {PUSH_TOKEN}"},  # right secret, wrong scheme
        {"Authorization": "Bearer "},
    ):
        status, answer_headers, answer = _post(url, body, {**json_type, **headers})
        assert status == 401, (headers, answer)
        assert answer_headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert json.loads(answer) == {"error": "missing or wrong bearer token"}
    # undecodable header bytes are a wrong token, not a server error
    assert b" 401 " in _raw_post(
        url, b"Authorization: Bearer \xff\xfe\r\nContent-Length: %d\r\n" % len(body), body
    )
    status, _h, answer = _post(url, body, {**json_type, "Authorization": f"Bearer {PUSH_TOKEN}"})
    assert status == 202, answer
    assert json.loads(answer) == {"queued": 1, "rejected": []}


def test_http_push_bounds_the_body_size(push_endpoint: tuple[str, str, Path]) -> None:
    url, _topic, _log = push_endpoint
    auth = {"Authorization": f"Bearer {PUSH_TOKEN}", "Content-Type": "application/json"}
    now = int(time.time() * 1000)
    big = json.dumps({"readings": [_reading(now - i * 60_000) for i in range(200)]}).encode()
    assert len(big) > MAX_BODY
    status, _h, answer = _post(url, big, auth)
    assert status == 413, answer
    # a chunked body announces no length: the bound holds while it is read
    chunked = b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    head = f"Authorization: Bearer {PUSH_TOKEN}\r\nTransfer-Encoding: chunked\r\n".encode()
    assert b" 413 " in _raw_post(url, head, chunked)
    # the bound is on bytes, not a refusal of everything: a body under it is accepted
    small = json.dumps({"readings": [_reading(now - i * 60_000) for i in range(5)]}).encode()
    assert len(small) < MAX_BODY
    status, _h, answer = _post(url, small, auth)
    assert status == 202, answer


def test_http_push_delivers_accepted_readings_to_the_secured_kafka(
    secured: SecuredStack, push_endpoint: tuple[str, str, Path]
) -> None:
    url, topic, log_path = push_endpoint
    auth = {"Authorization": f"Bearer {PUSH_TOKEN}", "Content-Type": "application/json"}
    now = int(time.time() * 1000) // 60_000 * 60_000
    readings = [_reading(now - i * 60_000) for i in range(3)]
    status, _h, answer = _post(url, json.dumps({"readings": readings}).encode(), auth)
    assert status == 202, answer
    settings = secured.settings
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **client_security(settings),
    )
    got: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.5)
                consumer.topics()
                continue
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            got = []
            for _ in range(10):
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        got += [x["ts"] for x in json.loads(r.value)["readings"]]
                if len(got) >= 3:
                    break
    finally:
        consumer.close()
    assert sorted(got) == sorted(r["ts"] for r in readings), log_path.read_text()[-2000:]


def test_http_push_refuses_to_start_without_a_token(secured: SecuredStack, tmp_path: Path) -> None:
    config = tmp_path / "push.yaml"
    config.write_text(
        "connector: http\nname: sec-push-notoken\ncluster: dunkirk\n"
        f"port: {_free_port()}\ntoken_env: SEC_TEST_PUSH_TOKEN_UNSET\n"
    )
    for token in (None, "short"):
        env = secured.env()
        env.pop("SEC_TEST_PUSH_TOKEN_UNSET", None)
        if token is not None:
            env["SEC_TEST_PUSH_TOKEN_UNSET"] = token
        run = _cli(["connector", "run", str(config)], env, tmp_path)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "SEC_TEST_PUSH_TOKEN_UNSET is unset or shorter than 16 characters" in run.stderr
    # a token written in the config itself is not a field: secrets come from env or file only
    config.write_text(config.read_text() + f"token: {PUSH_TOKEN}\n")
    run = _cli(["connector", "lint", str(config)], secured.env(), tmp_path)
    assert run.returncode == 1
    assert "token: Extra inputs are not permitted" in run.stderr
