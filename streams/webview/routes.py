"""The live view's HTTP routes on the worker's own web server (aiohttp, under Faust).

The page is static (``static/``: HTML, JS, CSS and the pinned chart library) and reads
JSON from ``/view/api/``; ``/view/api/events`` streams the same JSON as server-sent events
whenever it changes, so the page updates without reloading. Figures come from the worker's
state (``figures``), history and alerts from InfluxDB (``queries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import streams.webview.figures as figures
import streams.webview.queries as queries
from streams.eventtime import cluster_clocks
from streams.meter_vectors import MeterVectors
from streams.progress_series import Plan
from streams.windows import SiteState

log = logging.getLogger("streams.webview")

STATIC = Path(__file__).parent / "static"
#: How often the event stream looks for a change; the page is never more than this behind.
PUSH_EVERY_S = 1.0
#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_S = 15.0
#: Alerts and charts come from InfluxDB: shared between clients for this long.
QUERY_TTL_S = 5.0
#: The decoded site states and the cluster figures are shared between the pages open at
#: once for this long, so the worker's cost does not grow with the number of viewers.
STATE_TTL_S = 0.5

Query = Callable[[str], Awaitable[list[dict[str, str]]]]


@dataclass
class ViewSource:
    """What the view reads from the worker: its catalog and plans, its state and InfluxDB."""

    catalog: MeterVectors
    twin: str
    bucket: str
    plans: Mapping[tuple[str, str], Plan]
    site_state: Callable[[str], SiteState | None]
    held: Callable[[str, str], Mapping[int, Any]]
    query: Query
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    async def cached(self, key: str, flux: str, ttl: float = QUERY_TTL_S) -> list[dict[str, str]]:
        """A query's rows, run at most once per ``ttl`` seconds whatever the clients."""
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            rows: list[dict[str, str]] = hit[1]
            return rows
        rows = await self.query(flux)
        self._cache[key] = (time.monotonic(), rows)
        return rows

    def _memo(self, key: str) -> Any:
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < STATE_TTL_S:
            return hit[1]
        return None

    def states(self, cluster: str) -> dict[str, SiteState]:
        out: dict[str, SiteState] | None = self._memo(f"states|{cluster}")
        if out is not None:
            return out
        out = {}
        for site in self.catalog.clusters.get(cluster, []):
            state = self.site_state(site)
            if state is not None:
                out[site] = state
        self._cache[f"states|{cluster}"] = (time.monotonic(), out)
        return out

    def clock(self, states: Mapping[str, SiteState], cluster: str) -> int:
        clocks = cluster_clocks(
            ((cluster, s.wm, s.seen_at) for s in states.values()), int(time.time() * 1000)
        )
        return clocks.get(cluster, -1)

    async def alerts(self, cluster: str) -> list[dict[str, Any]]:
        try:
            rows = await self.cached(
                f"alerts|{cluster}", queries.alerts_flux(self.bucket, self.twin, cluster)
            )
            opened = await self.cached(
                f"opened|{cluster}", queries.opened_flux(self.bucket, self.twin, cluster)
            )
        except Exception as exc:  # alerts are one panel; the figures must still show
            log.warning("open alerts of %s not read: %s", cluster, exc)
            return []
        return queries.parse_alerts(rows, queries.parse_opened(opened))

    async def cluster(self, cluster: str) -> dict[str, Any]:
        summary: dict[str, Any] | None = self._memo(f"cluster|{cluster}")
        if summary is not None:
            return summary
        summary = await self._cluster(cluster)
        self._cache[f"cluster|{cluster}"] = (time.monotonic(), summary)
        return summary

    async def data_since(self, cluster: str, clock: int) -> int | None:
        """Start of the cluster's first stored hour of the clock's year (a minute's cache:
        it moves only when history is loaded)."""
        if clock < 0:
            return None
        start = figures.year_start_ms(figures.year_of_ms(clock))
        flux = queries.first_hour_flux(self.bucket, self.twin, cluster, start, clock + 1)
        try:
            rows = await self.cached(f"since|{cluster}|{start}", flux, ttl=60.0)
        except Exception as exc:  # coverage qualifies a figure; the figure must still show
            log.warning("first stored hour of %s not read: %s", cluster, exc)
            return None
        return queries.parse_first_time(rows)

    async def _cluster(self, cluster: str) -> dict[str, Any]:
        states = self.states(cluster)
        clock = self.clock(states, cluster)
        facts = figures.ClusterFacts(
            cluster=cluster,
            clock_ms=clock,
            sites=self.catalog.clusters.get(cluster, []),
            states=states,
            hours=self.held(cluster, "1h"),
            ytd=self.held(cluster, "ytd"),
            plan=self.plans.get((cluster, "")),
            alerts=await self.alerts(cluster),
            data_since_ms=await self.data_since(cluster, clock),
        )
        return figures.cluster_summary(facts, self.catalog, self.twin)

    def site(self, cluster: str, site: str, page: int) -> dict[str, Any]:
        states = self.states(cluster)
        clock = self.clock(states, cluster)
        held = self.held(cluster, "ytd").get(figures.year_of_ms(clock)) if clock >= 0 else None
        return figures.site_summary(
            cluster, site, states.get(site), self.catalog, clock, page, held=held
        )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _page(request: web.Request) -> int:
    try:
        return max(0, int(request.query.get("page", "0")))
    except ValueError:
        raise web.HTTPBadRequest(reason="page must be a whole number") from None


class Routes:
    """Handlers bound to one ``ViewSource``."""

    def __init__(self, source: ViewSource) -> None:
        self.source = source
        self.stopping = asyncio.Event()

    def _cluster_of(self, request: web.Request) -> str:
        cluster = request.match_info.get("cluster") or request.query.get("cluster", "")
        if cluster not in self.source.catalog.clusters:
            raise web.HTTPNotFound(
                text=orjson.dumps({"error": f"unknown cluster {cluster!r}"}).decode(),
                content_type="application/json",
            )
        return cluster

    def _site_of(self, request: web.Request, cluster: str) -> str | None:
        site = request.match_info.get("site") or request.query.get("site") or None
        if site is not None and not self.source.catalog.has_site(cluster, site):
            raise web.HTTPNotFound(
                text=orjson.dumps({"error": f"unknown site {site!r} of {cluster!r}"}).decode(),
                content_type="application/json",
            )
        return site

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def network(self, request: web.Request) -> web.Response:
        rows = [
            figures.network_row(await self.source.cluster(c)) for c in self.source.catalog.clusters
        ]
        return _json({"twin": self.source.twin, "clusters": rows})

    async def cluster(self, request: web.Request) -> web.Response:
        return _json(await self.source.cluster(self._cluster_of(request)))

    async def site(self, request: web.Request) -> web.Response:
        cluster = self._cluster_of(request)
        site = self._site_of(request, cluster)
        assert site is not None
        return _json(self.source.site(cluster, site, _page(request)))

    async def series(self, request: web.Request) -> web.Response:
        """Hourly emissions over the last ``hours`` (default a week) up to the last complete
        hour of the cluster's clock, at most ``queries.MAX_POINTS`` points, and the pathway
        rate."""
        cluster = self._cluster_of(request)
        site = self._site_of(request, cluster)
        try:
            hours = min(max(int(request.query.get("hours", "168")), 1), 24 * 366)
        except ValueError:
            raise web.HTTPBadRequest(reason="hours must be a whole number") from None
        states = self.source.states(cluster)
        clock = self.source.clock(states, cluster)
        # up to the last hour that is over: the hour under way would show as a drop
        stop = (clock if clock >= 0 else int(time.time() * 1000)) // queries.HOUR_MS
        stop_ms, start_ms = stop * queries.HOUR_MS, (stop - hours) * queries.HOUR_MS
        state = states.get(site) if site is not None else None
        open_from = state.closed.get("1h", -1) if state is not None else None
        flux = queries.series_flux(
            self.source.bucket, self.source.twin, cluster, site, start_ms, stop_ms, open_from
        )
        rows = await self.source.cached(
            f"series|{cluster}|{site}|{start_ms}|{hours}|{open_from}", flux
        )
        changes = await self.source.cached(
            f"series-changes|{cluster}|{site}|{start_ms}|{hours}",
            queries.series_changes_flux(
                self.source.bucket, self.source.twin, cluster, site, start_ms, stop_ms
            ),
        )
        rows = queries.with_changes(rows, changes)  # the current edition
        out = queries.parse_series(rows, queries.bucket_every(stop_ms - start_ms))
        plan = self.source.plans.get((cluster, site or ""))
        out["pathway_tco2e_per_h"] = [
            plan.pathway.at(figures.year_of_ms(int(t * 1000)))
            / figures.year_hours(figures.year_of_ms(int(t * 1000)))
            if plan is not None
            else None
            for t in out["t"]
        ]
        out.update(cluster=cluster, site=site, start_ms=start_ms, stop_ms=stop_ms)
        return _json(out)

    async def explain(self, request: web.Request) -> web.Response:
        """Where a figure comes from: its factors and the quality of the readings in it."""
        cluster = self._cluster_of(request)
        site = self._site_of(request, cluster)
        figure = request.query.get("figure", "ytd")
        if figure not in ("ytd", "now"):
            raise web.HTTPBadRequest(reason="figure must be 'ytd' or 'now'")
        summary = await self.source.cluster(cluster)
        clock = summary["clock_ms"]
        if figure == "now" and summary["now"]["hour_start"] is not None:
            start_ms = summary["now"]["hour_start"]
            stop_ms = start_ms + queries.HOUR_MS
        elif clock >= 0:
            year = figures.year_of_ms(clock)
            start_ms = figures.year_start_ms(year)
            stop_ms = clock + 1
        else:
            return _json({"cluster": cluster, "site": site, "figure": figure, "no_data": True})
        flux = queries.quality_flux(
            self.source.bucket, self.source.twin, cluster, site, start_ms, stop_ms
        )
        rows = await self.source.cached(f"quality|{cluster}|{site}|{start_ms}|{stop_ms}", flux)
        return _json(
            {
                "cluster": cluster,
                "site": site,
                "figure": figure,
                "start_ms": start_ms,
                "stop_ms": stop_ms,
                "readings": figures.quality_shares(queries.parse_quality(rows)),
                "factors": figures.explain_factors(self.source.catalog, cluster, site),
            }
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``cluster`` (and ``site`` when asked) whenever they change."""
        cluster = self._cluster_of(request)
        site = self._site_of(request, cluster)
        page = _page(request)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        sent: dict[str, bytes] = {}
        quiet_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                bodies = {"cluster": orjson.dumps(await self.source.cluster(cluster))}
                if site is not None:
                    bodies["site"] = orjson.dumps(self.source.site(cluster, site, page))
                for name, body in bodies.items():
                    if sent.get(name) != body:
                        await resp.write(b"event: " + name.encode() + b"\ndata: " + body + b"\n\n")
                        sent[name] = body
                        quiet_since = time.monotonic()
                if time.monotonic() - quiet_since > HEARTBEAT_S:
                    await resp.write(b": still here\n\n")
                    quiet_since = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), PUSH_EVERY_S)
        except ConnectionResetError:  # the page went away
            pass
        return resp


def install(web_app: web.Application, source: ViewSource) -> Routes:
    """Add the view's routes to the worker's aiohttp application."""
    routes = Routes(source)
    router = web_app.router
    router.add_get("/view/", routes.index)
    router.add_static("/view/static/", STATIC, append_version=False)
    router.add_get("/view/api/network", routes.network)
    router.add_get("/view/api/clusters/{cluster}", routes.cluster)
    router.add_get("/view/api/clusters/{cluster}/sites/{site}", routes.site)
    router.add_get("/view/api/clusters/{cluster}/series", routes.series)
    router.add_get("/view/api/clusters/{cluster}/explain", routes.explain)
    router.add_get("/view/api/events", routes.events)

    async def _stop(app: web.Application) -> None:
        routes.stopping.set()

    web_app.on_shutdown.append(_stop)
    return routes
