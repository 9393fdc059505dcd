"""OPC UA with message security against a real asyncua server that offers only secure
endpoints (no policy None), with certificates made at run time.

The server trusts only the connector's certificate (a trust store of one); the connector
trusts only the server's (pinned) or the CA that issued it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from pydantic import ValidationError

from clustertwin.stack.pki import Authority, Credential, self_signed
from connectors.opcua import OpcUaConfig, OpcUaConnector
from connectors.opcua.security import UntrustedServer
from connectors.sdk.base import Sample, SourceUnavailable
from connectors.sdk.conformance import ConformanceKit, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex

from .conftest import MINI

pytestmark = pytest.mark.integration
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

SERVER_URI = "urn:clustertwin:test:secure-plant"
CLIENT_URI = "urn:clustertwin:test:connector"
SECURE_ONLY = [
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
]


class Pki:
    """The plant's and the connector's certificates, as files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = self_signed("secure-plant", hosts=("127.0.0.1",), uris=(SERVER_URI,))
        self.server_cert, self.server_key = self.server.write(root, "server")
        self.client = self_signed("connector", hosts=("127.0.0.1",), uris=(CLIENT_URI,))
        self.client_cert, self.client_key = self.client.write(root, "client", b"s3cret-pass")
        # the server's trust store: the connector's certificate, DER, in a directory
        (root / "server-trusts").mkdir()
        (root / "server-trusts" / "connector.der").write_bytes(self.client.cert_der())

    def write(self, stem: str, cred: Credential) -> tuple[Path, Path]:
        return cred.write(self.root, stem)


class SecurePlant:
    def __init__(self, pki: Pki, port: int) -> None:
        self.pki = pki
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/secure-plant"
        self.task: asyncio.Task[None] | None = None
        self.n = 0

    async def start(self) -> None:
        server = self.server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(SECURE_ONLY)
        await server.load_certificate(str(self.pki.server_cert), format="pem")
        await server.load_private_key(str(self.pki.server_key), format="pem")
        store = TrustStore([self.pki.root / "server-trusts"], [])
        await store.load()
        server.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
        )
        self.ns = await server.register_namespace("urn:clustertwin:test-secure-plant")
        obj = await server.nodes.objects.add_object(ua.NodeId("Plant", self.ns), "Plant")
        gas = await obj.add_variable(ua.NodeId("Furnace.Gas_MWh", self.ns), "Gas", 0.0)
        await server.start()
        self.task = asyncio.create_task(self._process(gas))

    async def _process(self, gas) -> None:  # type: ignore[no-untyped-def]
        while True:
            self.n += 1  # kept across restarts: values only grow
            value = ua.Variant(float(self.n), ua.VariantType.Double)
            await gas.write_value(ua.DataValue(value, SourceTimestamp=datetime.now(UTC)))
            await asyncio.sleep(0.03)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.server.stop()


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pki:
    monkeypatch.setenv("CT_OPCUA_KEY_PASSWORD", "s3cret-pass")
    return Pki(tmp_path)


@contextlib.asynccontextmanager
async def plant(pki: Pki) -> AsyncIterator[SecurePlant]:
    server = SecurePlant(pki, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(server: SecurePlant, **security: object) -> OpcUaConfig:
    pki = server.pki
    defaults: dict[str, object] = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "private_key_password_env": "CT_OPCUA_KEY_PASSWORD",
        "server_certificates": [str(pki.server_cert)],
    }
    return OpcUaConfig.model_validate(
        {
            "connector": "opcua",
            "name": "it-opcua-secure",
            "cluster": str(MINI),
            "endpoint": server.endpoint,
            "publishing_interval_ms": 50,
            "timeout_s": 3,
            "nodes": [{"node_id": f"ns={server.ns};s=Furnace.Gas_MWh", "meter": "bf-gas"}],
            "security": {**defaults, **security},
        }
    )


async def read_some(cfg: OpcUaConfig, index: MeterIndex, n: int) -> list[Sample]:
    connector = OpcUaConnector(cfg, index)
    await connector.open()
    try:
        got: list[Sample] = []
        stream = connector.stream()
        while len(got) < n:
            batch = await asyncio.wait_for(anext(stream), 10)
            got += [s for s in batch if isinstance(s, Sample)]
        return got
    finally:
        await connector.close()


async def refused(cfg: OpcUaConfig, index: MeterIndex) -> SourceUnavailable:
    connector = OpcUaConnector(cfg, index)
    try:
        with pytest.raises(SourceUnavailable) as err:
            await asyncio.wait_for(connector.open(), 20)
        return err.value
    finally:
        await connector.close()


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
        ("Aes128Sha256RsaOaep", "SignAndEncrypt"),
        ("Aes128Sha256RsaOaep", "Sign"),
    ],
)
def test_secure_connector_reads_values(
    pki: Pki, mini_index: MeterIndex, policy: str, mode: str
) -> None:
    async def run() -> list[Sample]:
        async with plant(pki) as server:
            return await read_some(config(server, policy=policy, mode=mode), mini_index, 10)

    got = asyncio.run(run())
    values = [s.value for s in got]
    assert len(values) >= 10 and all(v >= 1 for v in values)
    assert values == sorted(values)  # the server's counter, in order, nothing invented


def test_secure_link_meets_the_contract_across_a_server_restart(
    stack: StackHandle, conformance: ConformanceKit, pki: Pki, mini_index: MeterIndex
) -> None:
    """Readings reach Kafka over SignAndEncrypt; a reconnect checks the server's certificate
    again and opens a new secure channel."""

    async def run():  # type: ignore[no-untyped-def]
        async with plant(pki) as server:

            async def disrupt() -> None:
                await server.stop()
                await asyncio.sleep(1.0)
                await server.start()

            cfg = config(server).model_copy(update={"watchdog_s": 0.5})
            return await conformance.check_contract(
                lambda c: OpcUaConnector(c, mini_index),
                cfg,
                mini_index,
                min_readings=100,
                disrupt=disrupt,
                timeout=120,
            )

    report = asyncio.run(run())
    assert report.metrics["source_reconnects"] >= 1
    values = [r["value"] for r in report.readings if r["meter"] == "bf-gas"]
    assert len(values) >= 100 and values == sorted(values)


def test_trusting_the_issuing_ca_is_enough(pki: Pki, mini_index: MeterIndex) -> None:
    ca = Authority.create("plant CA")
    issued = ca.issue("secure-plant", hosts=("127.0.0.1",), uris=(SERVER_URI,), usage="both")
    pki.server_cert, pki.server_key = pki.write("server-by-ca", issued)
    ca_file = pki.root / "plant-ca.pem"
    ca_file.write_bytes(ca.credential.cert_pem())

    async def run() -> list[Sample]:
        async with plant(pki) as server:
            cfg = config(server, server_certificates=[str(ca_file)])
            return await read_some(cfg, mini_index, 3)

    assert len(asyncio.run(run())) >= 3


def test_policy_none_is_refused_with_what_the_server_offers(
    pki: Pki, mini_index: MeterIndex
) -> None:
    async def run() -> SourceUnavailable:
        async with plant(pki) as server:
            cfg = config(server)
            plain = cfg.model_copy(update={"security": type(cfg.security)()})
            return await refused(plain, mini_index)

    message = str(asyncio.run(run()))
    assert "refuses unsecured sessions (security.policy None)" in message, message
    assert "Basic256Sha256/SignAndEncrypt" in message and "Aes128Sha256RsaOaep/Sign" in message


def test_an_untrusted_server_certificate_is_refused(pki: Pki, mini_index: MeterIndex) -> None:
    impostor = self_signed("secure-plant", hosts=("127.0.0.1",), uris=(SERVER_URI,))
    impostor_cert, _ = pki.write("impostor", impostor)

    async def run() -> SourceUnavailable:
        async with plant(pki) as server:
            # the connector trusts another certificate of the same name: not the server's
            return await refused(
                config(server, server_certificates=[str(impostor_cert)]), mini_index
            )

    err = asyncio.run(run())
    assert isinstance(err, UntrustedServer)
    assert "is not trusted" in str(err) and "SHA-256" in str(err)
    assert pki.server.cert_der() and impostor.cert_der() != pki.server.cert_der()


def test_a_client_the_server_does_not_trust_is_refused(pki: Pki, mini_index: MeterIndex) -> None:
    stranger = self_signed("connector", hosts=("127.0.0.1",), uris=(CLIENT_URI,))
    cert, key = pki.write("stranger", stranger)

    async def run() -> SourceUnavailable:
        async with plant(pki) as server:
            cfg = config(
                server, certificate=str(cert), private_key=str(key), private_key_password_env=None
            )
            return await refused(cfg, mini_index)

    message = str(asyncio.run(run()))
    assert "BadCertificateUntrusted: the server does not accept our certificate" in message


def test_security_config_errors_name_the_bad_item(tmp_path: Path) -> None:
    base = {
        "connector": "opcua",
        "name": "x",
        "cluster": str(MINI),
        "endpoint": "opc.tcp://127.0.0.1:4840",
        "nodes": [{"node_id": "ns=2;s=A", "meter": "bf-gas"}],
    }
    cert = str(tmp_path / "c.pem")
    cases = [
        ({"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}, "security.certificate: required"),
        (
            {"policy": "Basic256Sha256", "certificate": cert},
            "security.private_key: required for Basic256Sha256/SignAndEncrypt",
        ),
        (
            {"policy": "Aes128Sha256RsaOaep", "certificate": cert, "private_key": cert},
            "security.server_certificates: at least one",
        ),
        ({"policy": "None", "mode": "Sign"}, "security.mode: Sign needs security.policy"),
        ({"policy": "Basic128Rsa15"}, "security.policy"),
    ]
    for security, expected in cases:
        with pytest.raises(ValidationError) as err:
            OpcUaConfig.model_validate({**base, "security": security})
        assert expected in str(err.value), (security, str(err.value))
