"""A factor revision's change of the hourly windows, as the live twin would have summed it.

The worker keeps writing its windows from its own state, so a restated window written in
place would be overwritten by the window's next update; and the previous edition must stay
queryable. So, like the year to date (``streams.factor_restate``), the windows are restated
additively: one ``window_restatement`` point per site, carrier and hour (and per cluster
carrier and hour: the sum of its sites) holds the change of every figure, and the current
edition of a window is the stored window plus the changes (``streams.editions``).

The change of an hour is computed the way the worker adds readings to windows
(``streams.windows.split_intervals``: an interval reading is shared among its minutes,
rounded down, the rest in its end's minute), once with the stored figures and once with the
restated ones, and subtracted: so the restated window equals, to the nano-unit, the window
the worker would have written had it priced the readings with the new version. Only the
1-hour resolution is restated: it is what the history charts and the reports read.

The cluster's change is its sites' changes summed per carrier: the meters a revision
touches are never transfers between sites (``twin.revision.affected_meters``), so there is
nothing to eliminate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streams import influx_schema as schema
from streams.meter_vectors import NANO
from streams.sink import fields_line
from streams.windows import NFIG, RESOLUTIONS, split_intervals
from twin.revision import RestatedReading, Revision

__all__ = ["HOUR_MS", "cluster_changes", "hourly_changes", "window_change_lines"]

HOUR_MS = RESOLUTIONS["1h"]

#: (site, carrier, hour start ms) -> the change of each figure (NFIG, nano) then the
#: number of restated readings the hour holds
HourChanges = dict[tuple[str, str, int], list[int]]


def hourly_changes(restated: Sequence[RestatedReading]) -> HourChanges:
    """Each site hour's change: the hour's parts of the readings at the new version less
    their parts as stored (module docstring)."""
    out: HourChanges = {}
    if not restated:
        return out
    keys = sorted({(r.meter.site, r.meter.carrier) for r in restated})
    code_of = {k: i for i, k in enumerate(keys)}
    code = np.array([code_of[(r.meter.site, r.meter.carrier)] for r in restated], np.int64)
    idx = np.arange(len(restated), dtype=np.int64)
    ts = np.array([r.ts for r in restated], np.int64)
    start = np.array([r.start for r in restated], np.int64)
    old = np.array([r.old for r in restated], np.int64).reshape(len(restated), NFIG)
    new = np.array([r.new for r in restated], np.int64).reshape(len(restated), NFIG)
    which, lo, old_parts = split_intervals(idx, ts, start, old)
    _, _, new_parts = split_intervals(idx, ts, start, new)
    change = new_parts.copy()
    change[:, :NFIG] -= old_parts[:, :NFIG]  # the count column stays: readings restated
    # summed per (site x carrier, hour): one sort, then a contiguous run per window
    part_code, hours = code[which], lo // HOUR_MS
    order = np.lexsort((hours, part_code))
    part_code, hours, change = part_code[order], hours[order], change[order]
    first = np.flatnonzero(
        np.r_[True, (part_code[1:] != part_code[:-1]) | (hours[1:] != hours[:-1])]
    )
    sums = np.add.reduceat(change, first, axis=0)
    for c, hour, vec in zip(
        part_code[first].tolist(), hours[first].tolist(), sums.tolist(), strict=True
    ):
        out[(*keys[c], hour * HOUR_MS)] = vec
    return out


def cluster_changes(changes: HourChanges) -> dict[tuple[str, int], list[int]]:
    """(carrier, hour) -> the cluster's change: its sites' summed."""
    out: dict[tuple[str, int], list[int]] = {}
    for (_site, carrier, hour), vec in changes.items():
        acc = out.setdefault((carrier, hour), [0] * len(vec))
        acc[:] = [a + b for a, b in zip(acc, vec, strict=True)]
    return out


def _fields(vec: Sequence[int]) -> dict[str, object]:
    fields: dict[str, object] = {
        schema.delta_field(name): vec[1 + k] / NANO for k, name in enumerate(schema.DELTA_FIELDS_OF)
    }
    fields[schema.delta_field(schema.TCO2E)] = (vec[1] + vec[2]) / NANO
    fields[schema.READINGS] = int(vec[NFIG])
    return fields


def window_change_lines(
    twin: str, cluster: str, revision: Revision, changes: Mapping[tuple[str, str, int], list[int]]
) -> list[str]:
    """The ``window_restatement`` points of a revision: per site hour and cluster hour,
    stamped with the hour's start and tagged with the revision, so a rerun overwrites them."""
    common = {
        schema.TWIN: twin,
        schema.CLUSTER: cluster,
        schema.RES: "1h",
        schema.FACTOR: revision.factor_id,
        schema.OLD_VERSION: revision.old.version,
        schema.NEW_VERSION: revision.new.version,
    }
    lines = []
    for (site, carrier, hour), vec in sorted(changes.items()):
        tags = {**common, schema.LEVEL: "site", schema.SITE: site, schema.CARRIER: carrier}
        lines.append(fields_line(schema.WINDOW_RESTATEMENT, tags, _fields(vec), hour))
    for (carrier, hour), vec in sorted(cluster_changes(dict(changes)).items()):
        tags = {**common, schema.LEVEL: "cluster", schema.CARRIER: carrier}
        lines.append(fields_line(schema.WINDOW_RESTATEMENT, tags, _fields(vec), hour))
    return lines
