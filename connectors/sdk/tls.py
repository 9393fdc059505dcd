"""TLS for a connector's link to its source: certificates from files, never from the config.

One vocabulary for every TLS link a connector opens (MQTT) or serves (HTTP push): file paths
to a CA, a certificate and its key, the key's password from an environment variable, a
minimum protocol version, hostname verification on unless switched off. Paths may use
``${VAR}`` (e.g. ``${CREDENTIALS_DIRECTORY}/mqtt.key`` under systemd), so the secrets stay
where the site's secret store puts them.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: object) -> object:
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ValueError(f"environment variable ${{{m.group(1)}}} is not set")
        return os.environ[m.group(1)]

    return _VAR.sub(sub, value)


#: A file path that may name environment variables as ``${VAR}``.
CredentialPath = Annotated[Path, BeforeValidator(_expand)]

TlsVersion = Literal["1.2", "1.3"]
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(ValueError):
    """A TLS setting that cannot be used (unreadable file, wrong password); names the field."""


def key_password(env: str | None, where: str) -> str | None:
    """The private key's password from the environment variable ``env``, if one is named."""
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise TlsError(f"{where}: environment variable ${env} is not set")
    return value


def check_private(path: Path, where: str) -> None:
    """Warn (once per open) when a private key is readable by other users."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TlsError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        log.warning("%s %s is readable by other users (mode %o); chmod 600 it", where, path, mode)


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, password: str | None, at: str) -> None:
    check_private(key, f"{at}.key_file")
    try:
        ctx.load_cert_chain(cert, key, password=password)
    except FileNotFoundError as exc:
        raise TlsError(f"{at}.cert_file/key_file: {exc.filename}: no such file") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"{at}.cert_file/key_file: cannot load {cert} with {key} (wrong key, password "
            f"or format?): {exc}"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, ca: Path, where: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{where}: cannot load CA certificates from {ca}: {exc}") from exc


class ClientTls(BaseModel):
    """TLS of a link the connector opens (to a broker): who it trusts, who it is."""

    model_config = ConfigDict(extra="forbid")

    ca_file: CredentialPath | None = Field(
        default=None,
        description="CA bundle the server's certificate must chain to; default: the system's",
    )
    cert_file: CredentialPath | None = Field(default=None, description="client certificate (PEM)")
    key_file: CredentialPath | None = Field(default=None, description="its private key (PEM)")
    key_password_env: str | None = Field(default=None, description="env var: the key's password")
    min_version: TlsVersion = "1.2"
    verify_hostname: bool = Field(
        default=True, description="the server's certificate must name the host connected to"
    )

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file: give both (a client certificate and its key)")
        if self.key_password_env and self.key_file is None:
            raise ValueError("key_password_env: needs key_file")
        return self

    def context(self, where: str = "tls") -> ssl.SSLContext:
        """A client context that verifies the server (always) and presents our certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = _VERSIONS[self.min_version]
        if self.ca_file is not None:
            _load_ca(ctx, self.ca_file, f"{where}.ca_file")
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = self.verify_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED  # no switch for this: an unverified server is none
        if self.cert_file is not None and self.key_file is not None:
            password = key_password(self.key_password_env, f"{where}.key_password_env")
            _load_chain(ctx, self.cert_file, self.key_file, password, where)
        return ctx


class ServerTls(BaseModel):
    """TLS of an endpoint the connector serves (HTTP push); optionally mutual TLS."""

    model_config = ConfigDict(extra="forbid")

    cert_file: CredentialPath = Field(description="server certificate chain (PEM)")
    key_file: CredentialPath = Field(description="its private key (PEM)")
    key_password_env: str | None = None
    client_ca_file: CredentialPath | None = Field(
        default=None,
        description="mutual TLS: clients must present a certificate issued by this CA",
    )
    min_version: TlsVersion = "1.2"

    def context(self, where: str = "tls") -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.min_version]
        password = key_password(self.key_password_env, f"{where}.key_password_env")
        _load_chain(ctx, self.cert_file, self.key_file, password, where)
        if self.client_ca_file is not None:
            _load_ca(ctx, self.client_ca_file, f"{where}.client_ca_file")
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
