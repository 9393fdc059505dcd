"""The secured Kafka option and the client security settings, without a server."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import SecretStr

from clustertwin.stack import StackError, kafka_security
from clustertwin.stack.kafka import Kafka
from clustertwin.stack.pki import Authority, Credential
from clustertwin_base.kafka_acls import ROLES, acl_table
from clustertwin_base.kafka_auth import (
    KafkaAuthError,
    aiokafka_security,
    client_security,
    faust_credentials,
)
from clustertwin_base.settings import MissingCredentialError, Settings


@pytest.fixture(autouse=True)
def _no_ambient_security(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLUSTERTWIN_KAFKA_SECURITY", raising=False)


def test_scram_mode_configures_a_sasl_listener_with_generated_users(tmp_path: Path) -> None:
    kafka = Kafka(port=19092, controller_port=19093, root=tmp_path, security="scram")
    config_path = kafka._write_config()
    config = config_path.read_text()
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in config
    assert "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:19092" in config
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in config
    assert "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT" in (
        config
    )
    assert "PLAINTEXT://127.0.0.1:19092" not in config.replace("SASL_PLAINTEXT", "")
    creds = json.loads(kafka.credentials_file.read_text())
    assert creds["user"] == "clustertwin" and creds["broker_user"] == "clustertwin-broker"
    assert len(creds["password"]) >= 24 and creds["password"] != creds["broker_password"]
    for path in (kafka.credentials_file, config_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kafka.data_dir.name == "data-scram"  # never the plaintext stack's storage
    settings = kafka.settings()
    assert settings["CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert settings["CLUSTERTWIN_KAFKA_SASL_PASSWORD"] == creds["password"]
    # a second Kafka object of the same run dir keeps the passwords and the mode
    again = Kafka(port=19092, controller_port=19093, root=tmp_path)
    assert again.security == "scram"
    assert again.settings() == settings


def test_passwords_are_random_per_stack(tmp_path: Path) -> None:
    one = Kafka(root=tmp_path / "a", security="scram")
    two = Kafka(root=tmp_path / "b", security="scram")
    assert one.client_config()["sasl_plain_password"] != two.client_config()["sasl_plain_password"]


def test_default_is_plaintext_and_unknown_modes_are_refused(tmp_path: Path) -> None:
    kafka = Kafka(root=tmp_path)
    assert kafka.security == "none"
    assert kafka.settings()["CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "SASL" not in kafka._write_config().read_text()
    with pytest.raises(StackError, match="CLUSTERTWIN_KAFKA_SECURITY='kerberos'"):
        Kafka(root=tmp_path, security="kerberos")


def test_client_security_for_plaintext_and_scram() -> None:
    assert client_security(Settings.from_stack_settings({})) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings.from_stack_settings({})) is None
    settings = Settings.from_stack_settings(
        {
            "CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CLUSTERTWIN_KAFKA_SASL_USERNAME": "svc",
            "CLUSTERTWIN_KAFKA_SASL_PASSWORD": "s3cret",
        }
    )
    assert client_security(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }
    creds = faust_credentials(settings)
    assert creds is not None
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "svc",
        "s3cret",
        "SCRAM-SHA-512",
    )
    assert "s3cret" not in repr(settings)  # the password is a SecretStr


def test_missing_sasl_credentials_say_what_to_set(tmp_path: Path) -> None:
    sasl = Settings.from_stack_settings({"CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(MissingCredentialError, match="CLUSTERTWIN_KAFKA_SASL_USERNAME"):
        client_security(sasl)
    no_password = sasl.model_copy(update={"kafka_sasl_username": "svc"})
    with pytest.raises(MissingCredentialError, match="No SASL password for Kafka user 'svc'"):
        client_security(no_password)
    secret = tmp_path / "kafka-password"
    secret.write_text("from-file\n")
    from_file = no_password.model_copy(update={"kafka_sasl_password_file": secret})
    assert client_security(from_file)["sasl_plain_password"] == "from-file"
    env_wins = from_file.model_copy(update={"kafka_sasl_password": SecretStr("from-env")})
    assert client_security(env_wins)["sasl_plain_password"] == "from-env"
    gone = no_password.model_copy(update={"kafka_sasl_password_file": tmp_path / "absent"})
    with pytest.raises(MissingCredentialError, match="cannot read"):
        client_security(gone)


# -- scram-tls: SASL_SSL with the ACL table --------------------------------------------------


def _properties(text: str) -> dict[str, str]:
    """server.properties as Java reads it (only the escape Kafka's PEM values use)."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value.replace("\\n", "\n")
    return out


def test_scram_tls_mode_configures_sasl_ssl_an_ssl_controller_and_the_authorizer(
    tmp_path: Path,
) -> None:
    kafka = Kafka(port=19092, controller_port=19093, root=tmp_path, security="scram-tls")
    props = _properties(kafka._write_config().read_text())
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:clustertwin-broker"  # no ANONYMOUS
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config" in props
    # the inline PEM values are the generated files, byte for byte (bar the final newline)
    tls = kafka.tls_dir
    assert props["ssl.keystore.certificate.chain"] == tls.cert("broker").read_text().strip()
    assert props["ssl.keystore.key"] == tls.key("broker").read_text().strip()
    assert props["ssl.truststore.certificates"] == tls.ca_file.read_text().strip()
    broker = Credential.read(tls.cert("broker"), tls.key("broker"))
    broker.certificate.verify_directly_issued_by(
        Credential.read(tls.ca_file, tls.ca_key).certificate
    )
    san = broker.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert stat.S_IMODE(tls.key("broker").stat().st_mode) == 0o600
    assert kafka.data_dir.name == "data-scram-tls"


def test_scram_tls_settings_carry_one_user_per_role_and_the_ca(tmp_path: Path) -> None:
    kafka = Kafka(root=tmp_path, security="scram-tls")
    kafka._write_config()
    default = kafka.settings()
    assert default["CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert default["CLUSTERTWIN_KAFKA_SSL_CAFILE"] == str(kafka.tls_dir.ca_file)
    assert default["CLUSTERTWIN_KAFKA_SASL_USERNAME"] == "clustertwin-worker"
    per_role = {role: kafka.settings(role) for role in ROLES}
    assert per_role["worker"] == default
    assert {s["CLUSTERTWIN_KAFKA_SASL_USERNAME"] for s in per_role.values()} == {
        f"clustertwin-{role}" for role in ROLES
    }
    passwords = {s["CLUSTERTWIN_KAFKA_SASL_PASSWORD"] for s in per_role.values()}
    broker = kafka.client_config(admin=True)
    assert len(passwords | {broker["sasl_plain_password"]}) == 4
    assert broker["sasl_plain_username"] == "clustertwin-broker"
    assert broker["ssl_check_hostname"] is True


def test_acl_bindings_survive_the_round_trip_through_kafka_python_objects() -> None:
    from kafka.admin import ACLResourcePatternType

    table = acl_table()
    wanted = kafka_security.bindings(table)
    objects = kafka_security.to_kafka(wanted)
    assert len(objects) == sum(len(a.operations) for acls in table.values() for a in acls)
    assert kafka_security.from_kafka(objects) == wanted
    prefixed = {
        o.resource_pattern.resource_name
        for o in objects
        if o.resource_pattern.pattern_type == ACLResourcePatternType.PREFIXED
    }
    assert prefixed == {"clustertwin-twin-", "clustertwin-alerting-"}
    # a broker ACL outside the table (a DENY, a host rule) does not compare equal
    deny = objects[0]
    from kafka.admin import ACL, ACLPermissionType

    other = ACL(
        deny.principal, deny.host, deny.operation, ACLPermissionType.DENY, deny.resource_pattern
    )
    assert kafka_security.from_kafka([*objects[1:], other]) != wanted


def test_sasl_ssl_clients_verify_the_ca_and_the_host_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Authority.create().credential.cert_pem())
    settings = Settings.from_stack_settings(
        {
            "CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CLUSTERTWIN_KAFKA_SASL_USERNAME": "svc",
            "CLUSTERTWIN_KAFKA_SASL_PASSWORD": "s3cret",
            "CLUSTERTWIN_KAFKA_SSL_CAFILE": str(ca),
        }
    )
    config = client_security(settings)
    assert config["ssl_cafile"] == str(ca) and config["ssl_check_hostname"] is True
    context = aiokafka_security(settings)["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "ssl_check_hostname" not in aiokafka_security(settings)  # aiokafka has no such key
    creds = faust_credentials(settings)
    assert creds is not None and creds.ssl_context is not None
    assert creds.ssl_context.check_hostname
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("not a certificate\n")
    bad = settings.model_copy(update={"kafka_ssl_cafile": not_a_ca})
    with pytest.raises(KafkaAuthError, match=r"CLUSTERTWIN_KAFKA_SSL_CAFILE=.*not-a-ca\.pem"):
        aiokafka_security(bad)
