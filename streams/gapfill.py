"""The gap filler: a silent meter's missing intervals filled by its declared method.

A meter that declares ``gap_fill`` in its cluster YAML (``twin.gapfill``: the method, the
grid ``every``, the delay ``after``, the reference period) gets, once an interval of its
grid has been missing for ``after`` on its cluster's event-time clock
(``streams.eventtime``), a reading of quality ``gap_filled`` for ``[ts - every, ts)``. The
fill is published on the readings topic, keyed by site, like any connector's reading: it is
validated, priced, windowed, stored and counted by the one path every reading takes, so
windows, year to date and the stored record hold it like a reading, and a real reading of
the same meter and ts that arrives later replaces it exactly (the replace rule,
``streams.windows.replaces_fill``).

When it does not fill (why):

* Only under the idle timer's rule (``streams.runtime.IdleTimer``): the broker has answered
  for the quiet period and the site's partition is caught up on end offsets read now. While
  Kafka is down or readings wait in it, every meter would look silent.
* Not for a meter the worker has never seen a reading of (nothing says when it started),
  and not before the stage's first batch since (re)start.
* Not where the method has too little reference data (MRR: two measured readings; a
  profile: one in the interval's slot of the day), nor, but for a profile, after it.

Idempotent: the grid ends, and the values (a function of the stored readings of the
reference period), are the same on every pass and after a restart; a fill sent twice is a
duplicate (the same meter and ts), and a fill never replaces a counted reading. After a
pass, the site's partition is not caught up until the fills have been read back, so the
next pass does not send them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml

from streams import influx_schema as schema
from streams.eventtime import cluster_clocks
from streams.meter_vectors import MeterVectors
from streams.sink import InfluxSink
from streams.stored import _flux_time, flux_string
from streams.windows import SiteState
from twin.contract import SCHEMA_HEADER, SCHEMA_V2
from twin.gapfill import FillMethod, NoFill, RefReading, fill_ends, fill_values

log = logging.getLogger("streams.gapfill")

#: the ``source`` of a fill's envelope (what a dead letter or a trace names)
SOURCE = "clustertwin-gapfill"


@dataclass(frozen=True)
class FillDecl:
    """A meter's declared gap filling, with what its fill readings say."""

    cluster: str
    site: str
    meter: str
    carrier: str
    unit: str
    method: FillMethod


class ReferenceStore(Protocol):
    async def meter_readings(
        self, twin: str, cluster: str, site: str, meter: str, start: int, stop: int
    ) -> list[RefReading]:
        """The meter's stored readings with ``start <= ts < stop``."""


class InfluxReference:
    """``ReferenceStore`` on the stored ``meter_reading`` points (value and quality)."""

    def __init__(self, sink: InfluxSink) -> None:
        self.sink = sink

    async def meter_readings(
        self, twin: str, cluster: str, site: str, meter: str, start: int, stop: int
    ) -> list[RefReading]:
        flux = (
            f"from(bucket: {flux_string(self.sink.bucket)})"
            f" |> range(start: {_flux_time(start)}, stop: {_flux_time(stop)})"
            f" |> filter(fn: (r) => r._measurement == {flux_string(schema.METER_READING)}"
            f" and r.{schema.TWIN} == {flux_string(twin)}"
            f" and r.{schema.CLUSTER} == {flux_string(cluster)}"
            f" and r.{schema.SITE} == {flux_string(site)}"
            f" and r.{schema.METER} == {flux_string(meter)})"
            f' |> filter(fn: (r) => r._field == "{schema.VALUE}" or r._field == "{schema.QUALITY}")'
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
            " |> map(fn: (r) => ({r with t: int(v: r._time)}))"
            f' |> group() |> keep(columns: ["t", "{schema.VALUE}", "{schema.QUALITY}"])'
        )
        return [
            RefReading(
                int(row["t"]) // 1_000_000, float(row[schema.VALUE]), str(row[schema.QUALITY])
            )
            for row in await self.sink.query(flux)
        ]


def declarations_from_twin(names: Sequence[str]) -> dict[str, list[FillDecl]]:
    """Per site, the gap-fill declarations of the twin's cluster files ``names``: each
    meter's own, or its site's or cluster's default (``Cluster.gap_fill_of``)."""
    from twin.model import load_cluster

    out: dict[str, list[FillDecl]] = {}
    for name in names:
        cluster = load_cluster(name)
        for site, _asset, m in cluster.meters():
            method = cluster.gap_fill_of(site, m)
            if method is not None:
                out.setdefault(site.id, []).append(
                    FillDecl(cluster.id, site.id, m.id, m.carrier.value, m.unit, method)
                )
    return out


class GapFillFileError(ValueError):
    """A gap-fill file that cannot be used, naming the meter and the rule."""


def declarations_from_file(path: Path, catalog: MeterVectors) -> dict[str, list[FillDecl]]:
    """Per site, the declarations of a gap-fill file (``meters: {meter id: gap_fill}``) for
    the meters of a compiled catalog; a fill reading is in the meter's first unit."""
    from pydantic import TypeAdapter, ValidationError

    from twin.gapfill import GapFill

    raw = yaml.safe_load(path.read_text()) or {}
    meters = raw.get("meters") if isinstance(raw, dict) else None
    if not isinstance(meters, dict):
        raise GapFillFileError(f"{path}: expected a mapping 'meters: {{meter id: gap_fill}}'")
    adapter: TypeAdapter[FillMethod | NoFill] = TypeAdapter(GapFill)
    out: dict[str, list[FillDecl]] = {}
    problems = []
    for meter, body in meters.items():
        i = catalog.index.get(str(meter))
        if i is None:
            problems.append(f"meter {meter!r}: not in the catalog")
            continue
        try:
            method = adapter.validate_python(body)
        except ValidationError as e:
            problems += [
                f"meter {meter!r}: {'.'.join(map(str, err['loc']))}: {err['msg']}"
                for err in e.errors()
            ]
            continue
        if isinstance(method, NoFill):
            continue
        spec = catalog.specs[i]
        decl = FillDecl(
            spec.cluster, spec.site, spec.meter, spec.carrier, next(iter(spec.units)), method
        )
        out.setdefault(spec.site, []).append(decl)
    if problems:
        raise GapFillFileError(f"{path}: " + "; ".join(problems))
    return out


Send = Callable[[str, bytes | None, bytes, list[Any]], Awaitable[None]]


class GapFiller:
    """One pass: every declared meter of the sites on caught-up partitions, filled up to its
    cluster's clock less its delay. ``states`` yields the site states this worker holds,
    ``clock_inputs`` is the stage's (cluster, watermark, record time) by site."""

    def __init__(
        self,
        decls: dict[str, list[FillDecl]],
        store: ReferenceStore,
        send: Send,
        topic: str,
        twin: str,
    ) -> None:
        self.decls = decls
        self.store = store
        self.send = send
        self.topic = topic
        self.twin = twin
        self.sent = 0  # fill readings sent since start

    async def run(
        self,
        states: Callable[[str], SiteState | None],
        clock_inputs: Mapping[str, tuple[str, int, int]],
        caught_up: Callable[[int], bool],
        now_ms: int | None = None,
    ) -> int:
        """Send the fills due now; returns how many readings were sent."""
        cap_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        held = {site: states(site) for site in self.decls}
        inputs = dict(clock_inputs)
        for st in held.values():  # after a restart, the clock of a silent cluster too
            if st is not None:
                inputs.setdefault(st.site, (st.cluster, st.wm, st.seen_at))
        clocks = cluster_clocks(inputs.values(), cap_ms)
        sent = 0
        for site, decls in self.decls.items():
            state = held[site]
            if state is None or not caught_up(state.partition):
                continue
            clock = clocks.get(state.cluster)
            if clock is None:
                continue
            readings: list[dict[str, Any]] = []
            for decl in decls:
                readings += await self._fills(state, decl, clock)
            if readings:
                await self._publish(state, readings, cap_ms)
                sent += len(readings)
        self.sent += sent
        return sent

    async def _fills(self, state: SiteState, decl: FillDecl, clock: int) -> list[dict[str, Any]]:
        last = state.last.get(decl.meter)
        if last is None:
            return []
        ends = fill_ends(int(last[0]), clock, decl.method)
        if not ends:
            return []
        every = decl.method.every_ms
        reference = await self.store.meter_readings(
            self.twin,
            state.cluster,
            state.site,
            decl.meter,
            ends[0] - every - decl.method.reference_ms,
            ends[-1] - every + 1,
        )
        out = []
        for end, value in zip(ends, fill_values(decl.method, ends, reference), strict=True):
            if value is None:
                if decl.method.STOP_AT_UNFILLED:
                    break  # a later interval has no more reference than this one
                continue  # left missing (a profile's slot without reference)
            out.append(
                {
                    "meter": decl.meter,
                    "ts": end,
                    "start": end - every,
                    "value": value,
                    "unit": decl.unit,
                    "carrier": decl.carrier,
                    "quality": "gap_filled",
                }
            )
        return out

    async def _publish(self, state: SiteState, readings: list[dict[str, Any]], now: int) -> None:
        body = {
            "schema": SCHEMA_V2,
            "cluster": state.cluster,
            "site": state.site,
            "source": SOURCE,
            "sent_at": now,
            "readings": readings,
        }
        headers = [(SCHEMA_HEADER, SCHEMA_V2.encode())]
        await self.send(self.topic, state.site.encode(), orjson.dumps(body), headers)
        log.info("gap fill: %d reading(s) of site %s", len(readings), state.site)
