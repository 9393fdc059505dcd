"""Kafka client security, built in one place from ``Settings``, and a start-up credentials check.

Every Kafka client of ClusterTwin (the connectors' kafka-python producer, the Faust workers'
aiokafka clients, the CLI's consumers and admin clients) takes its security settings from
``client_security`` or ``faust_credentials`` here, so a secured cluster needs the same four
``CLUSTERTWIN_KAFKA_*`` settings everywhere and no client is forgotten.

Why a check of our own: kafka-python and aiokafka treat a broker that refuses the SASL
credentials like one that is down — they retry until a bootstrap timeout and then report
"unable to bootstrap", which sends the operator looking at the network. ``check_credentials``
speaks just enough of the Kafka protocol (SaslHandshake, SaslAuthenticate) to ask the broker
once, with a bounded timeout, and turns its answer into a message naming the user and the
setting to fix. A broker that cannot be reached is a different case (``KafkaUnreachable``):
connectors buffer on disk through an outage, so only a definite refusal stops a start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any

from clustertwin_base.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaAuthError(RuntimeError):
    """Kafka answered and refused our credentials, or our security settings do not match it."""


class KafkaUnreachable(RuntimeError):
    """No broker could be asked (down, or not answering in time): credentials not checked."""


def _quiet_scram_warning(settings: Settings) -> None:
    # kafka-python warns "Exchanging credentials in the clear" for any SASL over PLAINTEXT;
    # SCRAM never sends the password (only a salted proof), so for SCRAM it only misleads.
    if settings.kafka_sasl_mechanism.startswith("SCRAM-"):
        logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)


def client_security(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for kafka-python clients (aiokafka takes the same names,
    except ``ssl_cafile``: see ``aiokafka_security``).

    Raises ``MissingCredentialError`` when SASL is configured without a user or password.
    """
    protocol = settings.kafka_security_protocol
    if protocol not in SASL_PROTOCOLS:
        return {"security_protocol": "PLAINTEXT"}
    user, password = settings.require_kafka_sasl()
    _quiet_scram_warning(settings)
    config: dict[str, Any] = {
        "security_protocol": protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }
    if protocol == "SASL_SSL":
        # the broker's certificate must name the host we dialled (kafka-python's default,
        # stated so no one turns it off by accident); without a CA file: the system's CAs
        config["ssl_check_hostname"] = True
        if settings.kafka_ssl_cafile is not None:
            config["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return config


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifying context (certificate chain and host name) for aiokafka, Faust and the check."""
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaAuthError(
            f"CLUSTERTWIN_KAFKA_SSL_CAFILE={cafile}: cannot load it as a PEM CA certificate: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from exc


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for aiokafka clients (it wants an SSL context, not a file)."""
    config = client_security(settings)
    config.pop("ssl_check_hostname", None)  # the context checks host names itself
    if config.pop("ssl_cafile", None) is not None or config["security_protocol"] == "SASL_SSL":
        config["ssl_context"] = _ssl_context(settings)
    return config


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """``broker_credentials`` for a Faust app (None: PLAINTEXT)."""
    import faust  # only the workers have Faust: connectors and the CLI import this module too

    if settings.kafka_security_protocol not in SASL_PROTOCOLS:
        return None
    user, password = settings.require_kafka_sasl()
    _quiet_scram_warning(settings)
    return faust.SASLCredentials(
        username=user,
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=(
            _ssl_context(settings) if settings.kafka_security_protocol == "SASL_SSL" else None
        ),
    )


# -- the start-up check ------------------------------------------------------------------

_SASL_HANDSHAKE, _SASL_AUTHENTICATE = 17, 36
_ERRORS = {
    33: "UNSUPPORTED_SASL_MECHANISM",
    34: "ILLEGAL_SASL_STATE",
    58: "SASL_AUTHENTICATION_FAILED",
}


class _Wire:
    """Just enough of the Kafka protocol for SaslHandshake v1 and SaslAuthenticate v1."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0

    def request(self, api_key: int, body: bytes) -> bytes:
        self.correlation += 1
        client_id = b"clustertwin-credentials-check"
        header = struct.pack(">hhih", api_key, 1, self.correlation, len(client_id)) + client_id
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", self._read(4))[0]
        response = self._read(size)
        if struct.unpack(">i", response[:4])[0] != self.correlation:
            raise ConnectionError("out-of-order response")
        return response[4:]

    def _read(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self.sock.recv(n - len(chunks))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            chunks += chunk
        return bytes(chunks)


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _handshake(wire: _Wire, mechanism: str) -> tuple[int, list[str]]:
    """SaslHandshake: (error code, mechanisms the listener enables)."""
    data = wire.request(_SASL_HANDSHAKE, _string(mechanism))
    error, count = struct.unpack(">hi", data[:6])
    pos, mechanisms = 6, []
    for _ in range(max(count, 0)):
        (length,) = struct.unpack(">h", data[pos : pos + 2])
        mechanisms.append(data[pos + 2 : pos + 2 + length].decode())
        pos += 2 + length
    return error, mechanisms


def _authenticate(wire: _Wire, token: bytes) -> tuple[int, str, bytes]:
    """SaslAuthenticate: (error code, error message, server's bytes)."""
    data = wire.request(_SASL_AUTHENTICATE, struct.pack(">i", len(token)) + token)
    (error,) = struct.unpack(">h", data[:2])
    (msg_len,) = struct.unpack(">h", data[2:4])
    pos = 4
    message = ""
    if msg_len >= 0:
        message = data[pos : pos + msg_len].decode(errors="replace")
        pos += msg_len
    (auth_len,) = struct.unpack(">i", data[pos : pos + 4])
    auth = data[pos + 4 : pos + 4 + max(auth_len, 0)]
    return error, message, auth


def _scram(wire: _Wire, mechanism: str, user: str, password: str) -> tuple[int, str]:
    """A SCRAM exchange (RFC 5802); returns the broker's (error code, message)."""
    digest = hashlib.sha512 if mechanism == "SCRAM-SHA-512" else hashlib.sha256
    nonce = secrets.token_urlsafe(18)
    saslname = user.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={saslname},r={nonce}"
    error, message, server_first = _authenticate(wire, f"n,,{first_bare}".encode())
    if error:
        return error, message
    fields = dict(p.split("=", 1) for p in server_first.decode().split(","))
    if not fields.get("r", "").startswith(nonce):
        return -1, "the broker's SCRAM nonce does not extend ours"
    salted = hashlib.pbkdf2_hmac(
        digest().name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.new(digest(client_key).digest(), auth_message, digest).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    error, message, server_final = _authenticate(
        wire, f"{without_proof},p={proof.decode()}".encode()
    )
    if error:
        return error, message
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, digest).digest()).decode()
    if dict(p.split("=", 1) for p in server_final.decode().split(",")).get("v") != expected:
        return -1, "the broker's SCRAM signature is wrong (not the broker we think it is?)"
    return 0, ""


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip().removeprefix("kafka://")
        if not item:
            continue
        host, _, port = item.rpartition(":")
        out.append((host.strip("[]") or item, int(port) if port.isdigit() else 9092))
    return out


def _tls(settings: Settings, sock: socket.socket, host: str, where: str) -> ssl.SSLSocket:
    """TLS to the broker; a certificate we do not trust is a refusal, not an outage."""
    try:
        return _ssl_context(settings).wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        cafile = settings.kafka_ssl_cafile or "the system's CAs"
        raise KafkaAuthError(
            f"Kafka at {where}: its TLS certificate is not trusted ({exc.verify_message}) "
            f"with CA {cafile}: set CLUSTERTWIN_KAFKA_SSL_CAFILE to the CA that signed the "
            "broker's certificate (the local stack's: `clustertwin stack env`) and dial a "
            "host name the certificate names."
        ) from exc


def check_credentials(
    settings: Settings, bootstrap: str | None = None, timeout: float = 10.0
) -> None:
    """Ask the broker once whether our security settings and credentials are accepted.

    Returns when they are (or the listener is PLAINTEXT and we are too). Raises
    ``KafkaAuthError`` with the fix when the broker refuses them or expects something else,
    ``MissingCredentialError`` when SASL is configured without credentials, and
    ``KafkaUnreachable`` when no broker answered within ``timeout`` seconds.
    """
    bootstrap = bootstrap or settings.kafka_bootstrap
    protocol = settings.kafka_security_protocol
    sasl = protocol in SASL_PROTOCOLS
    user, password = settings.require_kafka_sasl() if sasl else ("", "")
    mechanism = settings.kafka_sasl_mechanism
    problems: list[str] = []
    for host, port in _addresses(bootstrap):
        where = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            problems.append(f"{where}: {exc.strerror or exc}")
            continue
        try:
            sock.settimeout(timeout)
            if protocol == "SASL_SSL":
                sock = _tls(settings, sock, host, where)
            wire = _Wire(sock)
            error, enabled = _handshake(wire, mechanism)
            if not sasl:
                if error == 34:  # ILLEGAL_SASL_STATE: this listener does not do SASL; fine
                    return
                raise KafkaAuthError(
                    f"Kafka at {where} requires SASL authentication (mechanisms: "
                    f"{', '.join(enabled) or '?'}) but no credentials are configured: set "
                    "CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT (or SASL_SSL), "
                    "CLUSTERTWIN_KAFKA_SASL_MECHANISM, CLUSTERTWIN_KAFKA_SASL_USERNAME and "
                    "CLUSTERTWIN_KAFKA_SASL_PASSWORD (`clustertwin stack env --show-secrets` "
                    "prints the local stack's)."
                )
            if error == 34:
                raise KafkaAuthError(
                    f"Kafka at {where} does not use SASL on this listener, but "
                    f"CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL={protocol}: set it to PLAINTEXT or "
                    "point CLUSTERTWIN_KAFKA_BOOTSTRAP at the SASL listener."
                )
            if error == 33 or mechanism not in enabled:
                raise KafkaAuthError(
                    f"Kafka at {where} does not offer SASL mechanism {mechanism} "
                    f"(it offers {', '.join(enabled) or 'none'}): set "
                    "CLUSTERTWIN_KAFKA_SASL_MECHANISM accordingly."
                )
            if error:
                raise KafkaAuthError(f"Kafka at {where}: SASL handshake failed (error {error})")
            if mechanism == "PLAIN":
                code, message, _ = _authenticate(wire, f"\0{user}\0{password}".encode())
            else:
                code, message = _scram(wire, mechanism, user, password)
            if code:
                reason = message or _ERRORS.get(code, f"error {code}")
                raise KafkaAuthError(
                    f"Kafka rejected the SASL credentials for user {user!r} at {where}: "
                    f"{reason}. Check CLUSTERTWIN_KAFKA_SASL_USERNAME and "
                    "CLUSTERTWIN_KAFKA_SASL_PASSWORD."
                )
            return
        except (OSError, ConnectionError, struct.error, ValueError, KeyError) as exc:
            # Timeouts, a closed connection, TLS failures, a non-Kafka peer: not an answer.
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
        finally:
            sock.close()
    raise KafkaUnreachable(
        f"could not check the Kafka credentials at {bootstrap}: {'; '.join(problems)}"
    )
