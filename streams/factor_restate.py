"""A factor revision restated over the stored readings (``clustertwin restate``).

The rule is ``twin.revision``'s; this reads the stored readings (``meter_reading``: the
energy and figures of every accepted reading) of the affected sites in the revision's
period and writes one ``factor_restatement`` point per site, carrier and year with the old
and new figures and their change, and the change of each hourly window
(``streams.factor_windows``). The stored readings, windows and ``twin_ytd`` stay as the
worker wrote them: they are the previous edition. The restated year to date is
``twin_ytd`` plus the changes (``streams.inventory_source``), so the live worker, which
keeps writing its year to date from its own state, never overwrites the restatement.

Idempotent: the change is recomputed from the stored readings, which a run does not touch,
and written to the same point (tags, and the period's start as its time); a second run
writes the same figures again.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from streams import influx_schema as schema
from streams.factor_windows import hourly_changes, window_change_lines
from streams.meter_vectors import NANO
from streams.sink import InfluxSink, fields_line
from streams.stored import InfluxStore
from twin.factors import FactorLibrary
from twin.model import Cluster
from twin.revision import (
    NFIG,
    Revision,
    SiteRestatement,
    affected_meters,
    by_year,
    restated_readings,
)

__all__ = ["day_ms", "restate_factor", "restatement_lines"]


def day_ms(d: date) -> int:
    """The UTC midnight starting ``d``, epoch ms."""
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def restatement_lines(
    twin: str, cluster: str, revision: Revision, rows: list[SiteRestatement]
) -> list[str]:
    """The ``factor_restatement`` points of a revision's restatement (its year to date)."""
    start = day_ms(revision.start)
    stop = day_ms(revision.stop) if revision.stop else -1
    lines = []
    for r in rows:
        tags = {
            schema.TWIN: twin,
            schema.CLUSTER: cluster,
            schema.SITE: r.site,
            schema.CARRIER: r.carrier,
            schema.YEAR: str(r.year),
            schema.FACTOR: revision.factor_id,
            schema.OLD_VERSION: revision.old.version,
            schema.NEW_VERSION: revision.new.version,
        }
        delta = r.delta
        fields: dict[str, object] = {
            schema.PERIOD_FROM: start,
            schema.PERIOD_TO: stop,
            schema.READINGS: r.readings,
            schema.OLD_TCO2E: (r.old[1] + r.old[2]) / NANO,
            schema.NEW_TCO2E: (r.new[1] + r.new[2]) / NANO,
            schema.TCO2E_CHANGED: r.tco2e_changed_nano / NANO,
        }
        for k, name in enumerate(schema.DELTA_FIELDS_OF):
            fields[schema.delta_field(name)] = delta[1 + k] / NANO
        # the point of a year starts at the later of the period's start and the year's
        at = max(start, day_ms(date(r.year, 1, 1)))
        lines.append(fields_line(schema.FACTOR_RESTATEMENT, tags, fields, at))
    return lines


async def restate_factor(
    sink: InfluxSink,
    twin: str,
    cluster: Cluster,
    library: FactorLibrary,
    revision: Revision,
    gwp: str = "AR6",
) -> list[SiteRestatement]:
    """Restate ``revision`` over the stored readings of ``cluster`` in ``twin``; returns
    what changed per site, carrier and year (written as ``factor_restatement`` points)."""
    meters = affected_meters(cluster, library, revision, gwp)
    store = InfluxStore(sink)
    start = day_ms(revision.start)
    stop = day_ms(revision.stop) if revision.stop else int(time.time() * 1000) + 86_400_000
    readings: list[tuple[str, int, tuple[int, ...], int]] = []
    for site in sorted({m.site for m in meters.values()}):
        for r in await store.readings(twin, cluster.id, site, [(start, stop)]):
            readings.append((r.meter, r.ts, tuple(r.vec[:NFIG]), r.start))
    restated = restated_readings(readings, meters, revision)
    rows = by_year(restated)
    lines = restatement_lines(twin, cluster.id, revision, rows)
    lines += window_change_lines(twin, cluster.id, revision, hourly_changes(restated))
    if lines:
        await sink.write(lines)
    return rows
