"""HTTP push over TLS and mutual TLS: real HTTPS on loopback, certificates made at run time."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest

from connectors.http_push import HttpPushConfig, HttpPushConnector
from connectors.sdk.base import Sample
from connectors.sdk.conformance import free_port
from connectors.sdk.tls import TlsError
from twin.readings import MeterIndex, now_ms

from .conftest import MINI, PkiFiles

pytestmark = pytest.mark.integration


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(24)
    monkeypatch.setenv("CT_TEST_PUSH_TOKEN", value)
    return value


def config(port: int, tls: dict[str, object]) -> HttpPushConfig:
    return HttpPushConfig.model_validate(
        {
            "connector": "http",
            "name": "it-push-tls",
            "cluster": str(MINI),
            "port": port,
            "token_env": "CT_TEST_PUSH_TOKEN",
            "tls": tls,
        }
    )


@asynccontextmanager
async def serving(cfg: HttpPushConfig, index: MeterIndex) -> AsyncIterator[HttpPushConnector]:
    connector = HttpPushConnector(cfg, index)
    await connector.open()
    try:
        yield connector
    finally:
        await connector.close()


def client_ctx(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def post(url: str, token: str, body: list[dict[str, object]], ctx: object) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=orjson.dumps({"readings": body}),
            headers={"Authorization": f"Bearer {token}"},
            ssl=ctx,  # type: ignore[arg-type]
        ) as r,
    ):
        return r.status


def readings(n: int) -> list[dict[str, object]]:
    t0 = now_ms() - n * 1000
    return [{"meter": "bf-gas", "ts": t0 + i * 1000, "value": float(i)} for i in range(n)]


async def drain(connector: HttpPushConnector, n: int) -> list[Sample]:
    got: list[Sample] = []
    stream = connector.stream()
    while len(got) < n:
        batch = await asyncio.wait_for(anext(stream), 5)
        got += [s for s in batch if isinstance(s, Sample)]
    return got


def test_https_post_is_accepted_and_plain_http_refused(
    pki: PkiFiles, mini_index: MeterIndex, token: str
) -> None:
    cert, key = pki.server()
    port = free_port()
    cfg = config(port, {"cert_file": str(cert), "key_file": str(key)})

    async def run() -> None:
        async with serving(cfg, mini_index) as connector:
            body = readings(20)
            url = f"https://127.0.0.1:{port}/readings"
            assert await post(url, token, body, client_ctx(pki.ca_file)) == 202
            got = await drain(connector, 20)
            assert [(s.ts, s.value) for s in got] == [(r["ts"], r["value"]) for r in body]
            # the same request in the clear reaches no handler: the TLS server drops it
            with pytest.raises(aiohttp.ClientError):
                await post(f"http://127.0.0.1:{port}/readings", token, body, None)
            # a client that trusts another CA refuses the endpoint (no token leaves it)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await post(url, token, body, client_ctx(pki.other_ca_file))
            assert connector._queue.empty()

    asyncio.run(run())


def test_mutual_tls_wants_a_client_certificate_of_the_site_ca(
    pki: PkiFiles, mini_index: MeterIndex, token: str
) -> None:
    cert, key = pki.server()
    site = pki.client("site")
    rogue = pki.client("rogue", ca=pki.other_ca)
    port = free_port()
    tls = {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(pki.ca_file)}
    cfg = config(port, tls)

    async def run() -> None:
        async with serving(cfg, mini_index) as connector:
            url = f"https://127.0.0.1:{port}/readings"
            body = readings(5)
            assert await post(url, token, body, client_ctx(pki.ca_file, site)) == 202
            assert len(await drain(connector, 5)) == 5
            for ctx in (client_ctx(pki.ca_file), client_ctx(pki.ca_file, rogue)):
                with pytest.raises(aiohttp.ClientError):
                    await post(url, token, body, ctx)
            assert connector._queue.empty()  # nothing of the refused requests got in

    asyncio.run(run())


def test_tls_config_errors_name_the_field(
    pki: PkiFiles, mini_index: MeterIndex, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = pki.server()
    other_cert, _ = pki.server("other")
    with pytest.raises(ValueError, match=r"tls\.key_file"):
        config(1, {"cert_file": str(cert)})
    monkeypatch.delenv("CT_TLS_DIR", raising=False)
    with pytest.raises(ValueError, match=r"\$\{CT_TLS_DIR\} is not set"):
        config(1, {"cert_file": "${CT_TLS_DIR}/server.pem", "key_file": str(key)})
    monkeypatch.setenv("CT_TLS_DIR", str(cert.parent))
    cfg = config(1, {"cert_file": "${CT_TLS_DIR}/server.pem", "key_file": str(key)})
    assert cfg.tls is not None and cfg.tls.cert_file == cert
    mismatched = config(1, {"cert_file": str(other_cert), "key_file": str(key)})
    assert HttpPushConnector.check_config(mismatched, mini_index) == []  # files: at open
    with pytest.raises(TlsError, match=r"tls\.cert_file/key_file"):
        asyncio.run(HttpPushConnector(mismatched, mini_index).open())
