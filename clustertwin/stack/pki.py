"""Certificates made at run time: a private CA for the local stack's TLS listeners and the
tests' servers and clients. Nothing here is shipped: every key is generated on the machine
that uses it, and private keys are written readable by their owner only (0600).

The one place certificates are generated: the stack (Mosquitto's TLS listener) and the
tests import it; connectors never do (they only load what an operator provisions).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Usage = Literal["server", "client", "both"]
#: RSA, not EC: the OPC UA policies Basic256Sha256 and Aes128Sha256RsaOaep are RSA-only.
KEY_BITS = 2048


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ClusterTwin local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_names(hosts: Sequence[str], uris: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _private_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def write(self, directory: Path, stem: str, password: bytes | None = None) -> tuple[Path, Path]:
        """``<stem>.pem`` (certificate) and ``<stem>.key`` (0600) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
        _private_write(key, self.key_pem(password))
        cert.write_bytes(self.cert_pem())
        return cert, key

    @classmethod
    def read(cls, cert: Path, key: Path) -> Credential:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError(f"{key}: not an RSA key")
        return cls(certificate, private)

    def valid_for(self, days: float) -> bool:
        left = self.certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
        return left > dt.timedelta(days=days)


def _build(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: Credential | None,
    *,
    hosts: Sequence[str] = (),
    uris: Sequence[str] = (),
    usage: Usage | None = None,
    days: int = 825,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    is_ca = usage is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.certificate.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks of a test's peers differ
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=not is_ca,  # OPC UA validators ask for non-repudiation
                key_encipherment=not is_ca,
                data_encipherment=not is_ca,
                key_agreement=False,
                key_cert_sign=is_ca or issuer is None,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if usage is not None:
        ekus = {
            "server": [ExtendedKeyUsageOID.SERVER_AUTH],
            "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
            "both": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }[usage]
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), False)
    names = _alt_names(hosts, uris)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    signer = issuer.key if issuer else key
    return builder.sign(signer, hashes.SHA256())


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


class Authority:
    """A private CA that issues server and client certificates."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    @classmethod
    def create(cls, common_name: str = "ClusterTwin local CA", days: int = 3650) -> Authority:
        key = new_key()
        return cls(Credential(_build(common_name, key, None, days=days), key))

    def issue(
        self,
        common_name: str,
        *,
        hosts: Sequence[str] = (),
        uris: Sequence[str] = (),
        usage: Usage = "server",
        days: int = 825,
    ) -> Credential:
        key = new_key()
        cert = _build(
            common_name, key, self.credential, hosts=hosts, uris=uris, usage=usage, days=days
        )
        return Credential(cert, key)


def self_signed(
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    uris: Sequence[str] = (),
    usage: Usage = "both",
    days: int = 825,
) -> Credential:
    """An OPC UA application instance certificate: self-signed, trusted by being pinned."""
    key = new_key()
    cert = _build(common_name, key, None, hosts=hosts, uris=uris, usage=usage, days=days)
    return Credential(cert, key)


@dataclass(frozen=True)
class LocalTls:
    """Where the local stack keeps its CA and the certificates it issued."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.pem"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    def ensure(
        self,
        hosts: Sequence[str] = ("127.0.0.1", "localhost"),
        leaves: Sequence[tuple[str, Usage]] = (("server", "server"), ("client", "client")),
    ) -> bool:
        """Create the CA and the ``leaves`` (stem, usage) unless valid ones exist: by default a
        ``server`` and a ``client`` certificate, each named ``clustertwin-local-<stem>``.

        True if anything was (re)made. Idempotent: a running broker's files are kept, so a
        second ``stack up`` changes nothing; a certificate that nears its end is reissued.
        """
        made = False
        try:
            ca = Authority(Credential.read(self.ca_file, self.ca_key))
            if not ca.credential.valid_for(30):
                raise ValueError("CA expires soon")
        except (OSError, ValueError):
            ca = Authority.create()
            ca.credential.write(self.directory, "ca")
            made = True
        for stem, usage in leaves:
            try:
                current = Credential.read(self.cert(stem), self.key(stem))
                current.certificate.verify_directly_issued_by(ca.credential.certificate)
                if made or not current.valid_for(30):
                    raise ValueError("reissue")
            except (OSError, ValueError, TypeError, InvalidSignature):
                issued = ca.issue(f"clustertwin-local-{stem}", hosts=hosts, usage=usage)
                issued.write(self.directory, stem)
                made = True
        return made
