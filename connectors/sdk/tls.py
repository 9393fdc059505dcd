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
import socket
import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from connectors.sdk.base import SourceMisconfigured

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


class TlsError(SourceMisconfigured, ValueError):
    """A TLS setting that cannot be used (unreadable file, wrong password); names the field.
    A misconfiguration to the runner: no retry makes the file readable."""


class TlsRefused(SourceMisconfigured):
    """A TLS handshake refused for a certificate or protocol reason (not a network fault):
    the message names the cause and the ``tls.*`` setting to look at."""


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


# -- handshake refusals: what went wrong, in the config's terms ----------------------------

#: OpenSSL verification codes (x509_vfy.h) of a server certificate we do not accept
_VERIFY_EXPIRED = {9: "is not valid yet", 10: "has expired"}
_VERIFY_NAME = {62, 64}  # hostname, IP address mismatch
#: alerts a server sends when it does not accept our certificate (or wants one)
_CLIENT_CERT_ALERTS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "CERTIFICATE_REQUIRED",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_ACCESS_DENIED",
    "ALERT_HANDSHAKE_FAILURE",  # TLS 1.2 servers requiring a certificate we did not send
)
#: the two ends share no protocol: a TLS version, or TLS at all on that port
_PROTOCOL_REASONS = (
    "WRONG_VERSION_NUMBER",
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "ALERT_PROTOCOL_VERSION",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
)
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")


def _ssl_error_in(exc: BaseException | None, depth: int = 0) -> ssl.SSLError | None:
    """The ssl.SSLError behind ``exc`` (itself, its cause, or what aiohttp wraps)."""
    if exc is None or depth > 6:
        return None
    # aiohttp's wrappers are SSLErrors themselves, without the details: look inside first
    for attr in ("certificate_error", "os_error"):
        inner = getattr(exc, attr, None)
        if isinstance(inner, BaseException) and (found := _ssl_error_in(inner, depth + 1)):
            return found
    if isinstance(exc, ssl.SSLError):
        return exc
    for inner in (exc.__cause__, exc.__context__):
        if inner is not None and (found := _ssl_error_in(inner, depth + 1)):
            return found
    return None


def tls_refusal(
    exc: BaseException | str, peer: str, tls: ClientTls | None, where: str = "tls"
) -> TlsRefused | None:
    """The :class:`TlsRefused` a failed TLS connection to ``peer`` amounts to, or None when
    it is not a certificate or protocol refusal (a reset, a timeout: an outage).

    ``exc`` is the exception (aiohttp's and paho's wrappers are looked through), or the
    text of one where a library only logs it. The rule of each message is the setting that
    decides it: ``tls.ca_file`` (who we trust), ``tls.verify_hostname`` (the name),
    ``tls.cert_file`` (who we are), ``tls.min_version`` (the protocol).
    """
    if isinstance(exc, str):
        text, code = exc, None
        found = _SSL_REASON.search(exc)
        reason = found.group(1) if found else ""
    else:
        err = _ssl_error_in(exc)
        if err is None:
            return None
        text, reason = str(err), str(getattr(err, "reason", None) or "")
        code = None
        if isinstance(err, ssl.SSLCertVerificationError):
            code = getattr(err, "verify_code", None) or 0
    message = _refusal_message(reason, code, tls, where)
    return None if message is None else TlsRefused(f"{message} [{peer}: {text}]")


def _refusal_message(
    reason: str, code: int | None, tls: ClientTls | None, where: str
) -> str | None:
    ca = tls.ca_file if tls is not None else None
    trust = (
        f"{where}.ca_file ({ca})" if ca is not None else f"the system's CAs (no {where}.ca_file)"
    )
    if code in _VERIFY_NAME:
        return (
            f"{where}: the server's certificate does not name the host connected to "
            f"({where}.verify_hostname: connect by a name the certificate carries)"
        )
    if code in _VERIFY_EXPIRED:
        return (
            f"{where}: the server's certificate {_VERIFY_EXPIRED[code]} (checked against {trust})"
        )
    if code is not None or reason == "CERTIFICATE_VERIFY_FAILED":
        return f"{where}: the server's certificate is not trusted by {trust}"
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        cert = tls.cert_file if tls is not None else None
        if cert is None:
            return (
                f"{where}: the server requires a client certificate and none is configured "
                f"({where}.cert_file, {where}.key_file)"
            )
        return (
            f"{where}: the server refused our client certificate ({where}.cert_file {cert}: "
            "not issued by a CA it trusts, expired, or revoked)"
        )
    if any(p in reason for p in _PROTOCOL_REASONS):
        version = tls.min_version if tls is not None else "1.2"
        return (
            f"{where}: no TLS protocol in common with the server ({where}.min_version "
            f"{version}; or the port does not speak TLS)"
        )
    return None


def probe_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    peer: str,
    tls: ClientTls | None,
    timeout: float = 3.0,
) -> TlsRefused | None:
    """Why a server closed a TLS connection right after the handshake, if it was a refusal.

    Over TLS 1.3 a server that refuses our client certificate says so (an alert) only after
    the client's side of the handshake is done; a client that has sent its first request
    meanwhile is often answered with a reset, which loses the alert. This opens one more
    connection, completes the handshake and waits, sending nothing, for the server's first
    word: the alert, or silence (None: it accepts us; the closing was something else).
    Blocking: call it in a thread."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            sock.recv(1)
    except OSError as exc:  # ssl.SSLError among them
        return tls_refusal(exc, peer, tls)
    return None
