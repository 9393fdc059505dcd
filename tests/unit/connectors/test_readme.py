"""connectors/README.md's snippets run as written: every Python block compiles, the HTTP
polling example polls a real HTTP server and treats outages as the text says, and the
metric names it lists are the ones ConnectorMetrics exports."""

from __future__ import annotations

import asyncio
import re
import types
from pathlib import Path

import pytest
from aiohttp import ClientResponseError, web

from connectors.sdk import ConnectorMetrics, SourceUnavailable
from connectors.sdk.conformance import free_port
from twin.model import load_cluster
from twin.readings import MeterIndex

README = Path(__file__).parents[3] / "connectors" / "README.md"
MINI = Path(__file__).parent / "mini-cluster.yaml"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_every_python_block_compiles() -> None:
    found = blocks("python")
    assert len(found) >= 3
    for i, code in enumerate(found):
        compile(code, f"README python block {i}", "exec")


def test_the_metrics_table_is_what_connector_metrics_exports() -> None:
    text = README.read_text()
    table = text.split("**Metrics**", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert documented == set(ConnectorMetrics().snapshot())


def http_example() -> types.ModuleType:
    (code,) = [b for b in blocks("python") if "class AcmeHttpConnector" in b]
    module = types.ModuleType("acme_http_example")
    exec(compile(code, "README http example", "exec"), module.__dict__)
    return module


def test_http_example_polls_and_tells_outages_from_wrong_requests() -> None:
    mod = http_example()
    index = MeterIndex.from_cluster(load_cluster(MINI))
    answer: dict[str, object] = {"status": 200}

    async def counters(_request: web.Request) -> web.Response:
        status = answer["status"]
        assert isinstance(status, int)
        if status != 200:
            return web.Response(status=status)
        return web.json_response(
            [{"channel": "ch1", "t": 1_780_000_000_000, "v": 1.5}, {"channel": "ch9", "t": 1}]
        )

    async def run() -> None:
        port = free_port()
        app = web.Application()
        app.router.add_get("/counters", counters)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        cfg = mod.AcmeHttpConfig(
            connector="acme-http",
            name="t",
            cluster=str(MINI),
            url=f"http://127.0.0.1:{port}/counters",
            meters={"ch1": "bf-gas"},
            timeout_s=2,
        )
        conn = mod.AcmeHttpConnector(cfg, index)
        await conn.open()
        try:
            first, second = await conn.poll()
            assert (first.meter, first.value) == ("bf-gas", 1.5)
            assert "unreadable item" in second.reason  # an unmapped channel: one bad item
            for status in (503, 429):
                answer["status"] = status
                with pytest.raises(SourceUnavailable, match=f"HTTP {status}"):
                    await conn.poll()
            answer["status"] = 401
            with pytest.raises(ClientResponseError) as wrong:
                await conn.poll()
            assert not isinstance(wrong.value, SourceUnavailable)
            await runner.cleanup()  # the gateway is gone: connection refused
            with pytest.raises(SourceUnavailable):
                await conn.poll()
        finally:
            await conn.close()
            await conn.close()  # safe twice, as after a failed open

    asyncio.run(run())
