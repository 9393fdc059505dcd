"""Where the running parts of ClusterTwin find each other, and with which credentials.

Every process (workers, connectors, commands, tests) reads the same settings:
environment variables prefixed ``CLUSTERTWIN_`` win; otherwise the file written by
``clustertwin stack up`` for the native local stack is read. Nothing secret has a default:
a missing token is an error at the point of use, with a message saying where to set it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def cache_dir() -> Path:
    """Root of everything ClusterTwin installs or keeps at run time on a dev machine."""
    return Path(os.environ.get("CLUSTERTWIN_CACHE", Path.home() / ".cache" / "clustertwin"))


def stack_port_offset() -> int:
    """CLUSTERTWIN_STACK_PORT_OFFSET: a second local stack beside the usual one."""
    return int(os.environ.get("CLUSTERTWIN_STACK_PORT_OFFSET", "0"))


def stack_run_root(root: Path | None = None) -> Path:
    """Where the local stack keeps its data, pid files and logs.

    Builds are shared by every stack on the machine, but run state is not: a stack on other
    ports (a secured variant, a cold-start check) must never read the pid files or data of
    the usual one, so each port offset gets a directory of its own.
    """
    offset = stack_port_offset()
    return (root or cache_dir()) / ("stack" if offset == 0 else f"stack-{offset}")


def local_stack_env_file() -> Path:
    """The settings file that ``clustertwin stack up`` writes for the local stack."""
    return stack_run_root() / "stack.env"


class MissingCredentialError(RuntimeError):
    """A credential needed to talk to a server is not configured."""


class Settings(BaseSettings):
    """Connection settings shared by every ClusterTwin process."""

    model_config = SettingsConfigDict(env_prefix="CLUSTERTWIN_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # How clients authenticate to Kafka (see clustertwin_base/kafka_auth.py, the one place that
    # turns these into client settings). PLAINTEXT is the dev stack's default; the secured
    # stack (CLUSTERTWIN_KAFKA_SECURITY=scram) writes SASL_PLAINTEXT and a SCRAM user here.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None  # e.g. a container secret; env value wins
    kafka_ssl_cafile: Path | None = None  # SASL_SSL: CA of the brokers (default: system CAs)
    # copies of every topic the workers create (Faust's changelogs included): 1 on the
    # one-broker dev stack, 3 on a production cluster
    kafka_replication_factor: int = 1
    readings_topic: str = "readings"
    deadletter_topic: str = "readings-deadletter"
    influx_url: str = "http://127.0.0.1:8086"
    influx_token: SecretStr | None = None
    influx_org: str = "clustertwin"
    influx_bucket: str = "clustertwin"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # MQTT over TLS with a client certificate (the local stack's second listener); the files
    # are where the stack generated them, for clients that want the stack's own identity
    mqtt_tls_port: int = 8883
    mqtt_tls_ca_file: Path | None = None
    mqtt_tls_cert_file: Path | None = None
    mqtt_tls_key_file: Path | None = None

    @classmethod
    def load(cls, env_file: Path | None = None) -> Settings:
        """Read the environment, falling back to the local stack's settings file."""
        path = env_file if env_file is not None else local_stack_env_file()
        if path.exists():
            return cls(_env_file=path)
        return cls()

    @classmethod
    def from_stack_settings(cls, values: dict[str, str]) -> Settings:
        """Settings from ``CLUSTERTWIN_*`` pairs, taking precedence over the environment."""
        prefix = "CLUSTERTWIN_"
        kwargs = {k.removeprefix(prefix).lower(): v for k, v in values.items()}
        return cls.model_validate({k: v for k, v in kwargs.items() if k in cls.model_fields})

    def require_kafka_sasl(self) -> tuple[str, str]:
        """SASL username and password, or an error saying which setting is missing."""
        where = f"(or run `clustertwin stack up`, which writes {local_stack_env_file()})"
        user = (self.kafka_sasl_username or "").strip()
        if not user:
            raise MissingCredentialError(
                f"Kafka needs SASL credentials (CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL="
                f"{self.kafka_security_protocol}) but no user is set: set "
                f"CLUSTERTWIN_KAFKA_SASL_USERNAME {where}."
            )
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        if not password and self.kafka_sasl_password_file is not None:
            try:
                password = self.kafka_sasl_password_file.read_text().strip()
            except OSError as exc:
                raise MissingCredentialError(
                    f"CLUSTERTWIN_KAFKA_SASL_PASSWORD_FILE: cannot read "
                    f"{self.kafka_sasl_password_file}: {exc.strerror or exc}"
                ) from exc
        if not password:
            raise MissingCredentialError(
                f"No SASL password for Kafka user {user!r}: set CLUSTERTWIN_KAFKA_SASL_PASSWORD "
                f"or CLUSTERTWIN_KAFKA_SASL_PASSWORD_FILE {where}."
            )
        return user, password

    def require_influx_token(self) -> str:
        if self.influx_token is None or not self.influx_token.get_secret_value():
            raise MissingCredentialError(
                "No InfluxDB token: set CLUSTERTWIN_INFLUX_TOKEN (or run `clustertwin stack up`, "
                f"which writes {local_stack_env_file()})."
            )
        return self.influx_token.get_secret_value()
