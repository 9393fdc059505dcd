"""HTTP push: an endpoint for sites that can only push (no broker, no inbound access).

The site POSTs JSON readings with a bearer token; the connector answers once the readings are
parsed and queued (202), with per-reading reasons for what it could not parse. Bounded: a
body larger than ``max_body_bytes`` is refused with 413 before it is read into memory, and
when the pipeline is backed up the endpoint answers 503 so the site retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
from aiohttp import web
from pydantic import Field, model_validator

from connectors.sdk.base import BadSample, Connector, ConnectorConfig, Item, Sample
from connectors.sdk.tls import ServerTls
from twin.readings import MeterIndex

log = logging.getLogger(__name__)


class HttpPushConfig(ConnectorConfig):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=1, le=65535)
    path: str = Field(default="/readings", pattern=r"^/")
    token_env: str | None = Field(default=None, description="env var holding the bearer token")
    token_file: Path | None = Field(default=None, description="file holding the bearer token")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    max_readings_per_request: int = Field(default=10_000, ge=1)
    max_queued_requests: int = Field(default=256, ge=1)
    tls: ServerTls | None = Field(
        default=None, description="serve HTTPS (and, with client_ca_file, mutual TLS)"
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpPushConfig:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("token_env or token_file: exactly one is required (no open endpoint)")
        return self

    def token(self) -> str:
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "")
            where = f"environment variable {self.token_env}"
        else:
            assert self.token_file is not None
            try:
                value = self.token_file.read_text().strip()
                mode = self.token_file.stat().st_mode
            except OSError as exc:
                raise ValueError(f"token_file: cannot read {self.token_file}: {exc}") from exc
            if mode & 0o077:
                log.warning(
                    "token_file %s is readable by other users (mode %o); chmod 600 it",
                    self.token_file,
                    mode & 0o777,
                )
            where = f"file {self.token_file}"
        if len(value) < 16:
            raise ValueError(f"token: {where} is unset or shorter than 16 characters")
        return value


def parse_body(body: bytes, limit: int) -> tuple[list[Item], list[dict[str, Any]]]:
    """Request body -> items, plus the per-reading problems to tell the client."""
    doc = orjson.loads(body)
    readings = doc.get("readings") if isinstance(doc, dict) else doc
    if not isinstance(readings, list):
        raise ValueError('body must be {"readings": [...]} or a JSON list of readings')
    if len(readings) > limit:
        raise ValueError(f"{len(readings)} readings in one request; the limit is {limit}")
    items: list[Item] = []
    problems: list[dict[str, Any]] = []
    for i, r in enumerate(readings):
        try:
            if not isinstance(r, dict):
                raise TypeError("a reading is a JSON object")
            value = r["value"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"value {value!r} is not a number")
            ts = r["ts"]
            if isinstance(ts, bool) or not isinstance(ts, int):
                raise TypeError(f"ts {ts!r} is not an integer (epoch ms)")
            items.append(
                Sample(
                    str(r["meter"]),
                    ts,
                    float(value),
                    r.get("unit"),
                    r.get("carrier"),
                    r.get("quality", "measured"),
                    raw=orjson.dumps(r),
                )
            )
        except (KeyError, TypeError) as exc:
            reason = (
                f"reading {i}: {exc!s}"
                if not isinstance(exc, KeyError)
                else (f"reading {i}: missing field {exc.args[0]!r}")
            )
            problems.append({"index": i, "reason": reason})
            items.append(BadSample(f"http push: {reason}", orjson.dumps(r)))
    return items, problems


class HttpPushConnector(Connector[HttpPushConfig]):
    """HTTP push endpoint with a bearer token, for sites that can only push."""

    config_model: ClassVar[type[ConnectorConfig]] = HttpPushConfig

    def __init__(self, config: HttpPushConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._queue: asyncio.Queue[list[Item]] = asyncio.Queue(config.max_queued_requests)
        self._runner: web.AppRunner | None = None

    @classmethod
    def check_config(cls, config: HttpPushConfig, index: MeterIndex) -> list[str]:
        problems = []
        try:
            config.token()
        except ValueError as exc:
            problems.append(str(exc))
        return problems

    def _authorized(self, request: web.Request) -> bool:
        """Bearer token check in constant time (the scheme is case-insensitive, RFC 7235)."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        # aiohttp keeps undecodable header bytes as surrogates: compare the raw bytes, so a
        # non-UTF-8 header is a wrong token (401), not a server error.
        given = credentials.strip().encode("utf-8", "surrogateescape")
        expected = self._token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given, expected)

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="clustertwin"'},
            )
        if (request.content_length or 0) > self.config.max_body_bytes:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            items, problems = parse_body(body, self.config.max_readings_per_request)
        except ValueError as exc:  # includes orjson.JSONDecodeError
            return web.json_response({"error": f"unreadable body: {exc}"}, status=400)
        try:
            self._queue.put_nowait(items)
        except asyncio.QueueFull:
            return web.json_response(
                {"error": "busy, retry later"}, status=503, headers={"Retry-After": "5"}
            )
        return web.json_response(
            {"queued": len(items) - len(problems), "rejected": problems}, status=202
        )

    async def open(self) -> None:
        self._token = self.config.token()
        # a TlsError here is a configuration fault, not an outage: it says which field
        ssl_context = self.config.tls.context() if self.config.tls is not None else None
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(self.config.path, self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        while True:
            yield await self._queue.get()
