"""The secured local Kafka (``CLUSTERTWIN_KAFKA_SECURITY=scram-tls``): TLS with the CA the stack
generated, and the ACL table of ``clustertwin_base.kafka_acls`` enforced per role.

The stack is started by ``clustertwin stack up kafka`` on a port offset of its own (beside the
shared dev stack and the SASL_PLAINTEXT one of tests/reliability/test_security.py) and stopped
after, unless CLUSTERTWIN_KEEP_STACK=1. Every client is built from the settings the stack wrote
(``stack.env``, ``roles/<role>.env``) through ``clustertwin_base.kafka_auth``, as the parts of
ClusterTwin build theirs.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from clustertwin.stack import kafka_security
from clustertwin.stack.pki import Authority
from clustertwin_base.kafka_acls import acl_table
from clustertwin_base.kafka_auth import (
    KafkaAuthError,
    aiokafka_security,
    check_credentials,
    client_security,
)
from clustertwin_base.settings import Settings, cache_dir, stack_port_offset

pytestmark = pytest.mark.integration

#: Above the test run's own offset; test_security.py's SASL_PLAINTEXT stack is at +40.
OFFSET_DELTA = 47
CLI = "from clustertwin.cli import main; main()"
KEPT_SETTINGS = ("CLUSTERTWIN_CACHE",)


@dataclass
class TlsStack:
    offset: int
    run_root: Path

    @property
    def kafka_dir(self) -> Path:
        return self.run_root / "kafka"

    def values(self, role: str | None = None) -> dict[str, str]:
        path = self.kafka_dir / "roles" / f"{role}.env" if role else self.run_root / "stack.env"
        return _read_env_file(path)

    def settings(self, role: str | None = None) -> Settings:
        return Settings.from_stack_settings(self.values(role))

    def admin(self) -> KafkaAdminClient:
        """The broker's own (super) user: what only the stack itself holds."""
        creds = json.loads((self.kafka_dir / "credentials.json").read_text())
        return KafkaAdminClient(
            bootstrap_servers=self.settings().kafka_bootstrap,
            request_timeout_ms=15000,
            **client_security(
                self.settings().model_copy(
                    update={
                        "kafka_sasl_username": creds["broker_user"],
                        "kafka_sasl_password": SecretStr(creds["broker_password"]),
                    }
                )
            ),
        )

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CLUSTERTWIN_") or k in KEPT_SETTINGS
        }
        env["CLUSTERTWIN_STACK_PORT_OFFSET"] = str(self.offset)
        env.update(overrides)
        return env


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _cli(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    offset = stack_port_offset() + OFFSET_DELTA
    stack = TlsStack(offset, cache_dir() / f"stack-{offset}")
    cwd = tmp_path_factory.mktemp("tls-stack")
    # InfluxDB too: the stream worker of the last test stores what it computes
    up = _cli(
        ["stack", "up", "kafka", "influxdb"],
        stack.env(CLUSTERTWIN_KAFKA_SECURITY="scram-tls"),
        cwd,
        900,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    started_line = [line for line in up.stdout.splitlines() if "started:" in line][-1]
    started = [n for n in ("kafka", "influxdb") if n in started_line.split("started:")[1]]
    try:
        yield stack
    finally:
        if started and os.environ.get("CLUSTERTWIN_KEEP_STACK") != "1":
            down = _cli(["stack", "down", *started], stack.env(), cwd)
            assert down.returncode == 0, down.stdout + down.stderr


def _bootstrap(stack: TlsStack) -> tuple[str, int]:
    host, _, port = stack.settings().kafka_bootstrap.rpartition(":")
    return host, int(port)


# -- TLS ---------------------------------------------------------------------------------------


def test_stack_writes_sasl_ssl_settings_and_owner_only_secrets(tls_stack: TlsStack) -> None:
    values = tls_stack.values()
    assert values["CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert values["CLUSTERTWIN_KAFKA_SASL_USERNAME"] == "clustertwin-worker"
    cafile = Path(values["CLUSTERTWIN_KAFKA_SSL_CAFILE"])
    assert cafile == tls_stack.kafka_dir / "tls" / "ca.pem"
    passwords = set()
    for role in ("connector", "worker", "alerting"):
        role_values = tls_stack.values(role)
        assert role_values["CLUSTERTWIN_KAFKA_SASL_USERNAME"] == f"clustertwin-{role}"
        assert role_values["CLUSTERTWIN_KAFKA_SSL_CAFILE"] == str(cafile)
        passwords.add(role_values["CLUSTERTWIN_KAFKA_SASL_PASSWORD"])
    assert len(passwords) == 3  # one password per role
    for path in (
        tls_stack.run_root / "stack.env",
        tls_stack.kafka_dir / "server.properties",  # the broker's key, inline
        tls_stack.kafka_dir / "tls" / "broker.key",
        tls_stack.kafka_dir / "tls" / "ca.key",
        *(tls_stack.kafka_dir / "roles").glob("*.env"),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    server = (tls_stack.kafka_dir / "server.properties").read_text()
    assert "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL" in server
    assert "StandardAuthorizer" in server
    assert "super.users=User:clustertwin-broker\n" in server


def test_tls_handshake_verifies_the_generated_ca_and_host_name(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    host, port = _bootstrap(tls_stack)
    context = aiokafka_security(tls_stack.settings())["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    for name in (host, "localhost"):  # both are in the broker certificate's SAN
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.3", "TLSv1.2")
            subject = dict(x[0] for x in tls.getpeercert()["subject"])  # type: ignore[index]
            assert subject["commonName"] == "clustertwin-local-broker"
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
        socket.create_connection((host, port), timeout=10) as raw,
    ):
        context.wrap_socket(raw, server_hostname="kafka.example.invalid")
    # a CA that did not sign the broker's certificate: refused, and the check says so
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(Authority.create("Someone else's CA").credential.cert_pem())
    stranger = tls_stack.settings().model_copy(update={"kafka_ssl_cafile": other_ca})
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
        socket.create_connection((host, port), timeout=10) as raw,
    ):
        aiokafka_security(stranger)["ssl_context"].wrap_socket(raw, server_hostname=host)
    with pytest.raises(KafkaAuthError, match="TLS certificate is not trusted") as refused:
        check_credentials(stranger, timeout=10)
    assert "CLUSTERTWIN_KAFKA_SSL_CAFILE" in str(refused.value)
    check_credentials(tls_stack.settings(), timeout=10)  # the stack's own CA: accepted


def test_controller_listener_wants_the_brokers_certificate(tls_stack: TlsStack) -> None:
    """The controller port (no SASL) takes only a client certificate of the stack's CA: a
    client without one cannot talk to it, so it is no anonymous back door."""
    host, port = _bootstrap(tls_stack)
    context = aiokafka_security(tls_stack.settings())["ssl_context"]
    api_versions = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04test"
    with (
        socket.create_connection((host, port + 1), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        tls.sendall(len(api_versions).to_bytes(4, "big") + api_versions)
        if not tls.recv(4):
            raise ConnectionError("closed by the controller")
    # with the broker's own certificate the same request is answered: the refusal above was
    # the missing certificate, not a dead port
    tls_dir = tls_stack.kafka_dir / "tls"
    context.load_cert_chain(tls_dir / "broker.pem", tls_dir / "broker.key")
    with (
        socket.create_connection((host, port + 1), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(len(api_versions).to_bytes(4, "big") + api_versions)
        size = int.from_bytes(tls.recv(4), "big")
        assert size > 4 and int.from_bytes(tls.recv(4), "big") == 1  # our correlation id


# -- ACLs --------------------------------------------------------------------------------------


def test_broker_acls_are_the_table(tls_stack: TlsStack) -> None:
    admin = tls_stack.admin()
    try:
        on_broker = kafka_security.broker_acls(admin)
    finally:
        admin.close()
    assert on_broker == kafka_security.bindings(acl_table())
    # and per role, in the table's own terms: every (resource, operation) of each principal
    for role, acls in acl_table().items():
        mine = {b[1:] for b in on_broker if b[0] == f"User:clustertwin-{role}"}
        assert mine == {
            (a.resource_type, a.name, a.pattern, op) for a in acls for op in a.operations
        }


def _producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        max_block_ms=15000,
        request_timeout_ms=15000,
        **client_security(settings),
    )


def _consume(
    settings: Settings, topic: str, group: str | None, want: bytes, **extra: Any
) -> list[bytes]:
    """Values read from ``topic`` until ``want`` is among them, committing in ``group``."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_security(settings),
        **extra,
    )
    got: list[bytes] = []
    try:
        if group is None:
            tps = [TopicPartition(topic, p) for p in range(4)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
        else:
            consumer.subscribe([topic])
        deadline = time.monotonic() + 40
        while want not in got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
        if group is not None:
            consumer.commit()
    finally:
        consumer.close()
    return got


def test_connector_writes_readings_and_nothing_else(tls_stack: TlsStack) -> None:
    connector = tls_stack.settings("connector")
    marker = f"tls-acl-{uuid.uuid4().hex}".encode()
    producer = _producer(connector)
    try:
        producer.send("readings", key=b"site", value=marker).get(timeout=30)
        for other in ("readings-priced", "alerts", f"not-readings-{uuid.uuid4().hex[:6]}"):
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(other, value=b"forged").get(timeout=30)
    finally:
        producer.close()
    # a connector never reads, not even what it wrote
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        _consume(connector, "readings", None, marker)
    # the worker reads it in its own group ...
    worker = tls_stack.settings("worker")
    assert marker in _consume(worker, "readings", "clustertwin-twin", marker)
    # ... but in no other group, and it cannot write readings (a forged reading)
    with pytest.raises(GroupAuthorizationFailedError):
        _consume(worker, "readings", f"not-the-twin-{uuid.uuid4().hex[:6]}", marker)
    producer = _producer(worker)
    try:
        producer.send("readings-deadletter", value=b"{}").get(timeout=30)  # its own output
        # kafka-python's producer is done for after a refused batch: this comes last
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("readings", value=b"forged").get(timeout=30)
    finally:
        producer.close()


def test_alerting_role_reads_priced_and_writes_alerts_only(tls_stack: TlsStack) -> None:
    alerting = tls_stack.settings("alerting")
    producer = _producer(alerting)
    try:
        producer.send("alerts", value=b"{}").get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("readings-priced", value=b"forged").get(timeout=30)
    finally:
        producer.close()
    with pytest.raises(TopicAuthorizationFailedError):
        _consume(alerting, "readings", None, b"never")


def test_second_stack_up_changes_nothing(tls_stack: TlsStack, tmp_path: Path) -> None:
    """Idempotent: the certificates, passwords and ACLs of a running stack are kept."""
    ca_before = (tls_stack.kafka_dir / "tls" / "ca.pem").read_bytes()
    env_before = tls_stack.values("connector")
    up = _cli(["stack", "up", "kafka"], tls_stack.env(), tmp_path)  # mode: the run dir's
    assert up.returncode == 0, up.stdout + up.stderr
    assert "started: kafka" not in up.stdout and "applied" not in up.stdout
    assert (tls_stack.kafka_dir / "tls" / "ca.pem").read_bytes() == ca_before
    assert tls_stack.values("connector") == env_before
    # `stack env --kafka-role connector` prints the role file's settings (to eval before
    # `clustertwin connector run`)
    shown = _cli(
        ["stack", "env", "--kafka-role", "connector", "--show-secrets"], tls_stack.env(), tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    exported = dict(
        line.removeprefix("export ").replace("'", "").split("=", 1)
        for line in shown.stdout.splitlines()
    )
    assert {k: exported[k] for k in env_before} == env_before


# -- the real parts, as the operator runs them ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _end_offsets(stack: TlsStack, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=stack.settings().kafka_bootstrap, **client_security(stack.settings())
    )
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(4)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


def _committed(stack: TlsStack, group: str, topic: str) -> dict[int, int]:
    admin = stack.admin()
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    except KafkaError:
        return {}
    finally:
        admin.close()
    return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}


def _run_until_caught_up(
    stack: TlsStack,
    argv: list[str],
    env: Mapping[str, str],
    log_path: Path,
    group: str,
    topic: str,
    timeout: float = 240,
) -> tuple[dict[int, int], dict[int, int], str]:
    """Run a worker until ``group`` has committed every record of ``topic`` there was at the
    start; (committed, end offsets, log).

    A worker whose stall watchdog fires exits with 70 "so the worker is restarted": it is
    restarted, as its supervisor would (at most twice; the log says so). Under a loaded CI
    machine the worker once stalled after seeking back over a skipped offset; what this test
    is about, the roles' ACLs, is judged on the log and the commits either way."""
    ends = {p: end for p, end in _end_offsets(stack, topic).items() if end > 0}
    assert ends, f"nothing in {topic} to consume"

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv, env=dict(env), cwd=log_path.parent, stdout=log, stderr=log
            )

    worker = start()
    restarts = 0
    committed: dict[int, int] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                if worker.returncode != 70 or restarts == 2:
                    break
                restarts += 1
                worker = start()
            committed = _committed(stack, group, topic)
            if all(committed.get(p, -1) >= end for p, end in ends.items()):
                break
            time.sleep(2)
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
    return committed, ends, log_path.read_text(errors="replace")


def test_connector_stream_and_alerting_clis_run_on_their_roles(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    """`clustertwin connector run` with the connector role's settings; the stream worker
    (stack.env: the worker role) consumes all of readings in its group and commits it; the
    alerting worker, on the alerting role's settings, does the same with the priced topic."""
    config = tmp_path / "sim.yaml"
    config.write_text(
        "connector: simulator\nname: tls-sim\ncluster: dunkirk\nseed: 7\nspeedup: 0\n"
        "step_s: 900\nstart: now-1d\n"
        f"buffer:\n  dir: {tmp_path / 'buffer'}\n"
    )
    fed = _cli(
        ["connector", "run", str(config), "--max-readings", "200"],
        tls_stack.env(**tls_stack.values("connector")),
        tmp_path,
    )
    assert fed.returncode == 0, fed.stderr[-2000:]
    metrics = json.loads(fed.stdout.strip().splitlines()[-1])
    assert metrics["readings_sent"] >= 200 and metrics["kafka_failures"] == 0
    worker_env = tls_stack.env(
        CLUSTERTWIN_STREAMS_WEB_PORT=str(_free_port()),
        CLUSTERTWIN_STREAMS_TWIN=f"tls-{uuid.uuid4().hex[:6]}",
        CLUSTERTWIN_STREAMS_DATADIR=str(tmp_path / "faust"),
    )
    priced_before = sum(_end_offsets(tls_stack, "readings-priced").values())
    committed, ends, log = _run_until_caught_up(
        tls_stack,
        [sys.executable, "-m", "streams"],
        worker_env,
        tmp_path / "worker.log",
        "clustertwin-twin",
        "readings",
    )
    assert "AuthorizationFailed" not in log, log[-3000:]
    assert all(committed.get(p, -1) >= end for p, end in ends.items()), (committed, ends, log)
    # it wrote its output too (the priced topic: an ACL of its own)
    assert sum(_end_offsets(tls_stack, "readings-priced").values()) > priced_before, log[-3000:]
    alerting_env = tls_stack.env(
        **tls_stack.values("alerting"),
        CLUSTERTWIN_ALERTS_WEB_PORT=str(_free_port()),
        CLUSTERTWIN_ALERTS_DATADIR=str(tmp_path / "alerts-faust"),
    )
    committed, ends, log = _run_until_caught_up(
        tls_stack,
        [sys.executable, "-c", CLI, "alerts", "worker"],
        alerting_env,
        tmp_path / "alerting.log",
        "clustertwin-alerting",
        "readings-priced",
    )
    assert "AuthorizationFailed" not in log, log[-3000:]
    assert all(committed.get(p, -1) >= end for p, end in ends.items()), (committed, ends, log)
