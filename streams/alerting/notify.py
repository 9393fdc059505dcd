"""Webhook notifications (Slack- and Teams-compatible JSON) with retries and backoff.

Notifications run beside the stream, not in it: a slow or broken chat service must never hold
back the twin, so ``WebhookNotifier.submit`` only queues, and a background task delivers in
order, retrying with exponential backoff. The queue is bounded: when it is full the oldest
``update`` is dropped first (opens and resolves matter more). A replayed stream re-submits the
same events; ``(id, event, at)`` already delivered by this process is not posted twice.

Payload: ``text`` (what Slack and Teams incoming webhooks both render), Slack ``blocks`` for
a richer card, and the full ``alert`` record for machine consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from streams.alerting.model import Alert

log = logging.getLogger(__name__)

_ICON = {"open": ":rotating_light:", "update": ":hourglass:", "resolve": ":white_check_mark:"}


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body posted for one alert event."""
    verb = {"open": "OPEN", "update": "STILL OPEN", "resolve": "RESOLVED"}.get(
        alert.event, alert.event.upper()
    )
    title = (
        f"{_ICON.get(alert.event, '')} [{alert.severity.value.upper()}] {verb}: "
        f"{alert.kind.value} at {alert.scope.label}"
    ).strip()
    text = f"{title}\n{alert.explanation}"
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.explanation}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"id `{alert.id}` · {alert.category.value} alert"}
                ],
            },
        ],
        "alert": alert.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


@dataclass
class NotifierStats:
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str = ""


class WebhookNotifier:
    """Posts alert events to a webhook URL from a background task."""

    def __init__(
        self,
        url: str,
        *,
        events: frozenset[str] = frozenset({"open", "resolve"}),
        max_queue: int = 1000,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.events = events
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.stats = NotifierStats()
        self._queue: deque[Alert] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def submit(self, alert: Alert) -> None:
        if alert.event not in self.events:
            return
        key = alert.dedupe_key
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        if len(self._queue) >= self.max_queue:
            victim = next((a for a in self._queue if a.event == "update"), self._queue[0])
            self._queue.remove(victim)
            self.stats.dropped += 1
            log.warning("webhook queue full: dropped %s %s", victim.event, victim.id)
        self._queue.append(alert)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait until everything queued was delivered or given up on."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            alert = self._queue[0]
            await self._deliver(alert)
            if self._queue and self._queue[0] is alert:
                self._queue.popleft()

    async def _deliver(self, alert: Alert) -> bool:
        body = webhook_payload(alert)
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            self.stats.attempts += 1
            try:
                if self._session is None or self._session.closed:
                    self._session = aiohttp.ClientSession(timeout=self.timeout)
                async with self._session.post(self.url, json=body) as resp:
                    if 200 <= resp.status < 300:
                        self.stats.delivered += 1
                        return True
                    error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        # a payload the service refuses will be refused again
                        self.stats.failed += 1
                        self.stats.last_error = error
                        log.error("webhook refused alert %s: %s", alert.id, error)
                        return False
                    retry_after = resp.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        delay = max(delay, float(retry_after))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.stats.last_error = error
            if attempt == self.max_attempts:
                break
            self.stats.retries += 1
            log.warning("webhook attempt %d failed (%s); retrying in %.1fs", attempt, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        self.stats.failed += 1
        log.error("webhook gave up on alert %s after %d attempts", alert.id, self.max_attempts)
        return False
