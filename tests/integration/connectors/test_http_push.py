"""HTTP push connector: real HTTP over loopback, real Kafka behind it."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import orjson
import pytest

from connectors.http_push import HttpPushConfig, HttpPushConnector
from connectors.sdk.conformance import ConformanceKit, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms

from .conftest import MINI

pytestmark = pytest.mark.integration


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(24)
    monkeypatch.setenv("CT_TEST_PUSH_TOKEN", value)
    return value


def config(port: int, **over: object) -> HttpPushConfig:
    return HttpPushConfig.model_validate(
        {
            "connector": "http",
            "name": "it-push",
            "cluster": str(MINI),
            "port": port,
            "token_env": "CT_TEST_PUSH_TOKEN",
            "max_body_bytes": 64 * 1024,
            "batch": {"max_delay_ms": 100},
            **over,
        }
    )


async def push_all(url: str, token: str, n: int, per_request: int) -> list[int]:
    """A site pushing ``n`` readings; retries (as a site would) while the endpoint is down."""
    t0 = now_ms() - n * 1000
    statuses = []
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)
        for start in range(0, n, per_request):
            body = [
                {"meter": "bf-gas", "ts": t0 + i * 1000, "value": float(i)}
                for i in range(start, min(n, start + per_request))
            ]
            if start == 0:
                body.append({"meter": "bf-gas", "ts": "yesterday", "value": 1.0})
            while True:
                try:
                    async with session.post(
                        url,
                        data=orjson.dumps({"readings": body}),
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        statuses.append(r.status)
                        if r.status == 202:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.02)
    return statuses


def test_http_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("http") is HttpPushConnector


def test_http_contract_and_reopen(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, token: str
) -> None:
    port = free_port()
    cfg = config(port)

    async def run():  # type: ignore[no-untyped-def]
        pusher = asyncio.create_task(push_all(f"http://127.0.0.1:{port}/readings", token, 1000, 50))
        report = await conformance.check_contract(
            lambda c: HttpPushConnector(c, mini_index), cfg, mini_index, min_readings=1001
        )
        return report, await pusher

    report, _statuses = asyncio.run(run())
    assert sorted(r["value"] for r in report.readings) == [float(i) for i in range(1000)]
    assert len(report.deadletters) == 1
    assert b"yesterday" in report.deadletters[0].value


def test_http_refuses_bad_token_big_body_and_junk(
    stack: StackHandle, mini_index: MeterIndex, token: str
) -> None:
    port = free_port()
    conn = HttpPushConnector(config(port), mini_index)
    url = f"http://127.0.0.1:{port}/readings"

    async def run() -> dict[str, tuple[int, dict[str, object]]]:
        await conn.open()
        out = {}
        try:
            async with aiohttp.ClientSession() as s:
                good = {"Authorization": f"Bearer {token}"}
                cases = {
                    "no-token": (b"[]", {}),
                    "wrong-token": (b"[]", {"Authorization": "Bearer " + "x" * 32}),
                    "too-big": (b"[" + b"1," * 40_000 + b"1]", good),
                    "junk": (b"{nope", good),
                    "mixed": (
                        orjson.dumps(
                            [
                                {"meter": "bf-gas", "ts": 1, "value": 2},
                                {"meter": "bf-gas", "value": 2},
                            ]
                        ),
                        good,
                    ),
                }
                for name, (body, headers) in cases.items():
                    async with s.post(url, data=body, headers=headers) as r:
                        out[name] = (r.status, await r.json())
        finally:
            await conn.close()
        return out

    got = asyncio.run(run())
    assert got["no-token"][0] == 401 and got["wrong-token"][0] == 401
    assert got["too-big"][0] == 413
    assert got["junk"][0] == 400 and "unreadable body" in str(got["junk"][1]["error"])
    status, body = got["mixed"]
    assert status == 202 and body["queued"] == 1
    assert body["rejected"] == [{"index": 1, "reason": "reading 1: missing field 'ts'"}]


def test_http_config_demands_a_token_source(
    mini_index: MeterIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="exactly one is required"):
        HttpPushConfig(connector="http", name="x", cluster="c")
    monkeypatch.delenv("CT_UNSET_TOKEN", raising=False)
    cfg = HttpPushConfig(connector="http", name="x", cluster="c", token_env="CT_UNSET_TOKEN")
    assert HttpPushConnector.check_config(cfg, mini_index) == [
        "token: environment variable CT_UNSET_TOKEN is unset or shorter than 16 characters"
    ]


def test_http_buffers_while_kafka_is_unreachable(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, token: str
) -> None:
    port = free_port()

    async def run():  # type: ignore[no-untyped-def]
        pusher = asyncio.create_task(push_all(f"http://127.0.0.1:{port}/readings", token, 300, 30))
        report = await conformance.check_buffering(
            lambda c: HttpPushConnector(c, mini_index),
            config(port),
            mini_index,
            min_readings=301,
        )
        await pusher
        return report

    report = asyncio.run(run())
    assert [r["value"] for r in report.readings] == [float(i) for i in range(300)]
