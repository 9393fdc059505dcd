"""OPC UA message security: policy, mode, the client's certificate, the servers it trusts.

OPC UA authenticates both ends with application instance certificates (usually self-signed)
instead of hostnames, so trust is a list: a server is accepted only if its certificate is
listed (pinned) or was issued by a listed CA certificate, and is within its validity. The
server's certificate is fetched through discovery (GetEndpoints, which the standard allows
on an unsecured channel and which carries no plant data), checked here, and only then used
to open the signed/encrypted channel; asyncua refuses the session if the server presents a
different one later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asyncua import ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.sdk.base import SourceMisconfigured
from connectors.sdk.tls import CredentialPath, check_private, key_password

Policy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep"]
Mode = Literal["None", "Sign", "SignAndEncrypt"]

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
}


class SecurityConfigError(SourceMisconfigured, ValueError):
    """A security file that cannot be used; the message names the field."""


class UntrustedServer(SourceMisconfigured):
    """The server's certificate is not among ``security.server_certificates``."""


class OpcUaSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Policy = Field(default="None", description="None: no signing, no encryption")
    mode: Mode | None = Field(default=None, description="default: SignAndEncrypt with a policy")
    certificate: CredentialPath | None = Field(
        default=None, description="the connector's application instance certificate (PEM/DER)"
    )
    private_key: CredentialPath | None = Field(default=None, description="its key (PEM/DER)")
    private_key_password_env: str | None = None
    server_certificates: list[CredentialPath] = Field(
        default_factory=list, description="trusted: each a server's certificate or its CA's"
    )
    application_uri: str | None = Field(
        default=None, description="default: the URI in the certificate's subjectAltName"
    )

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if self.policy == "None":
            if self.mode not in (None, "None"):
                raise ValueError(
                    f"security.mode: {self.mode} needs security.policy Basic256Sha256 or "
                    "Aes128Sha256RsaOaep, not None"
                )
            return self
        if self.mode is None:
            self.mode = "SignAndEncrypt"
        if self.mode == "None":
            raise ValueError(
                f"security.mode: None with policy {self.policy}; Sign or SignAndEncrypt"
            )
        for name in ("certificate", "private_key"):
            if getattr(self, name) is None:
                raise ValueError(f"security.{name}: required for {self.policy}/{self.mode}")
        if not self.server_certificates:
            raise ValueError(
                "security.server_certificates: at least one trusted server certificate (or "
                "its CA) is required; an unverified server is refused"
            )
        return self

    @property
    def secure(self) -> bool:
        return self.policy != "None"

    def message_mode(self) -> ua.MessageSecurityMode:
        return getattr(ua.MessageSecurityMode, self.mode or "None")


def _read_cert(path: Path, where: str) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SecurityConfigError(f"{where}: {path} is not a PEM or DER certificate") from exc


@dataclass(frozen=True)
class ClientCredentials:
    certificate_der: bytes
    key_der: bytes
    application_uri: str


def load_credentials(sec: OpcUaSecurity) -> ClientCredentials:
    """The client's certificate and key, checked to belong together, as DER for asyncua."""
    assert sec.certificate is not None and sec.private_key is not None
    cert = _read_cert(sec.certificate, "security.certificate")
    check_private(sec.private_key, "security.private_key")
    password = key_password(sec.private_key_password_env, "security.private_key_password_env")
    data = sec.private_key.read_bytes()
    pw = password.encode() if password else None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, pw)
        else:
            key = serialization.load_der_private_key(data, pw)
    except (ValueError, TypeError) as exc:
        raise SecurityConfigError(
            f"security.private_key: cannot load {sec.private_key} (format or password): {exc}"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecurityConfigError(f"security.private_key: {sec.policy} needs an RSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise SecurityConfigError(
            f"security.private_key: {sec.private_key} is not the key of {sec.certificate}"
        )
    uri = sec.application_uri
    if uri is None:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uri = next(iter(san.get_values_for_type(x509.UniformResourceIdentifier)))
        except (x509.ExtensionNotFound, StopIteration) as exc:
            raise SecurityConfigError(
                "security.certificate: has no application URI (subjectAltName URI); OPC UA "
                "servers refuse such a certificate"
            ) from exc
    return ClientCredentials(
        cert.public_bytes(serialization.Encoding.DER),
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        uri,
    )


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def first_certificate(blob: bytes) -> bytes:
    """The server's own certificate out of a DER chain (its length is in bytes 2-4)."""
    return blob[: int.from_bytes(blob[2:4], "big") + 4]


def check_trusted(server_der: bytes, sec: OpcUaSecurity, endpoint: str) -> None:
    """Raise :class:`UntrustedServer` unless the server's certificate is pinned or issued by
    a listed CA, and valid now."""
    cert = x509.load_der_x509_certificate(server_der)
    now = dt.datetime.now(dt.UTC)
    subject = cert.subject.rfc4514_string()
    who = f"OPC UA server {endpoint} (certificate {subject}, SHA-256 {fingerprint(cert)})"
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UntrustedServer(f"{who}: certificate is outside its validity period")
    for i, path in enumerate(sec.server_certificates):
        trusted = _read_cert(path, f"security.server_certificates[{i}]")
        if trusted == cert:
            return
        try:
            if trusted.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                cert.verify_directly_issued_by(trusted)
                return
        except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
            continue  # not a CA, or not the one that issued it
    raise UntrustedServer(
        f"{who} is not trusted: neither it nor its issuer is in security.server_certificates; "
        "add it only after checking the fingerprint with the plant"
    )


def describe_endpoints(endpoints: list[ua.EndpointDescription]) -> str:
    names = {cls.URI: name for name, cls in POLICIES.items()}
    offers = sorted(
        {
            f"{names.get(e.SecurityPolicyUri, e.SecurityPolicyUri.rsplit('#', 1)[-1])}/"
            f"{e.SecurityMode.name.rstrip('_')}"
            for e in endpoints
        }
    )
    return ", ".join(offers) or "nothing"


def pick_endpoint(
    endpoints: list[ua.EndpointDescription], sec: OpcUaSecurity, url: str
) -> ua.EndpointDescription:
    uri, mode = POLICIES[sec.policy].URI, sec.message_mode()
    for e in endpoints:
        if e.SecurityPolicyUri == uri and e.SecurityMode == mode:
            return e
    raise SourceMisconfigured(
        f"OPC UA server {url} offers no {sec.policy}/{sec.mode} endpoint; it offers: "
        f"{describe_endpoints(endpoints)}"
    )
