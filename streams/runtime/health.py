"""``/health/live`` and ``/health/ready``: what a service manager or Kubernetes asks a worker.

Liveness is the web server answering: a worker that stops making progress while readings
wait exits by itself (``StallWatchdog``), so a hung event loop is the only case left for
the orchestrator to catch, and restarting a worker that is merely recovering would only
start its recovery again.

Readiness is narrower. Right after start, while partitions are being assigned, the tables
recovered from their changelogs, or the cluster metadata not yet loaded, a view asked for
a key cannot say which worker holds it (Faust's router found no partitions and the view
answered HTTP 500). Until every condition below holds, ``/health/ready`` and the twin's
own views answer 503 with the reason, which also keeps a Kubernetes Service from sending
operators to a worker that cannot answer them yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
import orjson
from aiohttp.web import Response

__all__ = [
    "LIVE_PATH",
    "READY_PATH",
    "Readiness",
    "install_health_views",
    "json_response",
    "not_ready_response",
    "when_ready",
]

# the probes' paths: the Helm chart's probes are tested equal to these
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"

ViewHandler = Callable[..., Awaitable[Any]]


class Readiness:
    """Why a Faust worker cannot answer for its tables yet, or ``None`` once it can."""

    def __init__(self, app: faust.App, tables: Iterable[Any] = ()) -> None:
        self._app = app
        self._tables = list(tables)

    def reason(self) -> str | None:
        app: Any = self._app
        if app.should_stop:
            return "stopping"
        if getattr(app, "rebalancing", False):
            return "rebalancing: partitions are being assigned"
        if getattr(app, "in_recovery", False):
            return "recovering its tables from their changelogs"
        try:
            consumer = app.consumer
            assigned = consumer.assignment()
        except Exception:  # not built, or not started, until the worker starts
            return "starting: the Kafka consumer is not up yet"
        if not assigned:
            return "starting: no partition assigned yet (a worker without one holds nothing)"
        recovery = getattr(getattr(app, "tables", None), "recovery", None)
        if recovery is not None and not recovery.completed.is_set():
            return "recovering its tables from their changelogs"
        for table in self._tables:
            topic = table.changelog_topic.get_topic_name()
            if consumer.key_partition(topic, b"", None) is None:
                return f"starting: the partitions of {topic} are not known yet"
        return None


def json_response(data: Any, status: int = 200) -> Response:
    """The workers' JSON answer (indented: operators read it in a browser)."""
    return Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


def not_ready_response(reason: str) -> Response:
    """503 with the reason (and a retry hint), the one answer of a worker not ready yet."""
    response = json_response({"ready": False, "reason": reason}, status=503)
    response.headers["Retry-After"] = "5"
    return response


def when_ready(readiness: Readiness, handler: ViewHandler) -> ViewHandler:
    """``handler``, answering 503 with the reason while the worker is not ready."""

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        reason = readiness.reason()
        if reason is not None:
            return not_ready_response(reason)
        return await handler(*args, **kwargs)

    guarded.__name__ = getattr(handler, "__name__", "view")
    guarded.__doc__ = handler.__doc__
    return guarded


def install_health_views(app: faust.App, readiness: Readiness) -> None:
    """The two probes, on the worker's own web port."""

    @app.page(LIVE_PATH)
    async def live(web: Any, request: Any) -> Any:
        return json_response({"live": True}, status=200)

    @app.page(READY_PATH)
    async def ready(web: Any, request: Any) -> Any:
        reason = readiness.reason()
        if reason is not None:
            return not_ready_response(reason)
        return json_response({"ready": True}, status=200)
