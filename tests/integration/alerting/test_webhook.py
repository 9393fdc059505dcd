"""The webhook notifier against a real HTTP server on a free local port (aiohttp)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from streams.alerting.model import Alert, Kind, Scope, Severity, alert_id
from streams.alerting.notify import WebhookNotifier


def _alert(event: str, at: int, kind: Kind = Kind.METER_SILENT) -> Alert:
    scope = Scope(cluster="dunkirk", site="s1", meter="m1")
    return Alert(
        id=alert_id("t", kind.value, scope, 0),
        event=event,
        kind=kind,
        category=kind.category,
        severity=Severity.WARNING,
        scope=scope,
        opened=0,
        at=at,
        explanation=f"meter m1 {event}",
    )


class Hook:
    """A webhook endpoint that fails the first ``fail`` requests with ``status``."""

    def __init__(self, fail: int = 0, status: int = 503) -> None:
        self.fail, self.status = fail, status
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if len(self.requests) <= self.fail:
            return web.Response(status=self.status, text="try later")
        self.accepted.append(body)
        return web.Response(text="ok")


async def _serve(hook: Hook) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: the OS picks a free one
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook"


@pytest.mark.integration
def test_retries_with_backoff_then_delivers_in_order() -> None:
    async def go() -> tuple[Hook, WebhookNotifier]:
        hook = Hook(fail=3, status=503)
        runner, url = await _serve(hook)
        n = WebhookNotifier(url, backoff_s=0.05, max_backoff_s=0.2)
        try:
            n.submit(_alert("open", 1))
            n.submit(_alert("update", 2))  # updates are not notified by default
            n.submit(_alert("resolve", 3))
            n.submit(_alert("open", 1))  # a replayed duplicate
            await n.drain(timeout_s=20)
        finally:
            await n.close()
            await runner.cleanup()
        return hook, n

    hook, n = asyncio.run(go())
    assert [b["alert"]["event"] for b in hook.accepted] == ["open", "resolve"]
    assert len(hook.requests) == 5  # 3 refused attempts, then both delivered
    assert n.stats.retries == 3 and n.stats.delivered == 2 and n.stats.failed == 0
    assert hook.accepted[0]["text"].startswith(":rotating_light: [WARNING] OPEN: meter_silent")


@pytest.mark.integration
def test_client_errors_are_not_retried_and_outages_are_bounded() -> None:
    async def go() -> tuple[Hook, WebhookNotifier, WebhookNotifier]:
        hook = Hook(fail=1, status=400)
        runner, url = await _serve(hook)
        n = WebhookNotifier(url, backoff_s=0.01)
        # and a server that is not there at all: bounded attempts, then give up
        dead = WebhookNotifier("http://127.0.0.1:9/hook", max_attempts=3, backoff_s=0.01)
        try:
            n.submit(_alert("open", 1))
            n.submit(_alert("resolve", 2))
            dead.submit(_alert("open", 1))
            await n.drain(timeout_s=10)
            await dead.drain(timeout_s=10)
        finally:
            await n.close()
            await dead.close()
            await runner.cleanup()
        return hook, n, dead

    hook, n, dead = asyncio.run(go())
    assert n.stats.failed == 1 and n.stats.retries == 0
    assert [b["alert"]["event"] for b in hook.accepted] == ["resolve"]
    assert dead.stats.failed == 1 and dead.stats.attempts == 3 and dead.stats.retries == 2
