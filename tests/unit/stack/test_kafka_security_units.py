"""The secured Kafka option and the client security settings, without a server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from clustertwin.stack import StackError
from clustertwin.stack.kafka import Kafka
from clustertwin_base.kafka_auth import client_security, faust_credentials
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
