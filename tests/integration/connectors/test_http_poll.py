"""HTTP/JSON polling connector against a real aiohttp gateway on loopback (real Kafka where
the SDK runs it): values, counters across a reset and a restart, outages, bad items."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from connectors.http_poll import HttpPollConfig, HttpPollConnector, HttpRequestError
from connectors.sdk.base import BadSample, ConnectorConfig, Sample, SourceUnavailable
from connectors.sdk.conformance import ConformanceKit, free_port
from connectors.sdk.tls import TlsRefused
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms

from .conftest import MINI, PkiFiles

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


class Gateway:
    """An AcmeGate-style gateway: GET /api/v1/counters, bearer token, one total per channel.

    Implements the kit's CounterSource for channel ``AG-01``. ``ts`` None stamps each answer
    with the gateway's clock; ``body`` replaces the answer; ``status`` answers that instead.
    """

    def __init__(self, port: int, token: str, tls: ssl.SSLContext | None = None) -> None:
        self.port, self.token, self.tls = port, token, tls
        self.totals: dict[str, float] = {"AG-01": 0.0}
        self.ts: int | None = None
        self.status = 200
        self.body: bytes | None = None
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/api/v1/counters"

    async def _counters(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if self.status != 200:
            return web.Response(status=self.status)
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        ts = now_ms() if self.ts is None else self.ts
        channels = [{"id": k, "t": ts, "energy": {"kwh": v}} for k, v in self.totals.items()]
        return web.Response(
            body=orjson.dumps({"gateway": "ag-7", "channels": channels}),
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/counters", self._counters)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(
            self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.tls
        ).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # closes the open connections too

    async def set_total(self, total: float) -> None:
        self.totals["AG-01"] = total


@contextlib.asynccontextmanager
async def gateway(token: str, tls: ssl.SSLContext | None = None) -> AsyncIterator[Gateway]:
    gw = Gateway(free_port(), token, tls)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(24)
    monkeypatch.setenv("CT_TEST_ACMEGATE_TOKEN", value)
    return value


def config(url: str, **over: Any) -> HttpPollConfig:
    return HttpPollConfig.model_validate(
        {
            "connector": "http_poll",
            "name": "it-acmegate",
            "cluster": str(MINI),
            "url": url,
            "bearer_token_env": "CT_TEST_ACMEGATE_TOKEN",
            "timeout_s": 2,
            "poll_interval_s": 0.03,
            "select": {"items": "channels", "id": "id", "time": "t", "value": "energy.kwh"},
            "mode": "counter",
            "unit": "kWh",
            "meters": {"AG-01": "mill-power"},
            "batch": {"max_delay_ms": 50},
            **over,
        }
    )


async def _poll_once(conn: HttpPollConnector, durable: bool = True) -> list[Sample | BadSample]:
    items = list(await conn.poll())
    if durable:
        conn.readings_durable()
    return items


def test_value_mode_maps_items_by_jmespath(token: str, mini_index: MeterIndex) -> None:
    answer = [
        {"ch": "P1", "at": "2026-01-01T01:00:00+01:00", "v": {"kw": 12.5}},
        {"ch": "unmapped", "at": "2026-01-01T00:00:00Z", "v": {"kw": 1}},
        {"ch": "G1", "at": "2026-01-01T00:01:00Z", "v": {"kw": 3}},
    ]

    async def run() -> list[Sample | BadSample]:
        async with gateway(token) as gw:
            gw.body = orjson.dumps({"data": {"rows": answer}})
            cfg = config(
                gw.url,
                mode="value",
                unit=None,
                time_format="iso8601",
                select={"items": "data.rows", "id": "ch", "time": "at", "value": "v.kw"},
                meters={"P1": "mill-power", "G1": "bf-gas"},
            )
            conn = HttpPollConnector(cfg, mini_index)
            await conn.open()
            try:
                return await _poll_once(conn)
            finally:
                await conn.close()

    got = asyncio.run(run())
    assert [(s.meter, s.ts, s.value, s.start) for s in got if isinstance(s, Sample)] == [
        ("mill-power", T0, 12.5, None),
        ("bf-gas", T0 + 60_000, 3.0, None),
    ]
    assert len(got) == 2  # the unmapped channel is ignored, not a dead letter


def test_counter_mode_across_a_reset_and_restarts_counts_each_interval_once(
    token: str, mini_index: MeterIndex, tmp_path: Path
) -> None:
    """Restarts on the same buffer.dir, one of them a crash before the readings were
    durable: the distinct intervals tile the time and sum to the true increase (the
    interval across the reset is refused, visibly, by the SDK's rule)."""
    totals = [100.0, 103.0, 108.0, 108.0, 2.0, 5.0, 9.0, 9.5, 20.0]
    restart_after = {3: True, 6: False}  # after poll i: restart, durable first or a crash
    cfg = config("http://127.0.0.1:1/", buffer={"dir": tmp_path / "buf"})

    async def run() -> list[Sample | BadSample]:
        out: list[Sample | BadSample] = []
        async with gateway(token) as gw:
            c = cfg.model_copy(update={"url": gw.url})
            conn = HttpPollConnector(c, mini_index)
            await conn.open()
            for i, total in enumerate(totals):
                gw.ts = T0 + i * 60_000
                await gw.set_total(total)
                crash = restart_after.get(i) is False
                out += await _poll_once(conn, durable=not crash)
                if i in restart_after:
                    await conn.close()
                    conn = HttpPollConnector(c, mini_index)  # a new process, same state
                    await conn.open()
            await conn.close()
        return out

    got = asyncio.run(run())
    intervals = {(s.start, s.ts): s.value for s in got if isinstance(s, Sample)}
    assert all(isinstance(s, Sample) and s.unit == "kWh" for s in got if isinstance(s, Sample))
    # offline: each step's increase, the reset step refused (and the new baseline kept)
    expected = {
        (T0 + (i - 1) * 60_000, T0 + i * 60_000): totals[i] - totals[i - 1]
        for i in range(1, len(totals))
        if totals[i] >= totals[i - 1]
    }
    assert intervals == expected
    assert sum(intervals.values()) == 3 + 5 + 0 + 3 + 4 + 0.5 + 10.5
    resent = [s for s in got if isinstance(s, Sample)]
    assert len(resent) == len(expected) + 1  # the crash's unconfirmed interval, sent again
    bad = [b.reason for b in got if isinstance(b, BadSample)]
    assert len(bad) == 1 and bad[0].startswith("counter.reset")


def test_503_is_an_outage_and_the_sdk_recovers(
    stack: StackHandle, conformance: ConformanceKit, token: str, mini_index: MeterIndex
) -> None:
    async def run() -> tuple[int, int]:
        async with gateway(token) as gw:
            gw.totals = {"AG-01": 1.0, "AG-02": 2.0}

            async def disrupt() -> None:
                gw.status = 503
                before = gw.requests
                while gw.requests < before + 2:  # the connector saw the 503, retried
                    await asyncio.sleep(0.02)
                gw.status = 200

            cfg = config(gw.url, mode="value", meters={"AG-01": "mill-power", "AG-02": "bf-gas"})

            def make(c: ConnectorConfig) -> HttpPollConnector:
                assert isinstance(c, HttpPollConfig)
                return HttpPollConnector(c, mini_index)

            _cfg, metrics = await conformance.run_connector(
                make, cfg, min_readings=90, disrupt=disrupt, tag="http-poll-503"
            )
            return metrics.source_reconnects, metrics.readings_sent

    reconnects, sent = asyncio.run(run())
    assert reconnects >= 1
    assert sent >= 90


def test_http_errors_outage_or_refusal(token: str, mini_index: MeterIndex) -> None:
    async def run() -> list[str]:
        seen: list[str] = []
        async with gateway(token) as gw:
            conn = HttpPollConnector(config(gw.url), mini_index)
            await conn.open()
            for status in (503, 429, 502):
                gw.status = status
                with pytest.raises(SourceUnavailable) as outage:
                    await conn.poll()
                seen.append(str(outage.value))
            for status in (404, 403):
                gw.status = status
                with pytest.raises(HttpRequestError) as refused:
                    await conn.poll()
                seen.append(str(refused.value))
            gw.status = 200
            await conn.close()
            gw.token = "another"  # the site rotated it; ours is now wrong
            await conn.open()
            with pytest.raises(HttpRequestError) as unauthorized:
                await conn.poll()
            seen.append(str(unauthorized.value))
            await conn.close()
            await gw.stop()
            await conn.open()
            with pytest.raises(SourceUnavailable):  # connection refused
                await conn.poll()
            await conn.close()
        return seen

    seen = asyncio.run(run())
    assert [s.split("HTTP ")[1][:3] for s in seen] == ["503", "429", "502", "404", "403", "401"]
    assert all("/api/v1/counters" in s for s in seen)


def test_a_bad_item_is_a_dead_letter_and_its_neighbours_go_on(
    token: str, mini_index: MeterIndex
) -> None:
    answer = {
        "channels": [
            {"id": "AG-01", "t": T0, "energy": {"kwh": 7.5}},
            {"id": "AG-02", "t": T0, "energy": {}},  # no value
            {"id": "AG-03", "t": "noon", "energy": {"kwh": 1}},  # not epoch ms
            {"id": "AG-04", "t": T0, "energy": {"kwh": "n/a"}},
            {"t": T0, "energy": {"kwh": 1}},  # no id
        ]
    }

    async def run() -> tuple[list[Sample | BadSample], list[Sample | BadSample]]:
        async with gateway(token) as gw:
            meters = {f"AG-0{i}": "mill-power" for i in range(1, 5)}
            conn = HttpPollConnector(config(gw.url, mode="value", meters=meters), mini_index)
            await conn.open()
            gw.body = orjson.dumps(answer)
            items = await _poll_once(conn)
            gw.body = b'{"channels": [{"id": "AG-01", '  # cut off
            broken = await _poll_once(conn)
            await conn.close()
        return items, broken

    items, broken = asyncio.run(run())
    good = [i for i in items if isinstance(i, Sample)]
    assert [(s.meter, s.ts, s.value) for s in good] == [("mill-power", T0, 7.5)]
    rules = [b.reason.split(":")[0] for b in items if isinstance(b, BadSample)]
    assert rules == ["http_poll.field", "http_poll.time", "http_poll.value", "http_poll.field"]
    assert len(broken) == 1 and isinstance(broken[0], BadSample)
    assert broken[0].reason.startswith("http_poll.json")


def test_config_errors_name_the_item() -> None:
    base = config("https://gw.example/api").model_dump(mode="json")
    cases = {
        "select.value": {"select": {"id": "id", "value": "energy.[kwh"}},
        "headers.Authorization": {"headers": {"Authorization": "Bearer abc"}},
        "bearer_token_env and username": {"username": "u", "password_env": "P"},
        "username and password_env": {"bearer_token_env": None, "username": "u"},
        "url": {"url": "ftp://gw/"},
        "tls: needs an https": {"url": "http://gw/", "tls": {}},
    }
    for where, over in cases.items():
        with pytest.raises(ValueError) as err:
            HttpPollConfig.model_validate({**base, **over})
        assert where in str(err.value), (where, str(err.value))
    assert "bearer_token" not in HttpPollConfig.model_fields  # no field for a secret itself


def test_http_poll_passes_the_metering_checks(
    stack: StackHandle, conformance: ConformanceKit, token: str, mini_index: MeterIndex
) -> None:
    async def run() -> None:
        async with gateway(token) as gw:
            try:
                await conformance.check_metering(
                    lambda c: HttpPollConnector(c, mini_index),  # type: ignore[arg-type]
                    config(gw.url),
                    mini_index,
                    gw,
                    meter="mill-power",
                    step=100.0,  # kWh
                )
            finally:
                print(conformance.summary())

    asyncio.run(run())
    assert len(conformance.results) == 10 and all(r.passed for r in conformance.results)


def test_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("http_poll") is HttpPollConnector


def test_https_gateway_is_trusted_only_through_its_ca(
    token: str, mini_index: MeterIndex, pki: PkiFiles
) -> None:
    cert, key = pki.server("acmegate")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def run() -> tuple[list[Sample | BadSample], str]:
        async with gateway(token, server_ctx) as gw:
            gw.ts = T0
            await gw.set_total(42.0)
            conn = HttpPollConnector(
                config(gw.url, mode="value", tls={"ca_file": str(pki.ca_file)}), mini_index
            )
            await conn.open()
            items = await _poll_once(conn)
            await conn.close()
            rogue = HttpPollConnector(
                config(gw.url, mode="value", tls={"ca_file": str(pki.other_ca_file)}),
                mini_index,
            )
            await rogue.open()
            with pytest.raises(TlsRefused) as err:
                await rogue.poll()
            await rogue.close()
        return items, str(err.value)

    items, refused = asyncio.run(run())
    assert [(s.meter, s.ts, s.value) for s in items if isinstance(s, Sample)] == [
        ("mill-power", T0, 42.0)
    ]
    assert "not trusted by tls.ca_file" in refused and "/api/v1/counters" in refused
