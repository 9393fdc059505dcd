"""The current edition of what the twin stored: the worker's figures plus the factor
revisions' changes.

A factor revision (``clustertwin restate``) leaves every point the worker wrote as it was
(the previous edition, still queryable) and records its change beside them:
``factor_restatement`` for the year to date, ``window_restatement`` for the 1-hour windows.
The worker keeps writing from its own state, which knows nothing of the revision, so the
change is never folded into its points; instead every reader of the current edition adds
it, and this module is where that addition lives for the windows (the live view's history,
``hourly_windows``) and for the progress against targets (``YtdChanges``, which the worker's
progress writer folds in, so what it writes after a restatement does not undo it). The
report reads the year to date's changes itself (``streams.inventory_source``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from streams import influx_schema as schema
from streams.meter_vectors import NANO
from streams.sink import InfluxSink
from streams.stored import WINDOW_VECTOR_FIELDS, flux_string, window_vector
from streams.windows import NFIG

__all__ = [
    "EDITIONS",
    "YtdChanges",
    "changes_flux",
    "hourly_windows",
    "ytd_changes",
]

log = logging.getLogger(__name__)

#: the editions of the stored figures: ``current`` with the revisions' changes,
#: ``previous`` as the worker computed them
EDITIONS = ("current", "previous")

#: (hour start ms, carrier, transfer tag) -> figure vector (nano-units, then readings)
HourWindows = dict[tuple[int, str, str], list[int]]

# a window_restatement point's fields in the order of a figure vector (energy: no change)
_CHANGE_FIELDS = tuple(schema.delta_field(f) for f in schema.DELTA_FIELDS_OF)


def _range(bucket: str, start_ms: int, stop_ms: int) -> str:
    return (
        f"from(bucket: {flux_string(bucket)})"
        f" |> range(start: time(v: {start_ms * 1_000_000}), stop: time(v: {stop_ms * 1_000_000}))"
    )


def changes_flux(
    bucket: str,
    twin: str,
    cluster: str,
    site: str | None,
    start_ms: int,
    stop_ms: int,
    fields: Sequence[str],
) -> str:
    """The ``window_restatement`` points of a cluster's (site None) or a site's hours in
    ``[start_ms, stop_ms)``, of every revision, limited to ``fields``: the one definition of
    which changes belong to a window, whatever a reader then does with them."""
    level = (
        f'r.{schema.LEVEL} == "cluster"'
        if site is None
        else f'r.{schema.LEVEL} == "site" and r.{schema.SITE} == {flux_string(site)}'
    )
    wanted = " or ".join(f"r._field == {flux_string(f)}" for f in fields)
    return (
        _range(bucket, start_ms, stop_ms)
        + f" |> filter(fn: (r) => r._measurement == {flux_string(schema.WINDOW_RESTATEMENT)}"
        f" and r.{schema.TWIN} == {flux_string(twin)}"
        f' and r.{schema.CLUSTER} == {flux_string(cluster)} and r.{schema.RES} == "1h"'
        f" and {level})"
        f" |> filter(fn: (r) => {wanted})"
    )


def _windows_flux(
    bucket: str, twin: str, cluster: str, site: str | None, start_ms: int, stop_ms: int
) -> str:
    measurement = schema.CLUSTER_WINDOW if site is None else schema.SITE_WINDOW
    mine = "" if site is None else f" and r.{schema.SITE} == {flux_string(site)}"
    fields = " or ".join(f'r._field == "{f}"' for f in WINDOW_VECTOR_FIELDS)
    columns = ", ".join(
        f'"{c}"' for c in ("_time", schema.CARRIER, schema.TRANSFER, *WINDOW_VECTOR_FIELDS)
    )
    return (
        _range(bucket, start_ms, stop_ms)
        + f" |> filter(fn: (r) => r._measurement == {flux_string(measurement)}"
        f" and r.{schema.TWIN} == {flux_string(twin)}"
        f' and r.{schema.CLUSTER} == {flux_string(cluster)} and r.{schema.RES} == "1h"{mine})'
        f" |> filter(fn: (r) => {fields})"
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        f" |> group() |> keep(columns: [{columns}])"
    )


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def hourly_windows(
    sink: InfluxSink,
    twin: str,
    cluster: str,
    site: str | None,
    start_ms: int,
    stop_ms: int,
    edition: str = "current",
) -> HourWindows:
    """The 1-hour windows of a cluster (site None) or a site in ``[start_ms, stop_ms)`` as
    exact figure vectors, in ``edition``: ``previous`` as the worker wrote them, ``current``
    with every revision's change added to its hour and carrier."""
    if edition not in EDITIONS:
        raise ValueError(f"edition {edition!r}: must be one of {', '.join(EDITIONS)}")
    out: HourWindows = {}
    flux = _windows_flux(sink.bucket, twin, cluster, site, start_ms, stop_ms)
    for row in await sink.query(flux):
        key = (_ms(row["_time"]), row[schema.CARRIER], row.get(schema.TRANSFER) or "")
        out[key] = window_vector(row)
    if edition == "previous":
        return out
    flux = changes_flux(sink.bucket, twin, cluster, site, start_ms, stop_ms, _CHANGE_FIELDS) + (
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        f' |> group() |> keep(columns: ["_time", "{schema.CARRIER}", '
        + ", ".join(f'"{f}"' for f in _CHANGE_FIELDS)
        + "])"
    )
    for row in await sink.query(flux):
        key = (_ms(row["_time"]), row[schema.CARRIER], "")
        vec = out.setdefault(key, [0] * (NFIG + 1))
        for k, f in enumerate(_CHANGE_FIELDS):
            vec[1 + k] += round(float(row.get(f) or 0.0) * NANO)
    return out


# -- the year to date's changes, for progress ---------------------------------------------

#: (cluster, site or "" for the cluster, year) -> change of (s1, s2 location, s2 market), nano
YtdChangeMap = dict[tuple[str, str, int], tuple[int, int, int]]

_YTD_FIELDS = tuple(
    schema.delta_field(f)
    for f in (schema.TCO2E_S1, schema.TCO2E_S2_LOCATION, schema.TCO2E_S2_MARKET)
)


def ytd_changes_flux(bucket: str, twin: str) -> str:
    """Every ``factor_restatement`` point of ``twin``: their scope 1 and 2 changes."""
    wanted = " or ".join(f'r._field == "{f}"' for f in _YTD_FIELDS)
    keep = ", ".join(
        f'"{c}"'
        for c in ("_time", schema.CLUSTER, schema.SITE, schema.YEAR, schema.FACTOR, *_YTD_FIELDS)
    )
    return (
        f"from(bucket: {flux_string(bucket)}) |> range(start: 0)"
        f" |> filter(fn: (r) => r._measurement == {flux_string(schema.FACTOR_RESTATEMENT)}"
        f" and r.{schema.TWIN} == {flux_string(twin)})"
        f" |> filter(fn: (r) => {wanted})"
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        f" |> group() |> keep(columns: [{keep}])"
    )


def ytd_changes(rows: Sequence[Mapping[str, str]]) -> YtdChangeMap:
    """The rows of ``ytd_changes_flux`` summed per site and year, and per cluster and year
    (site ""): what every revision changed of each year to date."""
    out: dict[tuple[str, str, int], list[int]] = {}
    for row in rows:
        change = [round(float(row.get(f) or 0.0) * NANO) for f in _YTD_FIELDS]
        year = int(row[schema.YEAR])
        for key in ((row[schema.CLUSTER], row[schema.SITE], year), (row[schema.CLUSTER], "", year)):
            acc = out.setdefault(key, [0, 0, 0])
            acc[:] = [a + b for a, b in zip(acc, change, strict=True)]
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


class YtdChanges:
    """The factor restatements' changes of the year to date, as the worker last read them.

    Read again at most every ``every_s`` and within ``timeout_s``: a restatement is rare and
    progress is written every few seconds, and InfluxDB being slow or down must not hold up
    the worker (its query retries until it answers), so a failed read keeps what was known.
    """

    def __init__(
        self, sink: InfluxSink, twin: str, every_s: float = 30.0, timeout_s: float = 5.0
    ) -> None:
        self.sink = sink
        self.twin = twin
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.changes: YtdChangeMap = {}
        self._read_at = -float("inf")

    async def refresh(self) -> YtdChangeMap:
        now = time.monotonic()
        if now - self._read_at < self.every_s:
            return self.changes
        self._read_at = now
        try:
            rows = await asyncio.wait_for(
                self.sink.query(ytd_changes_flux(self.sink.bucket, self.twin)), self.timeout_s
            )
        except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
            log.warning("factor restatements not read (%s): progress keeps the last known", exc)
            return self.changes
        self.changes = ytd_changes(rows)
        return self.changes
