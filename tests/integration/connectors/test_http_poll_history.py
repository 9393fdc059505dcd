"""The http_poll connector reads a gateway's past (``clustertwin backfill``) from a real
aiohttp gateway on loopback: ranges in chunks, pages shuffled and overlapping, counters
across a rollover and a reset, retries and refusals, and the real CLI into real Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from connectors.http_poll import HttpPollConfig, HttpPollConnector, HttpRequestError
from connectors.sdk.base import BadSample, Sample, SourceUnavailable
from connectors.sdk.conformance import consume_all, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
STEP = 300_000  # the gateway logs every 5 min
MIN, HOUR = 60_000, 3_600_000
STEPS = 12 * 12  # twelve hours of log
MODULUS = 100_000.0  # AG-01's register wraps here (kWh)
RESET_AT = 100  # AG-01 replaced: its register starts again near zero
CLI = str(Path(sys.executable).parent / "clustertwin")


@dataclass
class Log:
    """What the gateway logged, and the truth the test computes offline from it."""

    counter: list[tuple[int, float]] = field(default_factory=list)  # AG-01 (ts, total)
    increase: dict[int, float] = field(default_factory=dict)  # ts -> true kWh of its step
    values: list[tuple[int, float]] = field(default_factory=list)  # AG-02 (ts, kW)


def make_log(seed: int = 11) -> Log:
    rng = random.Random(seed)
    log = Log()
    total = 97_000.0  # near the wrap: it rolls over a few hours in
    for i in range(STEPS):
        ts = T0 + i * STEP
        if i == RESET_AT:
            total = 7.0  # the new meter's register: this step's consumption is unknown
        elif i:
            inc = float(rng.randint(20, 80))
            total = (total + inc) % MODULUS
            log.increase[ts] = inc
        log.counter.append((ts, total))
        log.values.append((ts, float(rng.randint(100, 900)) / 4))
    return log


def expected_intervals(log: Log, start: int, end: int) -> dict[tuple[int, int], float]:
    """Offline: each step ending in [start, end) with the increase it really had (the
    reset's step is lost, by the metering rule)."""
    return {(ts - STEP, ts): inc for ts, inc in log.increase.items() if start <= ts < end}


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class HistoryGateway:
    """An AcmeGate's history: GET /api/v1/history?from=&to=&page= (ISO 8601 or, for the
    cursor variant, epoch seconds), bearer token. It answers [from, to] inclusive, in
    pages of ``page_size`` that repeat the previous page's last ``overlap`` items, in a
    shuffled order; ``next`` is a relative link (or ``next_page`` a page number)."""

    def __init__(self, token: str, log: Log, page_size: int = 9, overlap: int = 3) -> None:
        self.port, self.token, self.log = free_port(), token, log
        self.page_size, self.overlap = page_size, overlap
        self.fail: list[int] = []  # statuses to answer before serving again
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/api/v1/history") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _channels(self, lo: int, hi: int) -> list[dict[str, Any]]:
        rows = [{"id": "AG-01", "t": ts, "energy": {"kwh": v}} for ts, v in self.log.counter]
        rows += [{"id": "AG-02", "t": ts, "energy": {"kwh": v}} for ts, v in self.log.values]
        rows += [{"id": "AG-99", "t": T0, "energy": {"kwh": 1.0}}]  # a channel nobody maps
        return [r for r in rows if lo <= r["t"] <= hi]

    async def _history(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append(q)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, reason="Unauthorized")
        if self.fail:
            return web.Response(status=self.fail.pop(0))
        epoch = request.path.endswith("/epoch")
        lo, hi = (
            (int(q["since"]) * 1000, int(q["until"]) * 1000)
            if epoch
            else (_iso_ms(q["from"]), _iso_ms(q["to"]))
        )
        rows = self._channels(lo, hi)
        random.Random(f"{lo}-{hi}").shuffle(rows)
        page = int(q.get("page", "0"))
        size = self.page_size
        body: dict[str, Any] = {
            "channels": rows[max(0, page * size - self.overlap) : (page + 1) * size]
        }
        more = (page + 1) * size < len(rows)
        if epoch:
            body["next_page"] = page + 1 if more else None
        else:
            nxt = {**q, "page": str(page + 1)}
            link = "history?" + "&".join(f"{k}={v}" for k, v in nxt.items())
            body["links"] = {"next": link if more else None}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/history", self._history)
        app.router.add_get("/api/v1/history/epoch", self._history)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def history_gateway(token: str, log: Log) -> AsyncIterator[HistoryGateway]:
    gw = HistoryGateway(token, log)
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


def raw_config(gw: HistoryGateway, mode: str = "counter", **history: Any) -> dict[str, Any]:
    """An AcmeGate config as a site writes it; the live url is never asked here."""
    counter = mode == "counter"
    return {
        "connector": "http_poll",
        "name": "it-acmegate-hist",
        "cluster": str(MINI),
        "url": gw.url("/api/v1/counters"),
        "bearer_token_env": "CT_TEST_ACMEGATE_TOKEN",
        "timeout_s": 2,
        "select": {"items": "channels", "id": "id", "time": "t", "value": "energy.kwh"},
        "mode": mode,
        "unit": "kWh" if counter else None,
        "rollover_at": MODULUS if counter else None,
        "max_increase_per_h": 2_000 if counter else None,
        "meters": {"AG-01": "mill-power"} if counter else {"AG-02": "bf-gas"},
        "history": {
            "url": gw.url(),
            "params": {"from": "{from}", "to": "{to}"},
            "range_format": "iso8601",
            "max_span_s": 7_200,
            "next": "links.next",
            "lookback_s": 900,
            "backoff_s": 0.01,
            **history,
        },
    }


async def read_history(cfg: dict[str, Any], index: MeterIndex, start: int, end: int) -> list[Any]:
    conn = HttpPollConnector(HttpPollConfig.model_validate(cfg), index)
    await conn.open()
    try:
        return [item async for batch in conn.history(start, end) for item in batch]
    finally:
        await conn.close()


def intervals(items: list[Any]) -> dict[tuple[int, int], float]:
    got: dict[tuple[int, int], float] = {}
    for s in items:
        if isinstance(s, Sample):
            assert s.start is not None and (s.start, s.ts) not in got, s
            got[(s.start, s.ts)] = s.value
    return got


START, END = T0 + 2 * HOUR + 2 * MIN, T0 + 10 * HOUR  # a start between two log times


def test_value_history_is_the_distinct_values_of_the_range(
    token: str, mini_index: MeterIndex
) -> None:
    log = make_log()

    async def run() -> tuple[list[Any], list[dict[str, str]]]:
        async with history_gateway(token, log) as gw:
            return await read_history(raw_config(gw, "value"), mini_index, START, END), gw.requests

    items, requests = asyncio.run(run())
    got = [(s.meter, s.ts, s.value, s.unit, s.start) for s in items if isinstance(s, Sample)]
    expected = [("bf-gas", ts, v, None, None) for ts, v in log.values if START <= ts < END]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert not [b for b in items if isinstance(b, BadSample)]
    # chunked: every request asked at most max_span_s, and the pages were followed
    spans = {(_iso_ms(q["from"]), _iso_ms(q["to"])) for q in requests}
    assert max(hi - lo for lo, hi in spans) <= 7_200_000 and len(spans) == 4
    assert len(requests) > 4 * 2


def test_counter_history_is_the_true_increases_across_a_rollover_and_a_reset(
    token: str, mini_index: MeterIndex, tmp_path: Path
) -> None:
    log = make_log()
    wraps = [i for i in range(1, STEPS) if log.counter[i][1] < log.counter[i - 1][1]]
    assert len(wraps) == 2 and all(START <= log.counter[i][0] < END for i in wraps)

    async def run() -> list[Any]:
        async with history_gateway(token, log) as gw:
            cfg = {**raw_config(gw), "buffer": {"dir": str(tmp_path / "live")}}
            return await read_history(cfg, mini_index, START, END)

    items = asyncio.run(run())
    assert intervals(items) == expected_intervals(log, START, END)
    assert all(s.unit == "kWh" for s in items if isinstance(s, Sample))
    bad = [b.reason for b in items if isinstance(b, BadSample)]
    assert len(bad) == 1 and bad[0].startswith("counter.reset"), bad
    assert not (tmp_path / "live").exists()  # the live baselines were not touched


@pytest.mark.parametrize("split", [T0 + 5 * HOUR, T0 + 5 * HOUR + 150_000, T0 + 8 * HOUR + 1])
def test_two_adjacent_backfills_publish_what_one_does(
    token: str, mini_index: MeterIndex, split: int
) -> None:
    log = make_log(seed=split)

    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        async with history_gateway(token, log) as gw:
            cfg = raw_config(gw)
            whole = await read_history(cfg, mini_index, START, END)
            first = await read_history(cfg, mini_index, START, split)
            second = await read_history(cfg, mini_index, split, END)
            return whole, first, second

    whole, first, second = asyncio.run(run())
    a, b = intervals(first), intervals(second)
    assert not a.keys() & b.keys()
    assert {**a, **b} == intervals(whole) == expected_intervals(log, START, END)
    assert sum(a.values()) + sum(b.values()) == sum(intervals(whole).values())


def test_cursor_paging_with_epoch_seconds(token: str, mini_index: MeterIndex) -> None:
    log = make_log()
    start, end = T0 + 1_500, T0 + 3 * HOUR + 500  # bounds inside a second: rounded outwards

    async def run() -> list[Any]:
        async with history_gateway(token, log) as gw:
            cfg = raw_config(
                gw,
                url=gw.url("/api/v1/history/epoch"),
                params={"since": "{from}", "until": "{to}"},
                range_format="epoch_s",
                next="next_page",
                cursor_param="page",
            )
            return await read_history(cfg, mini_index, start, end)

    assert intervals(asyncio.run(run())) == expected_intervals(log, start, end)


def test_a_refused_request_fails_at_once_and_an_outage_is_retried_a_bounded_number_of_times(
    token: str, mini_index: MeterIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log()

    async def run() -> tuple[str, int, list[Any], int, str, int]:
        async with history_gateway(token, log) as gw:
            cfg = raw_config(gw, retries=3)
            monkeypatch.setenv("CT_TEST_ACMEGATE_TOKEN", "a-rotated-token")
            with pytest.raises(HttpRequestError) as refused:
                await read_history(cfg, mini_index, START, END)
            asked_401 = len(gw.requests)
            monkeypatch.setenv("CT_TEST_ACMEGATE_TOKEN", token)
            gw.requests.clear()
            gw.fail = [503, 429, 502]  # three outages, then the gateway serves again
            items = await read_history(cfg, mini_index, START, START + HOUR)
            asked_ok = len(gw.requests)
            gw.requests.clear()
            gw.fail = [503] * 10
            with pytest.raises(SourceUnavailable) as outage:
                await read_history(cfg, mini_index, START, END)
            return (
                str(refused.value),
                asked_401,
                items,
                asked_ok,
                str(outage.value),
                len(gw.requests),
            )

    refused, asked_401, items, asked_ok, outage, asked_503 = asyncio.run(run())
    assert "HTTP 401" in refused and "/api/v1/history" in refused and asked_401 == 1
    assert intervals(items) == expected_intervals(log, START, START + HOUR)
    assert asked_ok >= 4  # the three failed tries were asked again
    assert "HTTP 503" in outage and "3 retries" in outage and asked_503 == 4


def _readings(stack: StackHandle, topic: str, index: MeterIndex) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for rec in consume_all(stack.kafka_bootstrap, topic):
        result = validate_envelope(rec.value, index, key=rec.key, headers=list(rec.headers.items()))
        assert not result.rejected, result.rejected[:3]
        out += [(r["meter"], r.get("start"), r["ts"], r["value"]) for r in result.accepted]
    return out


def test_the_backfill_cli_loads_the_gateway_history_into_kafka_and_a_rerun_the_same(
    stack: StackHandle, unique_name: str, token: str, mini_index: MeterIndex, tmp_path: Path
) -> None:
    log = make_log()
    topic = f"{unique_name}-readings"
    env = {**os.environ, **stack.local.settings(), "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}
    span = ["--from", "2026-01-01T02:02:00Z", "--to", "2026-01-01T10:00:00Z"]

    async def cli(path: Path, env: dict[str, str]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            CLI, "backfill", str(path), *span, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        return int(proc.returncode or 0), out.decode() + err.decode()

    async def run() -> list[tuple[int, str, list[tuple[Any, ...]]]]:
        runs = []
        async with history_gateway(token, log) as gw:
            cfg = raw_config(gw)
            cfg["kafka"] = {"topic": topic, "deadletter_topic": f"{unique_name}-dl"}
            cfg["buffer"] = {"dir": str(tmp_path / "live-buffer")}  # the live one's
            path = tmp_path / "acmegate.yaml"
            path.write_text(yaml.safe_dump(cfg))
            for env_ in (env, env, {**env, "CT_TEST_ACMEGATE_TOKEN": "wrong"}):
                code, out = await cli(path, env_)
                runs.append((code, out, _readings(stack, topic, mini_index)))
        return runs

    (code1, out1, after1), (code2, out2, after2), (code3, out3, after3) = asyncio.run(run())
    assert code1 == 0 and code2 == 0, out1[-2000:] + out2[-2000:]
    expected = sorted(
        ("mill-power", lo, hi, inc) for (lo, hi), inc in expected_intervals(log, START, END).items()
    )
    assert sorted(after1) == expected
    # a second run publishes the very same readings again (the worker counts them once)
    assert Counter(after2) == Counter(after1 + after1)
    assert code3 == 1 and "HTTP 401" in out3 and "/api/v1/history" in out3, out3[-2000:]
    assert Counter(after3) == Counter(after2)
    # a buffer.dir in the config is the live connector's: the backfill keeps its own
    assert not (tmp_path / "live-buffer").exists()
    assert (tmp_path / "live-buffer-backfill").is_dir()
