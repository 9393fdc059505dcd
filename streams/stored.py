"""What the restatement reads back from InfluxDB: stored readings and site windows.

``ReadingStore`` is the interface the stages use (``streams.site_stage``,
``streams.cluster_stage``); ``InfluxStore`` implements it with Flux queries on the worker's
own bucket, so it reads what the sink wrote (the sink writes before a batch's state is
stored, and the stages wait for every earlier commit before they read). Figures come back as
the exact nano-unit integers: the stored readings carry them as integer fields, window
fields are ``nano / 1e9`` doubles, exact below 2**53, turned back by rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from streams import influx_schema as schema
from streams.meter_vectors import NANO
from streams.restate import StoredReading
from streams.sink import InfluxSink
from streams.transfers import key_of_tag
from streams.windows import RESOLUTIONS

#: site_windows: start -> carrier -> site -> figure vector (nano-units, then readings)
SiteWindows = dict[int, dict[str, dict[str, list[int]]]]

log = logging.getLogger(__name__)

# a site window's figures in the order of a figure vector (energy, the scopes, the gases)
_WINDOW_FIELDS = (schema.ENERGY_MWH, *schema.SCOPE_FIELDS)
# ... the gases are absent from points written before they were kept: read as 0
_GAS_FIELDS = schema.GAS_FIELDS
# what a stored reading is read back with (besides its time): its energy and the packed rest;
# a point stored before the packing carries the same integers as fields of their own
_OLD_FIELDS = (*schema.READING_FIGURES[1:], schema.KAFKA_PARTITION, schema.KAFKA_OFFSET)
_READING_FIELDS = (
    schema.READING_ENERGY,
    schema.READING_PACKED,
    *_OLD_FIELDS,
    schema.INTERVAL_START,
)
_NPACKED = len(schema.READING_PACKED_LAYOUT)


def stored_reading(row: Mapping[str, str]) -> StoredReading:
    """A ``meter_reading`` row (fields pivoted to columns, ``t`` in ns) as a StoredReading.

    The one reader of ``schema.READING_PACKED`` (``streams.sink.reading_line`` writes it)."""
    packed = row.get(schema.READING_PACKED)
    energy = int(row.get(schema.READING_ENERGY) or 0)
    if packed:
        rest = [int(x) for x in packed.split()]
        if len(rest) != _NPACKED:
            raise ValueError(
                f"meter_reading {schema.READING_PACKED}={packed!r}: not {_NPACKED} integers"
            )
        *figures, partition, offset, start = rest
    else:  # stored before the packing; a gas of 0 was not written
        figures = [int(row.get(f) or 0) for f in schema.READING_FIGURES[1:]]
        partition = int(row[schema.KAFKA_PARTITION])
        offset = int(row[schema.KAFKA_OFFSET])
        start = int(row.get(schema.INTERVAL_START) or -1)
    return StoredReading(
        row[schema.METER], int(row["t"]) // 1_000_000, (energy, *figures), partition, offset, start
    )


def window_vector(row: Mapping[str, str]) -> list[int]:
    """A window row (fields pivoted to columns) as its figure vector, nano-units then the
    readings; KeyError or ValueError when a figure is missing (a half-written point)."""
    vec = [round(float(row[f]) * NANO) for f in _WINDOW_FIELDS]
    vec.extend(round(float(row.get(f) or 0) * NANO) for f in _GAS_FIELDS)
    vec.append(int(row[schema.READINGS]))
    return vec


WINDOW_VECTOR_FIELDS = (*_WINDOW_FIELDS, *_GAS_FIELDS, schema.READINGS)


class ReadingStore(Protocol):
    """Where the stages read back what was stored (InfluxDB, or a test double)."""

    async def readings(
        self, twin: str, cluster: str, site: str, spans: Sequence[tuple[int, int]]
    ) -> list[StoredReading]: ...

    async def site_windows(
        self, twin: str, cluster: str, res: str, starts: Sequence[int]
    ) -> SiteWindows: ...


class SettledReads:
    """A store whose reads wait until the site stage's write in flight has finished.

    The site stage stores batch N while it prepares batch N+1 (``OverlappedCommits``), so
    the cluster stage, restating a window from InfluxDB, could read it half written: InfluxDB
    keeps each field as its own series, and a query during a write may see some fields of a
    point and not others. Such a point cannot be summed (it was logged as "incomplete stored
    point" and skipped until the site's next update). Waiting for the commit in flight costs
    the overlap only when a stage actually reads back.
    """

    def __init__(self, store: ReadingStore, settled: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._settled = settled

    async def readings(
        self, twin: str, cluster: str, site: str, spans: Sequence[tuple[int, int]]
    ) -> list[StoredReading]:
        await self._settled()
        return await self._store.readings(twin, cluster, site, spans)

    async def site_windows(
        self, twin: str, cluster: str, res: str, starts: Sequence[int]
    ) -> SiteWindows:
        await self._settled()
        return await self._store.site_windows(twin, cluster, res, starts)


def flux_string(value: str) -> str:
    """A Flux string literal: nothing in ``value`` can end it early."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flux_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class InfluxStore:
    """``ReadingStore`` on the worker's InfluxDB bucket (2.x, or 1.8 with Flux)."""

    def __init__(self, sink: InfluxSink) -> None:
        self.sink = sink

    def _range(self, start: int, stop: int) -> str:
        return (
            f"from(bucket: {flux_string(self.sink.bucket)})"
            f" |> range(start: {_flux_time(start)}, stop: {_flux_time(stop)})"
        )

    async def readings(
        self, twin: str, cluster: str, site: str, spans: Sequence[tuple[int, int]]
    ) -> list[StoredReading]:
        out: list[StoredReading] = []
        fields = " or ".join(f'r._field == "{f}"' for f in _READING_FIELDS)
        columns = ", ".join(f'"{f}"' for f in ("t", schema.METER, *_READING_FIELDS))
        for start, stop in spans:
            flux = (
                self._range(start, stop)
                + f" |> filter(fn: (r) => r._measurement == {flux_string(schema.METER_READING)}"
                f" and r.{schema.TWIN} == {flux_string(twin)}"
                f" and r.{schema.CLUSTER} == {flux_string(cluster)}"
                f" and r.{schema.SITE} == {flux_string(site)})"
                f" |> filter(fn: (r) => {fields})"
                ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
                " |> map(fn: (r) => ({r with t: int(v: r._time)}))"
                f" |> group() |> keep(columns: [{columns}])"
            )
            out.extend(stored_reading(row) for row in await self.sink.query(flux))
        return out

    async def site_windows(
        self, twin: str, cluster: str, res: str, starts: Sequence[int]
    ) -> SiteWindows:
        out: SiteWindows = {}
        if not starts:
            return out
        width = RESOLUTIONS[res]
        wanted = set(starts)
        names = WINDOW_VECTOR_FIELDS
        fields = " or ".join(f'r._field == "{f}"' for f in names)
        columns = ", ".join(
            f'"{f}"' for f in ("t", schema.SITE, schema.CARRIER, schema.TRANSFER, *names)
        )
        flux = (
            self._range(min(starts), max(starts) + width)
            + f" |> filter(fn: (r) => r._measurement == {flux_string(schema.SITE_WINDOW)}"
            f" and r.{schema.TWIN} == {flux_string(twin)}"
            f" and r.{schema.CLUSTER} == {flux_string(cluster)}"
            f" and r.{schema.RES} == {flux_string(res)})"
            f" |> filter(fn: (r) => {fields})"
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
            " |> map(fn: (r) => ({r with t: int(v: r._time)}))"
            # one table, one header: the CSV cannot be misread across tables
            f" |> group() |> keep(columns: [{columns}])"
        )
        for row in await self.sink.query(flux):
            start = int(row["t"]) // 1_000_000
            if start not in wanted:
                continue
            try:
                vec = window_vector(row)
            except (KeyError, ValueError):
                # a point missing a figure cannot be summed; the site's next update
                # for the window restates it (and this is worth knowing)
                log.error(
                    "site window %s %s %s: incomplete stored point %r", res, start, cluster, row
                )
                continue
            site = row[schema.SITE]
            # a transfer is held under its key, as the sender's summary sends it; its
            # receiver's point is the same window seen from the other side
            key = key_of_tag(row[schema.CARRIER], row.get(schema.TRANSFER) or "")
            if key is None:
                continue
            out.setdefault(start, {}).setdefault(key, {})[site] = vec
        return out
