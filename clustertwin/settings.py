"""Where the running parts of ClusterTwin find each other, and with which credentials.

Every process (worker, connectors, dashboards push, tests) reads the same settings:
environment variables prefixed ``CLUSTERTWIN_`` win; otherwise the file written by
``clustertwin stack up`` for the native local stack is read. Nothing secret has a default:
a missing token is an error at the point of use, with a message saying where to set it.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    readings_topic: str = "readings"
    deadletter_topic: str = "readings-deadletter"
    influx_url: str = "http://127.0.0.1:8086"
    influx_token: SecretStr | None = None
    influx_org: str = "clustertwin"
    influx_bucket: str = "clustertwin"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    grafana_url: str = "http://127.0.0.1:3000"
    grafana_token: SecretStr | None = None

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

    def require_influx_token(self) -> str:
        if self.influx_token is None or not self.influx_token.get_secret_value():
            raise MissingCredentialError(
                "No InfluxDB token: set CLUSTERTWIN_INFLUX_TOKEN (or run `clustertwin stack up`, "
                f"which writes {local_stack_env_file()})."
            )
        return self.influx_token.get_secret_value()
