"""Late readings restate the windows they belong to, exactly and idempotently.

A reading whose 1-min window has closed is not dropped. Its hour is recomputed from the
stored readings of the site (every accepted reading is kept in InfluxDB as a
``meter_reading`` point, stamped with its own time, carrying its priced figures in
nano-units and the Kafka partition and offset that brought it), the readings of the batch
and the late ones, and every window of that hour is written again with its new total:
site level at 1 min, 15 min and 1 h, meter level at 1 h once closed, the same series and
timestamps, so a dashboard shows the corrected figure. The site's year to date grows by
exactly the late readings' figures, and the cluster stage recomputes its windows from the
restated sites.

Why this design, not per-window state: restating a 1-min window of last year needs its
total and needs to know which readings it already holds. Keeping that in the worker would
hold every window and reading of the horizon (two reporting years) in memory; the stored
readings already are that record, so the worker keeps only its open windows and reads an
hour back when a late reading needs it (one query per site and run of hours per batch).

Idempotent under replay: a late reading already stored is a duplicate, unless it was
stored by a record the state has not applied yet (a crash between the write and the
state): then it is counted now, once. Recomputing a window from the stored readings gives
the same total however often it is done.

Pure numpy and plain data: the stored readings come in as ``StoredReading`` rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from streams.meter_vectors import MeterVectors
from streams.windows import (
    GAP_FILLED,
    NFIG,
    RESOLUTIONS,
    SiteBatch,
    SiteState,
    WindowUpdate,
    _meter_columns,
    add_quality,
    count_quality,
    split_intervals,
    window_sums,
    year_of,
)

HOUR = RESOLUTIONS["1h"]


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One accepted reading as stored: the figures it added and the record it came in."""

    meter: str
    ts: int
    vec: tuple[int, ...]  # nano-units: MWh, then tCO2e per scope
    partition: int
    offset: int
    start: int = -1  # the interval's start (readings/2), -1 for an instant


@dataclass(frozen=True, slots=True)
class Restatement:
    """A site x carrier hour whose figures changed after it had closed: what and why."""

    cluster: str
    site: str
    carrier: str
    start: int  # the hour
    old: list[int]
    new: list[int]
    readings_added: int
    reason: str


@dataclass
class RestateResult:
    updates: list[WindowUpdate] = field(default_factory=list)
    added: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    priced: np.ndarray = field(default_factory=lambda: np.empty((0, NFIG), np.int64))
    duplicates: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    restatements: list[Restatement] = field(default_factory=list)


def hour_spans(ts: np.ndarray, start: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The runs of consecutive hours the readings fall in (their intervals, where they
    have one), as ``[start, stop)`` ms."""
    if start is None or not (start >= 0).any():
        hours = np.unique(ts - ts % HOUR).tolist()
    else:
        first = np.where(start >= 0, start, ts)
        last = np.where(start >= 0, ts - 1, ts)
        n = (last - last % HOUR - (first - first % HOUR)) // HOUR + 1
        base = np.repeat(first - first % HOUR, n)
        step = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        hours = np.unique(base + step * HOUR).tolist()
    spans: list[tuple[int, int]] = []
    for h in hours:
        if spans and spans[-1][1] == h:
            spans[-1] = (spans[-1][0], h + HOUR)
        else:
            spans.append((h, h + HOUR))
    return spans


Known = list[tuple[int, int, int, tuple[int, ...]]]  # meter index, ts, start, figures


def _unstored(
    state: SiteState,
    batch: SiteBatch,
    late: np.ndarray,
    stored: list[StoredReading],
    catalog: MeterVectors,
    prev_offset: int,
) -> tuple[Known, np.ndarray]:
    """The stored readings (of meters still in the catalog) and which late readings are
    not among them: new, or stored by a record the state has not applied yet (that
    write's state was lost in a crash, so it counts now)."""
    index = catalog.index
    before: dict[int, tuple[int, int]] = {}
    known: Known = []
    for r in stored:
        m = index.get(r.meter)
        if m is None:
            continue  # a meter no longer in the catalog: its stored figures stay as they are
        before[m * (1 << 42) + r.ts] = (r.partition, r.offset)
        known.append((m, r.ts, r.start, r.vec))
    keys = (batch.meter[late].astype(np.int64) << np.int64(42)) + batch.ts[late]
    new_mask = np.ones(late.size, dtype=bool)
    replacing = _replacing(state, batch, late, catalog)
    for i, k in enumerate(keys.tolist()):
        got = before.get(k)
        if replacing[i]:
            continue  # the stored one is the fill it replaces (the state still counts it)
        if got is not None and not (got[0] == state.partition and got[1] > prev_offset):
            new_mask[i] = False
    return known, new_mask


def _replacing(
    state: SiteState, batch: SiteBatch, sel: np.ndarray, catalog: MeterVectors
) -> np.ndarray:
    """Which of ``sel`` are real readings of a counted fill's meter and ts (the replace
    rule, ``streams.windows.replaces_fill``)."""
    out = np.zeros(sel.size, dtype=bool)
    names = catalog.specs
    for i, j in enumerate(sel.tolist()):
        if int(batch.quality[j]) == GAP_FILLED:
            continue
        by = state.fills.get(names[int(batch.meter[j])].meter)
        out[i] = by is not None and int(batch.ts[j]) in by
    return out


def _removed_parts(
    state: SiteState, batch: SiteBatch, added: np.ndarray, catalog: MeterVectors
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict[tuple[int, int], int]]:
    """The parts of the fills the added readings replace (taken out of the state), and how
    many fills go per (carrier code, hour), for the restatement record."""
    removed = split_intervals(*_take_out_fills(state, batch, added, catalog))
    carrier_code = _meter_columns(catalog)[2]
    replaced: dict[tuple[int, int], int] = defaultdict(int)
    for m, t, n in zip(
        removed[0].tolist(), removed[1].tolist(), removed[2][:, NFIG].tolist(), strict=True
    ):
        replaced[(int(carrier_code[m]), t - t % HOUR)] += n
    return removed, replaced


def _take_out_fills(
    state: SiteState, batch: SiteBatch, added: np.ndarray, catalog: MeterVectors
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fills the added readings replace, out of the state (fills, year to date by
    quality, latest reading; the real reading's time is remembered while its 1-min window
    is open, so a repeat of it is a duplicate): their meter, ts, start and figures."""
    meters: list[int] = []
    stamps: list[int] = []
    starts: list[int] = []
    vecs: list[list[int]] = []
    names = catalog.specs
    for j in np.flatnonzero(_replacing(state, batch, added, catalog)).tolist():
        i = int(added[j])
        m, t = int(batch.meter[i]), int(batch.ts[i])
        name = names[m].meter
        by = state.fills[name]
        fill = by.pop(t)
        if not by:
            del state.fills[name]
        meters.append(m)
        stamps.append(t)
        starts.append(fill[0])
        vecs.append(fill[1:])
        _, _, codes, keys = _meter_columns(catalog)
        add_quality(state, t, keys[codes[m]], GAP_FILLED, fill[1:], -1)
        last = state.last.get(name)
        if last is not None and last[0] == t:
            state.last[name] = [t, float(batch.value[i]), int(batch.quality[i])]
        if t >= state.closed["1m"]:
            state.seen.setdefault(name, []).append(t)
    state.replaced += len(meters)
    return (
        np.array(meters, np.int64),
        np.array(stamps, np.int64),
        np.array(starts, np.int64),
        np.array(vecs, np.int64).reshape(-1, NFIG),
    )


def restate(
    state: SiteState,
    batch: SiteBatch,
    late: np.ndarray,
    live: np.ndarray,
    live_priced: np.ndarray,
    stored: list[StoredReading],
    catalog: MeterVectors,
    prev_offset: int,
) -> RestateResult:
    """Count the late readings of ``batch`` (indices ``late``) not stored before, and
    recompute every window of their hours.

    ``live`` (with ``live_priced``) are the batch's readings already folded into open
    windows, ``stored`` every stored reading of the site in the late readings' hours.
    """
    out = RestateResult()
    if late.size == 0:
        return out
    known, new_mask = _unstored(state, batch, late, stored, catalog, prev_offset)
    out.duplicates = late[~new_mask]
    state.duplicates += int(out.duplicates.size)
    added = late[new_mask]
    if added.size == 0:
        return out
    priced = catalog.price(batch.row[added], batch.value[added])
    out.added, out.priced = added, priced
    removed, replaced = _removed_parts(state, batch, added, catalog)
    state.late += int(added.size) - int(removed[2][:, NFIG].sum())
    state.accepted += int(added.size)
    count_quality(state, batch, added, priced, catalog)
    starts = batch.starts()
    new_parts = split_intervals(batch.meter[added], batch.ts[added], starts[added], priced)
    # a replaced fill's parts count negatively: what the readings add is the difference
    new_parts = (
        np.concatenate([new_parts[0], removed[0]]),
        np.concatenate([new_parts[1], removed[1]]),
        np.concatenate([new_parts[2], -removed[2]]),
    )
    hours = set(np.unique(new_parts[1] - new_parts[1] % HOUR).tolist())

    meter, ts, figs_all = _hour_parts(known, batch, ((live, live_priced), (added, priced)), hours)
    if removed[0].size:  # the windows a replaced fill leaves empty are written again, as 0
        meter = np.concatenate([meter, removed[0]])
        ts = np.concatenate([ts, removed[1]])
        figs_all = np.concatenate([figs_all, np.zeros_like(removed[2])])

    meter_names, carriers, carrier_code, carrier_names = _meter_columns(catalog)
    touched_meters = set(batch.meter[added].tolist())
    touched_carriers = {int(carrier_code[m]) for m in touched_meters}
    # what the late readings add, per (carrier, hour), for the year to date and the record
    add_by: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    for m, t, fig in zip(
        new_parts[0].tolist(), new_parts[1].tolist(), new_parts[2].tolist(), strict=True
    ):
        acc = add_by[(int(carrier_code[m]), t - t % HOUR)]
        for k in range(NFIG + 1):
            acc[k] += fig[k]
    for level, k, res, w, vec in window_sums(meter, ts, figs_all, catalog):
        width = RESOLUTIONS[res]
        is_open = w + width > state.closed[res]
        if level == "meter":
            if k not in touched_meters:
                continue
            name = meter_names[k]
            if is_open:  # written once closed (``close_windows``)
                state.mw[(name, res, w)] = vec
                continue
            closed = WindowUpdate(
                "meter", state.cluster, state.site, name, carriers[k], res, w, vec, True
            )
            out.updates.append(closed)
            continue
        if k not in touched_carriers:
            continue
        carrier = carrier_names[k]
        if is_open:
            state.sw[(carrier, res, w)] = list(vec)
        out.updates.append(
            WindowUpdate("site", state.cluster, state.site, "", carrier, res, w, vec, not is_open)
        )
        if res == "1h" and (k, w) in add_by:
            plus = add_by[(k, w)]
            out.restatements.append(
                Restatement(
                    state.cluster,
                    state.site,
                    carrier,
                    w,
                    [a - b for a, b in zip(vec, plus, strict=True)],
                    list(vec),
                    plus[NFIG],
                    _reason(plus[NFIG], replaced.get((k, w), 0)),
                )
            )
    _grow_year_to_date(state, add_by, carrier_names)
    return out


def _reason(net_added: int, fills_replaced: int) -> str:
    """The restatement record's why: late readings, and gap fills they replaced."""
    if not fills_replaced:
        return f"{net_added} reading(s) arrived after the window had closed"
    return (
        f"{fills_replaced} gap fill(s) replaced by the real reading(s), "
        f"{net_added + fills_replaced} reading(s) in"
    )


def _grow_year_to_date(
    state: SiteState, add_by: dict[tuple[int, int], list[int]], carrier_names: list[str]
) -> None:
    """The year to date grows by exactly what the late readings add (per hour's year)."""
    for (k, hour), plus in add_by.items():
        yk = (year_of(hour), carrier_names[k])
        ytd = state.ytd.get(yk)
        if ytd is None:
            state.ytd[yk] = list(plus)
        else:
            ytd[:] = [a + b for a, b in zip(ytd, plus, strict=True)]


def _hour_parts(
    known: Known,
    batch: SiteBatch,
    fresh: tuple[tuple[np.ndarray, np.ndarray], ...],
    hours: set[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every reading of those hours once (stored, and ``fresh``: the batch's readings with
    their figures), as parts (``split_intervals``) within those hours: their windows are
    recomputed whole, and no other window is."""
    starts = batch.starts()
    rows: dict[int, tuple[int, int, int, tuple[int, ...]]] = {}
    for m, t, st, stored_fig in known:
        rows[m * (1 << 42) + t] = (m, t, st, stored_fig)
    for sel, figs in fresh:
        for m, t, st, row in zip(
            batch.meter[sel].tolist(),
            batch.ts[sel].tolist(),
            starts[sel].tolist(),
            figs.tolist(),
            strict=True,
        ):
            rows[m * (1 << 42) + t] = (m, t, st, tuple(row))
    meter, ts, figs_all = split_intervals(
        np.fromiter((r[0] for r in rows.values()), np.int64, len(rows)),
        np.fromiter((r[1] for r in rows.values()), np.int64, len(rows)),
        np.fromiter((r[2] for r in rows.values()), np.int64, len(rows)),
        np.array([r[3] for r in rows.values()], np.int64).reshape(-1, NFIG),
    )
    inside = np.isin(ts - ts % HOUR, np.fromiter(hours, np.int64, len(hours)))
    return meter[inside], ts[inside], figs_all[inside]
