"""The Flux the live view runs on InfluxDB, and how its rows become JSON.

Only what the worker's state does not hold is read from InfluxDB: history for the charts
(downsampled so a chart never gets more than ``MAX_POINTS`` points), open alerts (the
alerting worker's ``alert_state``) and the quality of the readings behind a figure.
Measurement, tag and field names come from ``streams.influx_schema``, the schema the worker
writes and the dashboards read, so the live view and the dashboards cannot drift apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from streams import influx_schema as s
from streams.alerting.model import SEVERITY_LEVEL
from streams.editions import changes_flux
from streams.stored import flux_string as _q

MAX_POINTS = 400
HOUR_MS = 3_600_000
ALERT_LOOKBACK = "-30d"


def bucket_every(span_ms: int, max_points: int = MAX_POINTS) -> int:
    """Aggregation window in whole hours so that ``span_ms`` gives at most ``max_points``."""
    hours = max(1, math.ceil(span_ms / HOUR_MS / max_points))
    return hours * HOUR_MS


def series_flux(
    bucket: str,
    twin: str,
    cluster: str,
    site: str | None,
    start_ms: int,
    stop_ms: int,
    open_from_ms: int | None = None,
) -> str:
    """Hourly tCO2e (all carriers) of a cluster or site, summed into buckets of whole hours.

    A site's windows are written once closed (``influx_schema.SITE_OPEN_RESOLUTIONS``): from
    ``open_from_ms`` (its state's first hour not closed) on, its hours are summed from its
    closed 1-min windows."""
    every = bucket_every(stop_ms - start_ms)
    if site is None:
        measurement, extra, res = s.CLUSTER_WINDOW, "", f'r.{s.RES} == "1h"'
    else:
        measurement, extra = s.SITE_WINDOW, f" and r.{s.SITE} == {_q(site)}"
        split = stop_ms if open_from_ms is None else max(start_ms, min(open_from_ms, stop_ms))
        at = f"time(v: {split * 1_000_000})"
        res = f'(r.{s.RES} == "1h" and r._time < {at} or r.{s.RES} == "1m" and r._time >= {at})'
    return f"""
from(bucket: {_q(bucket)})
  |> range(start: time(v: {start_ms * 1_000_000}), stop: time(v: {stop_ms * 1_000_000}))
  |> filter(fn: (r) => r._measurement == {_q(measurement)} and r.{s.TWIN} == {_q(twin)}
       and r.{s.CLUSTER} == {_q(cluster)} and {res}{extra}
       and r._field == {_q(s.TCO2E)})
  |> group()
  |> aggregateWindow(every: {every // 1000}s, fn: sum, createEmpty: false, timeSrc: "_start")
  |> keep(columns: ["_time", "_value"])
"""


def series_changes_flux(
    bucket: str, twin: str, cluster: str, site: str | None, start_ms: int, stop_ms: int
) -> str:
    """The factor revisions' change of ``series_flux``'s hourly tCO2e, in its buckets: the
    history shows the current edition (``streams.editions``) without the windows' query
    having to know about revisions (``with_changes`` adds the two)."""
    every = bucket_every(stop_ms - start_ms)
    head = changes_flux(bucket, twin, cluster, site, start_ms, stop_ms, [s.delta_field(s.TCO2E)])
    return f"""
{head}
  |> group()
  |> aggregateWindow(every: {every // 1000}s, fn: sum, createEmpty: false, timeSrc: "_start")
  |> keep(columns: ["_time", "_value"])
"""


def with_changes(
    rows: Sequence[Mapping[str, str]], changes: Sequence[Mapping[str, str]]
) -> list[dict[str, str]]:
    """``series_flux``'s rows with ``series_changes_flux``'s added to the same buckets."""
    out: dict[str, float] = {}
    order: list[str] = []
    for row in (*rows, *changes):
        t, v = row.get("_time", ""), row.get("_value", "")
        if not t or v == "":
            continue
        if t not in out:
            order.append(t)
            out[t] = 0.0
        out[t] += float(v)
    return [{"_time": t, "_value": repr(out[t])} for t in order]


def parse_series(rows: Sequence[Mapping[str, str]], every_ms: int) -> dict[str, Any]:
    """Rows of ``series_flux`` as two aligned arrays: bucket start (epoch s, as the chart
    wants) and tCO2e per hour over the bucket."""
    points = []
    for row in rows:
        t = _epoch_ms(row.get("_time", ""))
        if t is None or row.get("_value", "") == "":
            continue
        points.append((t, float(row["_value"]) * HOUR_MS / every_ms))
    points.sort()
    return {
        "every_s": every_ms // 1000,
        "t": [t / 1000 for t, _ in points],
        "tco2e_per_h": [v for _, v in points],
    }


def first_hour_flux(bucket: str, twin: str, cluster: str, start_ms: int, stop_ms: int) -> str:
    """The cluster's first stored hour in a period: how much of the year its readings cover."""
    return f"""
from(bucket: {_q(bucket)})
  |> range(start: time(v: {start_ms * 1_000_000}), stop: time(v: {stop_ms * 1_000_000}))
  |> filter(fn: (r) => r._measurement == {_q(s.CLUSTER_WINDOW)} and r.{s.TWIN} == {_q(twin)}
       and r.{s.CLUSTER} == {_q(cluster)} and r.{s.RES} == "1h" and r._field == {_q(s.READINGS)})
  |> group()
  |> first()
  |> keep(columns: ["_time"])
"""


def parse_first_time(rows: Sequence[Mapping[str, str]]) -> int | None:
    times = [t for t in (_epoch_ms(r.get("_time", "")) for r in rows) if t is not None]
    return min(times) if times else None


def alerts_flux(bucket: str, twin: str, cluster: str) -> str:
    """The newest state of every alert series of a cluster, one row per series."""
    return f"""
from(bucket: {_q(bucket)})
  |> range(start: {ALERT_LOOKBACK})
  |> filter(fn: (r) => r._measurement == {_q(s.ALERT_STATE)} and r.{s.TWIN} == {_q(twin)}
       and r.{s.CLUSTER} == {_q(cluster)})
  |> last()
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
"""


def opened_flux(bucket: str, twin: str, cluster: str) -> str:
    """When each alert series last opened: its newest ``open`` event (the newest state's
    time is that of its latest update, not of its opening)."""
    return f"""
from(bucket: {_q(bucket)})
  |> range(start: {ALERT_LOOKBACK})
  |> filter(fn: (r) => r._measurement == {_q(s.ALERT_STATE)} and r.{s.TWIN} == {_q(twin)}
       and r.{s.CLUSTER} == {_q(cluster)} and r._field == {_q(s.EVENT)} and r._value == "open")
  |> last()
  |> group()
"""


def _series(row: Mapping[str, str]) -> tuple[str, str, str]:
    return (row.get(s.KIND, ""), row.get(s.SITE) or "", row.get(s.METER) or "")


def parse_opened(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for row in rows:
        t = _epoch_ms(row.get("_time", ""))
        if t is not None:
            out[_series(row)] = t
    return out


#: The alerting worker's severity levels, by the number it stores.
SEVERITY_NAMES = {str(level): sev.value for sev, level in SEVERITY_LEVEL.items()}


def parse_alerts(
    rows: Sequence[Mapping[str, str]], opened: Mapping[tuple[str, str, str], int] | None = None
) -> list[dict[str, Any]]:
    """The open ones among the newest alert states, most severe and newest first; ``since``
    is when the alert opened (``opened``, by series), else its newest state's time."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if row.get(s.OPEN) not in ("1", "1i", "true"):
            continue
        severity = row.get(s.SEVERITY, "")
        out.append(
            {
                "alert_id": row.get(s.ALERT_ID, ""),
                "kind": row.get(s.KIND, ""),
                "category": row.get(s.CATEGORY, ""),
                "severity": SEVERITY_NAMES.get(severity, severity),
                "site": row.get(s.SITE) or None,
                "meter": row.get(s.METER) or None,
                "value": _float(row.get(s.VALUE)),
                "threshold": _float(row.get(s.THRESHOLD)),
                "since_ms": (opened or {}).get(_series(row)) or _epoch_ms(row.get("_time", "")),
                "updated_ms": _epoch_ms(row.get("_time", "")),
            }
        )
    rank = {name: int(level) for level, name in SEVERITY_NAMES.items()}
    out.sort(key=lambda a: (rank.get(str(a["severity"]), 0), a["since_ms"] or 0), reverse=True)
    return out


def quality_flux(
    bucket: str, twin: str, cluster: str, site: str | None, start_ms: int, stop_ms: int
) -> str:
    """How many stored readings of each quality went into a period's figure."""
    extra = "" if site is None else f" and r.{s.SITE} == {_q(site)}"
    return f"""
from(bucket: {_q(bucket)})
  |> range(start: time(v: {start_ms * 1_000_000}), stop: time(v: {stop_ms * 1_000_000}))
  |> filter(fn: (r) => r._measurement == {_q(s.METER_READING)} and r.{s.TWIN} == {_q(twin)}
       and r.{s.CLUSTER} == {_q(cluster)}{extra} and r._field == {_q(s.QUALITY)})
  |> duplicate(column: "_value", as: "q")
  |> group(columns: ["q"])
  |> count()
"""


def parse_quality(rows: Sequence[Mapping[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.get("q") and row.get("_value", "") != "":
            counts[row["q"]] += int(row["_value"])
    return dict(counts)


def _float(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _epoch_ms(rfc3339: str) -> int | None:
    if not rfc3339:
        return None
    try:
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None
