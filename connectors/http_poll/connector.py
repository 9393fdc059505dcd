"""Poll an HTTP/JSON gateway and map its answer with JMESPath, configured by YAML only.

Most site gateways answer a GET with a JSON document holding one item per channel (an id, a
time, a value). Where in the document those live differs per vendor, so it is data
(JMESPath expressions), not code. Cumulative counters (``mode: counter``) go through the
SDK's metering helpers, whose baselines live in the connector's state store beside the disk
buffer: a restart of the connector neither loses nor doubles the interval it spans. With a
``history`` block (``history.py``) it also reads a time range of the gateway's past, for
``clustertwin backfill``.

What counts as an outage follows connectors/README.md: connection refused or reset, a
timeout, 408, 429 and any 5xx raise ``SourceUnavailable`` (the runner backs off and
reconnects); another 4xx (401, 403, 404) is a wrong request, raised as ``HttpRequestError``
naming the URL and the status. A history request retries an outage ``history.retries``
times, then fails the backfill; a wrong request fails it at once. One bad item of a good
answer is a dead letter naming the rule; its neighbours go on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiohttp
import jmespath
import orjson
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from connectors.http_poll.history import (
    HistorySettings,
    Reading,
    chunks,
    counter_intervals,
    distinct,
    next_url,
    request_url,
    value_samples,
)
from connectors.sdk.backoff import Backoff
from connectors.sdk.base import (
    BadSample,
    ConnectorConfig,
    Item,
    MeterMapping,
    PollingConfig,
    PollingConnector,
    Sample,
    SourceUnavailable,
    unknown_meters,
)
from connectors.sdk.metering import CounterSpec, Interval, Metering, Refusal, StateStore
from connectors.sdk.tls import ClientTls
from twin.readings import MeterIndex, now_ms

log = logging.getLogger(__name__)

#: answers that mean the gateway is not serving now (besides every 5xx): an outage
OUTAGE_STATUS = frozenset({408, 429})
#: the dead-letter rules of this connector (the reason starts with one of them)
RULE_JSON = "http_poll.json"
RULE_ITEMS = "http_poll.items"
RULE_FIELD = "http_poll.field"
RULE_TIME = "http_poll.time"
RULE_VALUE = "http_poll.value"
_RAW_LIMIT = 4096


class HttpRequestError(RuntimeError):
    """The gateway refused the request itself (401, 403, 404 ...): the URL or the
    credential is wrong, not the gateway down; retrying cannot fix it."""


def _compile(expr: str, where: str) -> ParsedResult:
    try:
        return jmespath.compile(expr)
    except JMESPathError as exc:
        raise ValueError(f"{where}: not a JMESPath expression {expr!r}: {exc}") from exc


class Select(BaseModel):
    """Where the items are in the answer, and where each item keeps its id, time, value."""

    model_config = ConfigDict(extra="forbid")

    items: str = Field(default="@", description="JMESPath to the list of items")
    id: str = Field(description="JMESPath, per item, to the gateway's channel id")
    time: str | None = Field(
        default=None, description="JMESPath, per item, to its time; none: the poll's time"
    )
    value: str = Field(description="JMESPath, per item, to the value")

    @model_validator(mode="after")
    def _expressions(self) -> Select:
        for name in ("items", "id", "time", "value"):
            expr = getattr(self, name)
            if expr is not None:
                _compile(expr, f"select.{name}")
        return self


class HttpPollConfig(PollingConfig):
    url: str = Field(pattern=r"^https?://", description="GET this, every poll_interval_s")
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = Field(default=None, description="env var of the token")
    bearer_token_file: Path | None = Field(default=None, description="file of the token")
    username: str | None = Field(default=None, description="HTTP basic auth user")
    password_env: str | None = Field(default=None, description="env var of its password")
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    tls: ClientTls | None = Field(
        default=None,
        description="https: the gateway's CA (default: the system's), a client certificate",
    )
    select: Select
    time_format: Literal["epoch_ms", "epoch_s", "iso8601"] = "epoch_ms"
    mode: Literal["value", "counter"] = Field(
        default="value", description="counter: cumulative totals, publish the increase"
    )
    unit: str | None = Field(default=None, description="the values' unit; default: the meter's")
    scale: float = Field(default=1.0, gt=0, description="published unit per gateway unit")
    rollover_at: float | None = Field(default=None, gt=0, description="counter: wraps here")
    max_increase_per_h: float | None = Field(
        default=None, gt=0, description="counter: most a meter counts in an hour"
    )
    meters: dict[str, str] = Field(min_length=1, description="gateway id -> cluster meter id")
    history: HistorySettings | None = Field(
        default=None, description="how to ask the gateway for a time range (backfill)"
    )

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for key in headers:
            if key.lower() in {"authorization", "proxy-authorization", "cookie"}:
                raise ValueError(
                    f"headers.{key}: secrets never go in the config; use bearer_token_env, "
                    "bearer_token_file or username + password_env"
                )
        return headers

    @model_validator(mode="after")
    def _one_auth(self) -> HttpPollConfig:
        bearer = [f for f in ("bearer_token_env", "bearer_token_file") if getattr(self, f)]
        basic = self.username is not None or self.password_env is not None
        if len(bearer) > 1:
            raise ValueError("bearer_token_env, bearer_token_file: at most one")
        if bearer and basic:
            raise ValueError(f"{bearer[0]} and username/password_env: choose one auth")
        if basic and (self.username is None or self.password_env is None):
            raise ValueError("username and password_env: basic auth needs both")
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls: needs an https:// url")
        if self.history is not None:
            if self.select.time is None:
                raise ValueError("history: needs select.time (each item's own time)")
            if self.history.items is not None:
                _compile(self.history.items, "history.items")
            if self.history.next is not None:
                _compile(self.history.next, "history.next")
        return self

    def auth_header(self) -> str | None:
        """The Authorization header, read from the environment or the file now (at open),
        so lint runs where the site's secrets are not."""
        if self.bearer_token_env is not None:
            return f"Bearer {_env(self.bearer_token_env, 'bearer_token_env')}"
        if self.bearer_token_file is not None:
            try:
                token = self.bearer_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"bearer_token_file: cannot read it: {exc}") from exc
            if not token:
                raise ValueError(f"bearer_token_file: {self.bearer_token_file} is empty")
            return f"Bearer {token}"
        if self.username is not None and self.password_env is not None:
            password = _env(self.password_env, "password_env")
            pair = base64.b64encode(f"{self.username}:{password}".encode()).decode()
            return f"Basic {pair}"
        return None


def _env(var: str, field: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        raise ValueError(f"{field}: environment variable {var} is not set")
    return value


def parse_time(value: Any, fmt: str) -> int:
    """A gateway's time as epoch ms; ValueError names what is wrong."""
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise ValueError(f"ISO 8601 time expected, got {value!r}")
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            raise ValueError(f"time {value!r} has no zone offset (an instant needs one)")
        return int(dt.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{fmt} number expected, got {value!r}")
    ms = value * 1000 if fmt == "epoch_s" else value
    if not math.isfinite(ms):
        raise ValueError(f"time {value!r} is not finite")
    return round(ms)


class HttpPollConnector(PollingConnector[HttpPollConfig]):
    """Any HTTP/JSON gateway, polled; items mapped by JMESPath (values or counters)."""

    config_model: ClassVar[type[ConnectorConfig]] = HttpPollConfig

    def __init__(self, config: HttpPollConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        sel = config.select
        self._items = _compile(sel.items, "select.items")
        self._id = _compile(sel.id, "select.id")
        self._time = None if sel.time is None else _compile(sel.time, "select.time")
        self._value = _compile(sel.value, "select.value")
        hist = config.history
        self._history_items = self._items
        if hist is not None and hist.items is not None:
            self._history_items = _compile(hist.items, "history.items")
        self._next = (
            None if hist is None or hist.next is None else _compile(hist.next, "history.next")
        )
        self._session: aiohttp.ClientSession | None = None
        self._spec = spec = CounterSpec(config.rollover_at, config.max_increase_per_h)
        self.metering: Metering | None = (
            Metering(StateStore.for_connector(config), default=spec)
            if config.mode == "counter"
            else None
        )

    @classmethod
    def check_config(cls, config: HttpPollConfig, index: MeterIndex) -> list[str]:
        return unknown_meters(list(config.meters.values()), index, "meters")

    @classmethod
    def mapped_meters(cls, config: HttpPollConfig, index: MeterIndex) -> list[MeterMapping]:
        return [MeterMapping(m, config.unit, f"meters.{gid}") for gid, m in config.meters.items()]

    async def open(self) -> None:
        headers = dict(self.config.headers)
        auth = self.config.auth_header()  # ValueError naming the field: not an outage
        if auth is not None:
            headers["Authorization"] = auth
        tls = self.config.tls
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            connector=aiohttp.TCPConnector(ssl=tls.context("tls") if tls else True),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def fetch(self, url: str | URL | None = None) -> bytes:
        """One GET of ``url`` (default: the live url); outage or refusal as in the module
        docstring, both naming the URL asked."""
        url = self.config.url if url is None else url
        if self._session is None:
            raise SourceUnavailable(f"{url}: not open")
        try:
            async with self._session.get(url) as resp:
                if resp.status >= 500 or resp.status in OUTAGE_STATUS:
                    raise SourceUnavailable(f"{url}: HTTP {resp.status} (gateway not serving)")
                if resp.status >= 400:
                    reason = f" {resp.reason}" if resp.reason else ""
                    raise HttpRequestError(
                        f"{url}: HTTP {resp.status}{reason}: the request is refused "
                        "(check url and credentials)"
                    )
                return await resp.read()
        except aiohttp.ClientConnectorCertificateError as exc:  # not an outage: trust is wrong
            raise HttpRequestError(
                f"{url}: the gateway's certificate is not trusted: {exc}"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise SourceUnavailable(f"{url}: {exc!r}") from exc

    async def poll(self) -> Sequence[Item]:
        body = await self.fetch()
        polled_at = now_ms()
        out: list[Item] = []
        if self.metering is not None:
            out += [self._counter_sample(i) for i in self.metering.restored()]
        out += self.parse(body, polled_at)
        if self.metering is not None:
            self.metering.checkpoint()  # no await between this and the return
        return out

    def readings_durable(self) -> None:
        if self.metering is not None:
            self.metering.durable()

    def _counter_sample(self, interval: Interval, raw: bytes | None = None) -> Sample:
        return interval.sample(raw=raw, unit=self.config.unit)

    def parse(self, body: bytes, polled_at: int) -> list[Item]:
        """The answer's items as samples, dead letters for the ones that cannot be read."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [BadSample(f"{RULE_JSON}: answer is not JSON: {exc}", body[:_RAW_LIMIT])]
        out: list[Item] = []
        for got in self._readings(doc, body, polled_at, live=True):
            item = got if isinstance(got, BadSample) else self._sample(got)
            if item is not None:
                out.append(item)
        return out

    def _readings(
        self, doc: Any, body: bytes, polled_at: int, *, live: bool
    ) -> list[Reading | BadSample]:
        """The mapped items of an answer: the live poll's mapping, also for the history
        (whose list of items may be elsewhere in its answer: ``history.items``)."""
        hist = self.config.history
        if live or hist is None or hist.items is None:
            expr, where, src = self._items, "select.items", self.config.select.items
        else:
            expr, where, src = self._history_items, "history.items", hist.items
        items = expr.search(doc)
        if not isinstance(items, list):
            reason = f"{RULE_ITEMS}: {where} {src!r} gave no list"
            return [BadSample(reason, body[:_RAW_LIMIT])]
        out: list[Reading | BadSample] = []
        for item in items:
            got = self._item(item, polled_at)
            if got is not None:
                out.append(got)
        return out

    def _sample(self, r: Reading) -> Item | None:
        """A live reading as published: the value, or the counter's interval since the last
        poll (None: a baseline or the same snapshot again)."""
        if self.metering is None:
            return Sample(r.meter, r.ts, r.value, self.config.unit, raw=r.raw)
        result = self.metering.counter(r.meter, r.ts, r.value)
        if isinstance(result, Interval):
            return self._counter_sample(result, r.raw)
        if isinstance(result, Refusal):
            return result.bad_sample(r.raw)
        return None

    def _item(self, item: Any, polled_at: int) -> Reading | BadSample | None:
        raw = orjson.dumps(item)[:_RAW_LIMIT]
        sel = self.config.select
        gid = self._id.search(item)
        if gid is None:
            return BadSample(f"{RULE_FIELD}: select.id {sel.id!r} not in the item", raw)
        meter = self.config.meters.get(str(gid))
        if meter is None:
            return None  # a channel the site does not map: gateways list them all
        value = self._value.search(item)
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "not in the item" if value is None else f"not a number: {value!r}"
            rule = RULE_FIELD if value is None else RULE_VALUE
            return BadSample(f"{rule}: select.value {sel.value!r} {what}", raw, meter)
        ts = polled_at
        if self._time is not None:
            found = self._time.search(item)
            if found is None:
                reason = f"{RULE_FIELD}: select.time {sel.time!r} not in the item"
                return BadSample(reason, raw, meter)
            try:
                ts = parse_time(found, self.config.time_format)
            except ValueError as exc:
                return BadSample(f"{RULE_TIME}: {exc}", raw, meter)
        return Reading(meter, ts, float(value) * self.config.scale, raw)

    # -- history (clustertwin backfill) -------------------------------------------------

    @classmethod
    def history_refusal(cls, config: HttpPollConfig) -> str | None:
        if config.history is None:
            return (
                "its config has no `history` block: add one to ask the gateway for a time "
                "range, see connectors/http_poll/README.md"
            )
        return None

    async def history(self, start_ms: int, end_ms: int) -> AsyncIterator[Sequence[Item]]:
        """The gateway's items of ``[start_ms, end_ms)``, one batch per request range.
        Counters: read from ``history.lookback_s`` before ``start_ms`` for the first
        interval's baseline, in a metering of the backfill's own (the live state is not
        touched); only intervals ending in the range are published."""
        hist = self.config.history
        if hist is None:
            raise ValueError(f"{self.config.source_name()}: {self.history_refusal(self.config)}")
        counter = self.config.mode == "counter"
        metering = Metering(None, default=self._spec) if counter else None
        lookback = round(hist.lookback_s * 1000) if counter else 0
        span = max(1, round(hist.max_span_s * 1000))
        ranges = [*chunks(start_ms - lookback, start_ms, span), *chunks(start_ms, end_ms, span)]
        for lo, hi in ranges:
            got = distinct(await self._history_range(lo, hi), lo, hi)
            readings = [r for r in got if isinstance(r, Reading)]
            batch = (
                value_samples(readings, self.config.unit)
                if metering is None
                else counter_intervals(readings, metering, start_ms, end_ms, self.config.unit)
            )
            if lo >= start_ms:  # the lookback's unreadable items are not the range's
                batch += [b for b in got if isinstance(b, BadSample)]
            yield batch

    async def _history_range(self, lo: int, hi: int) -> list[Reading | BadSample]:
        """Every page of one request range, as mapped."""
        hist = self.config.history
        assert hist is not None
        first = url = request_url(self.config.url, hist, lo, hi)
        asked = {url}
        out: list[Reading | BadSample] = []
        for _ in range(hist.max_pages):
            doc, page = await self._history_page(url)
            out += page
            if self._next is None:
                return out
            nxt = next_url(first, url, self._next.search(doc), hist)
            if nxt is None:
                return out
            if nxt in asked:  # a gateway linking back would page for ever
                log.warning("%s: %s links back to %s; range done", self.config.name, url, nxt)
                return out
            asked.add(nxt)
            url = nxt
        raise HttpRequestError(
            f"{first}: more than history.max_pages={hist.max_pages} pages for one range"
        )

    async def _history_page(self, url: URL) -> tuple[Any, list[Reading | BadSample]]:
        """One page, its outages retried ``history.retries`` times with backoff; an answer
        that is not JSON counts as one (a page cut off), the next-page link needs it."""
        hist = self.config.history
        assert hist is not None
        backoff = Backoff(initial=hist.backoff_s, maximum=max(hist.backoff_s, 30.0))
        for attempt in range(hist.retries + 1):
            try:
                body = await self.fetch(url)
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise SourceUnavailable(f"{url}: answer is not JSON: {exc}") from exc
            except SourceUnavailable as exc:
                if attempt == hist.retries:
                    raise SourceUnavailable(
                        f"{exc} (gave up after {hist.retries} retries)"
                    ) from exc
                log.warning("%s: retrying history page: %s", self.config.source_name(), exc)
                await asyncio.sleep(backoff.next())
                continue
            return doc, self._readings(doc, body, 0, live=False)
        raise AssertionError("unreachable")
