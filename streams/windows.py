"""The live twin of one site: tumbling windows, latest readings, year-to-date, as plain data.

One ``SiteState`` is one Faust table entry (key = site id, the same key as the readings,
so it lives on the partition its readings arrive on). Everything a batch changes for a site
is written back as one changelog record, so a crash leaves the site either wholly before or
wholly after a batch; ``offset`` (the last applied record of the site's partition) then tells
a replay which records are already in: at-least-once delivery, exactly-once effect.

Windows are tumbling, per meter and per site x carrier, at 1 min, 15 min and 1 h. A window
``[s, s+res)`` closes once the site's watermark (latest accepted reading time) passes
``s + res + grace``. Lateness is judged at the finest resolution: a reading whose 1-min window
has closed is late for every resolution and restates them all (``streams.restate``), so the
three resolutions always reconcile.

All figures are integer nano-units (see ``streams.meter_vectors``): exact and order-independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from streams import influx_schema as schema
from streams.meter_vectors import GASES, NANO, QUALITIES, SCOPES, MeterVectors
from streams.transfers import cluster_share, site_views

QUALITY_NAMES = sorted(QUALITIES)
RESOLUTIONS: dict[str, int] = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
METER_RESOLUTIONS = frozenset(schema.METER_RESOLUTIONS)
FINEST = "1m"
NFIG = 1 + len(SCOPES) + len(GASES)  # MWh, tCO2e per scope, t of each gas (scope 1 by gas)
# value vector layout: [mwh, s1, s2_location, s2_market, s3_upstream, *GASES, readings]
VEC = NFIG + 1
_CAPTURED = 1 + len(SCOPES) + GASES.index("co2_captured")


def padded(vec: list[int]) -> list[int]:
    """A figure vector stored before the gases were kept (shorter): its gases are 0."""
    if len(vec) >= VEC:
        return vec
    return [*vec[:-1], *([0] * (VEC - len(vec))), vec[-1]]


@dataclass
class WindowUpdate:
    """A window whose figures changed (or closed) in this batch: becomes one InfluxDB point."""

    level: str  # "meter" | "site" | "cluster"
    cluster: str
    site: str  # "" for cluster level
    meter: str  # "" unless meter level
    carrier: str
    res: str
    start: int
    vec: list[int]
    complete: bool


@dataclass
class SiteState:
    cluster: str
    site: str
    partition: int
    offset: int = -1  # last applied record offset of this site's partition
    wm: int = -1  # watermark: latest accepted reading time (ms)
    closed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESOLUTIONS, -1))
    # meter -> [ts, value, quality code]
    last: dict[str, list[Any]] = field(default_factory=dict)
    # (meter, res, start) -> vec ; (carrier, res, start) -> vec
    mw: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    sw: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    # (year, carrier) -> vec
    ytd: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    # meter -> times of its readings in open 1-min windows (a repeat of one is a duplicate;
    # older readings are judged against the stored readings by the restatement)
    seen: dict[str, list[int]] = field(default_factory=dict)
    seen_at: int = -1  # Kafka time of the newest record applied (the event-time clock)
    # the longest interval of an accepted reading (ms): how much later than an hour a
    # reading contributing to it may end, for the restatement's read-back
    max_interval: int = 0
    accepted: int = 0
    late: int = 0
    duplicates: int = 0
    # meter -> {ts: [start, *figures]}: the gap fills counted and not yet replaced (the
    # replace rule below); what a real reading of the same meter and ts takes out
    fills: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    # (year, window key, quality code) -> vec: the year to date by data quality (completeness;
    # the key as in ``ytd``: the carrier, a transfer's apart)
    qytd: dict[tuple[int, str, int], list[int]] = field(default_factory=dict)
    replaced: int = 0  # fills replaced by real readings
    # wall-clock ms of the oldest change of the year to date not yet written (-1: none): the
    # twin_ytd points are rewritten at most every ``ytd_every_ms`` (``streams.site_stage``);
    # stored with the state, so a change a stop or crash left unwritten is written after it
    ytd_since: int = -1

    # -- (de)serialisation: the changelog value ------------------------------------------
    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": 2,
                "cluster": self.cluster,
                "site": self.site,
                "p": self.partition,
                "off": self.offset,
                "wm": self.wm,
                "closed": self.closed,
                "last": self.last,
                "mw": [[*k, *v] for k, v in self.mw.items()],
                "sw": [[*k, *v] for k, v in self.sw.items()],
                "ytd": [[*k, *v] for k, v in self.ytd.items()],
                "seen": self.seen,
                "sa": self.seen_at,
                "mi": self.max_interval,
                "n": [self.accepted, self.late, self.duplicates],
                "gf": [[m, t, *v] for m, by in self.fills.items() for t, v in by.items()],
                "q": [[*k, *v] for k, v in self.qytd.items()],
                "rp": self.replaced,
                "ys": self.ytd_since,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> SiteState:
        d = orjson.loads(raw)
        s = cls(d["cluster"], d["site"], d["p"], d["off"], d["wm"], d["closed"], d["last"])
        # (a state from before METER_RESOLUTIONS also kept finer meter windows: dropped)
        s.mw = {(r[0], r[1], r[2]): padded(r[3:]) for r in d["mw"] if r[1] in METER_RESOLUTIONS}
        s.sw = {(r[0], r[1], r[2]): padded(r[3:]) for r in d["sw"]}
        s.ytd = {(r[0], r[1]): padded(r[2:]) for r in d["ytd"]}
        s.seen = d.get("seen", {})
        s.seen_at = d.get("sa", -1)
        s.max_interval = d.get("mi", 0)
        s.accepted, s.late, s.duplicates = d["n"]
        for r in d.get("gf", ()):
            s.fills.setdefault(r[0], {})[r[1]] = r[2:]
        s.qytd = {(r[0], r[1], r[2]): r[3:] for r in d.get("q", ())}
        s.replaced = d.get("rp", 0)
        s.ytd_since = d.get("ys", -1)
        return s

    def twin(self, catalog: MeterVectors | None = None) -> dict[str, Any]:
        """The JSON a live view returns: plain units, not nano-units."""
        return {
            "cluster": self.cluster,
            "site": self.site,
            "watermark": self.wm,
            "offset": self.offset,
            "partition": self.partition,
            "readings_accepted": self.accepted,
            "late": self.late,
            "duplicates": self.duplicates,
            "latest": {
                m: {"ts": v[0], "value": v[1], "quality": v[2]}
                for m, v in sorted(self.last.items())
            },
            # a transfer's windows as the site's InfluxDB points hold them: the sender's
            # side here, the receiver's in the receiving site's (``streams.transfers``)
            "open_windows": [
                {"carrier": c, "res": r, "start": s, **_transfer(t), **figures(v)}
                for (k, r, s), vec in sorted(self.sw.items())
                for site, c, t, v in site_views(self.site, k, vec)
                if site == self.site
            ],
            "year_to_date": [
                {"year": y, "carrier": c, **_transfer(t), **figures(v)}
                for (y, k), vec in sorted(self.ytd.items())
                for site, c, t, v in site_views(self.site, k, vec)
                if site == self.site
            ],
            "fills_replaced": self.replaced,
            "completeness": completeness(self.qytd),
        }


def _transfer(tag: str) -> dict[str, str]:
    return {"transfer": tag} if tag else {}


def sum_vecs(vecs: Iterable[Sequence[int]]) -> list[int]:
    """Figure vectors (nano-units and a count) added up, exactly: integers, never floats."""
    total = [0] * (NFIG + 1)
    for v in vecs:
        for k in range(NFIG + 1):
            total[k] += int(v[k])
    return total


def figures(vec: list[int]) -> dict[str, Any]:
    """Nano-unit vector -> named floats (exact: each is one integer divided by 1e9)."""
    out: dict[str, Any] = {"energy_mwh": vec[0] / NANO}
    for k, name in enumerate(SCOPES):
        out[f"tco2e_{name}"] = vec[1 + k] / NANO
    out["tco2e"] = (vec[1] + vec[2]) / NANO  # scope 1 + scope 2 location-based
    # scope 1 by gas (t of each), the biogenic memo, CO2 captured; scope 1 above is net of it
    for k, name in enumerate(schema.GAS_FIELDS):  # the InfluxDB field names, the same here
        out[name] = vec[1 + len(SCOPES) + k] / NANO
    out[schema.TCO2E_S1_GROSS] = (vec[1] + vec[_CAPTURED]) / NANO
    out["readings"] = vec[NFIG]
    return out


_YEAR_CACHE: dict[int, int] = {}


def year_of(hour_start_ms: int) -> int:
    y = _YEAR_CACHE.get(hour_start_ms)
    if y is None:
        y = datetime.fromtimestamp(hour_start_ms / 1000, tz=UTC).year
        if len(_YEAR_CACHE) > 100_000:
            _YEAR_CACHE.clear()
        _YEAR_CACHE[hour_start_ms] = y
    return y


@dataclass
class SiteBatch:
    """One site's share of a decoded batch: accepted readings in arrival order."""

    meter: np.ndarray
    row: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    offset: np.ndarray  # record offset of each reading
    max_offset: int  # highest record offset of this site in the batch (rejected ones too)
    start: np.ndarray | None = None  # interval start per reading, -1 for none (None: all)

    def starts(self) -> np.ndarray:
        if self.start is None:
            return np.full(self.ts.size, -1, np.int64)
        return self.start


@dataclass
class ApplyResult:
    updates: list[WindowUpdate]
    late: np.ndarray  # indices (into the SiteBatch) of readings for windows already closed
    duplicates: np.ndarray  # indices of readings already counted (the same meter and time)
    applied: int
    keep: np.ndarray  # indices of the readings folded into open windows
    priced: np.ndarray  # their figures (nano-units, one row per ``keep``)
    prev_offset: int  # the state's offset before this batch (what a replay is judged by)


#: A meter index and a timestamp packed into one int64 (timestamps are below 2**42 ms).
_KEY_SHIFT = np.int64(1) << np.int64(42)


def reading_keys(meter: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """One int64 per (meter index, timestamp): the identity of a reading."""
    out: np.ndarray = meter.astype(np.int64) * _KEY_SHIFT + ts
    return out


def first_sightings(
    meter: np.ndarray, ts: np.ndarray, fill: np.ndarray | None = None
) -> np.ndarray:
    """Mask of the readings that are the first (in arrival order) of their (meter, ts); a
    real reading comes before a fill (``fill``: the gap-filled ones) whatever the order."""
    n = ts.size
    first = np.ones(n, dtype=bool)
    if n < 2:
        return first
    rank = np.arange(n) if fill is None else np.arange(n) + fill.astype(np.int64) * n
    order = np.lexsort((rank, ts, meter))
    same = (meter[order][1:] == meter[order][:-1]) & (ts[order][1:] == ts[order][:-1])
    first[order[1:][same]] = False
    return first


def apply_batch(
    state: SiteState, batch: SiteBatch, catalog: MeterVectors, grace_ms: int
) -> ApplyResult:
    """Fold a site's readings into its open windows; return the windows to write.

    Records at or below ``state.offset`` were applied before a crash and are skipped. A
    reading is a duplicate only when the same meter already has a reading of the same
    time; an earlier time than the meter's newest counts like any other. Readings whose
    1-min window has closed are not folded here: they are returned as ``late`` for the
    restatement (``streams.restate``), which reads the stored readings of their hours.
    """
    prev_offset = state.offset
    fresh = batch.offset > state.offset
    idx = np.flatnonzero(fresh)
    updates: list[WindowUpdate] = []
    empty = np.empty(0, np.int64)
    no_figs = np.empty((0, NFIG), np.int64)
    if batch.max_offset > state.offset:
        state.offset = batch.max_offset
    if idx.size == 0:
        return ApplyResult(updates, empty, empty, 0, empty, no_figs, prev_offset)
    meter = batch.meter[idx]
    ts = batch.ts[idx]
    start = batch.starts()[idx]
    fill = batch.quality[idx] == GAP_FILLED
    first = first_sightings(meter, ts, fill)
    # an interval is on time when its first part's window is still open
    is_open = np.where(start >= 0, start, ts) >= state.closed[FINEST]
    replaces = replaces_fill(state, meter, ts, fill, catalog)
    seen = _seen_mask(state, meter, ts, catalog) & is_open & ~replaces
    dup = ~first | seen
    # a reading that replaces a fill restates its windows (open ones too): the fill goes out
    late = (~dup) & (~is_open | replaces)
    ok = ~(dup | late)
    late_idx = idx[late]
    dup_idx = idx[dup]
    state.duplicates += int(dup.sum())
    keep = idx[ok]
    if keep.size == 0:
        return ApplyResult(updates, late_idx, dup_idx, 0, empty, no_figs, prev_offset)
    priced = catalog.price(batch.row[keep], batch.value[keep])
    state.accepted += int(keep.size)
    kept_start = batch.starts()[keep]
    updates.extend(
        fold_windows(state, batch.meter[keep], batch.ts[keep], priced, catalog, kept_start)
    )
    count_quality(state, batch, keep, priced, catalog)
    if kept_start.size and kept_start.max() >= 0:
        spans = batch.ts[keep] - kept_start
        state.max_interval = max(state.max_interval, int(spans[kept_start >= 0].max()))
    _remember(state, batch, keep, catalog)
    state.wm = max(state.wm, int(batch.ts[keep].max()))
    updates.extend(close_windows(state, grace_ms, catalog))
    return ApplyResult(
        _dedupe(updates), late_idx, dup_idx, int(keep.size), keep, priced, prev_offset
    )


def _seen_mask(
    state: SiteState, meter: np.ndarray, ts: np.ndarray, catalog: MeterVectors
) -> np.ndarray:
    """Which readings the state already counted in an open 1-min window."""
    if not state.seen:
        return np.zeros(ts.size, dtype=bool)
    names = catalog.specs
    codes: list[int] = []
    stamps: list[int] = []
    for m in np.unique(meter).tolist():
        got = state.seen.get(names[m].meter)
        if got:
            codes.extend([m] * len(got))
            stamps.extend(got)
    if not stamps:
        return np.zeros(ts.size, dtype=bool)
    known = reading_keys(np.array(codes, np.int64), np.array(stamps, np.int64))
    out: np.ndarray = np.isin(reading_keys(meter, ts), known)
    return out


def _remember(state: SiteState, batch: SiteBatch, keep: np.ndarray, catalog: MeterVectors) -> None:
    """Note the accepted readings' times (duplicates of them are refused while their 1-min
    window is open) and the newest reading per meter."""
    meter_names = _meter_columns(catalog)[0]
    meter = batch.meter[keep]
    ts = batch.ts[keep]
    o = np.lexsort((ts, meter))
    m_sorted = meter[o].tolist()
    t_sorted = ts[o].tolist()
    seen = state.seen
    for m, t in zip(m_sorted, t_sorted, strict=True):
        name = meter_names[m]
        got = seen.get(name)
        if got is None:
            seen[name] = [t]
        else:
            got.append(t)
    last_of_meter = np.r_[meter[o][1:] != meter[o][:-1], True]
    lasts = o[last_of_meter]
    for m, t, v, q in zip(
        meter[lasts].tolist(),
        ts[lasts].tolist(),
        batch.value[keep[lasts]].tolist(),
        batch.quality[keep[lasts]].tolist(),
        strict=True,
    ):
        name = meter_names[m]
        current = state.last.get(name)
        if current is None or t > current[0]:
            state.last[name] = [t, v, q]


MINUTE = RESOLUTIONS[FINEST]

# -- gap fills: the replace rule ------------------------------------------------------------
#: the quality code of a gap fill (``twin.gapfill``; the codes are positions in QUALITIES)
GAP_FILLED = QUALITY_NAMES.index("gap_filled")


def replaces_fill(
    state: SiteState, meter: np.ndarray, ts: np.ndarray, fill: np.ndarray, catalog: MeterVectors
) -> np.ndarray:
    """The replace rule, next to the dedup rule it amends: a real (measured or estimated)
    reading of the same meter and ts as a counted gap fill is not a duplicate; it replaces
    the fill (its figures go out of every window and the year to date, the reading's come
    in), through the restatement (``streams.restate``), whether the fill's windows are open
    or closed. A fill never replaces anything: a fill for a reading already counted (real or
    fill) is a duplicate, and within one batch a real reading wins over a fill of its key."""
    out = np.zeros(ts.size, dtype=bool)
    if not state.fills:
        return out
    names = catalog.specs
    for i in np.flatnonzero(~fill).tolist():
        by = state.fills.get(names[int(meter[i])].meter)
        if by is not None and int(ts[i]) in by:
            out[i] = True
    return out


def read_back_extent(
    state: SiteState, batch: SiteBatch, late: np.ndarray, catalog: MeterVectors
) -> tuple[np.ndarray, np.ndarray]:
    """``(ts, start)`` of the late readings as far as a restatement must read back: a
    reading that replaces a fill reaches over the fill's interval too (its hours are
    recomputed without the fill)."""
    ts = batch.ts[late].copy()
    start = batch.starts()[late].copy()
    if not state.fills:
        return ts, start
    names = catalog.specs
    for i, j in enumerate(late.tolist()):
        by = state.fills.get(names[int(batch.meter[j])].meter)
        fill = None if by is None else by.get(int(batch.ts[j]))
        if fill is not None and int(batch.quality[j]) != GAP_FILLED:
            own = start[i] if start[i] >= 0 else ts[i]
            start[i] = min(int(own), fill[0] if fill[0] >= 0 else int(ts[i]))
            ts[i] += 1  # [start, ts]: the reading's own instant too
    return ts, start


def forget_fills(state: SiteState, oldest_ms: int) -> None:
    """Drop the fills older than ``oldest_ms`` (the restatement horizon): a reading that old
    is refused, so nothing can replace them any more; they stay counted."""
    for meter in [m for m, by in state.fills.items() if min(by) < oldest_ms]:
        kept = {t: v for t, v in state.fills[meter].items() if t >= oldest_ms}
        if kept:
            state.fills[meter] = kept
        else:
            del state.fills[meter]


def count_quality(
    state: SiteState,
    batch: SiteBatch,
    sel: np.ndarray,
    priced: np.ndarray,
    catalog: MeterVectors,
    sign: int = 1,
) -> None:
    """Counted readings into the year to date by quality (their year is the one of their
    ``ts``), and counted fills into ``state.fills`` (what a real reading would take out)."""
    if sel.size == 0:
        return
    names, _, codes, keys = _meter_columns(catalog)
    starts = batch.starts()
    for m, t, q, st, vec in zip(
        batch.meter[sel].tolist(),
        batch.ts[sel].tolist(),
        batch.quality[sel].tolist(),
        starts[sel].tolist(),
        priced.tolist(),
        strict=True,
    ):
        add_quality(state, t, keys[codes[m]], q, vec, sign)
        if q == GAP_FILLED:
            state.fills.setdefault(names[m], {})[t] = [st, *vec]


def add_quality(
    state: SiteState, ts: int, carrier: str, quality: int, vec: Sequence[int], sign: int
) -> None:
    """A reading's figures (``sign`` -1: taken out) into the year to date by quality."""
    key = (year_of(ts - ts % 3_600_000), carrier, quality)
    got = state.qytd.get(key)
    if got is None:
        got = state.qytd[key] = [0] * (NFIG + 1)
    for k in range(NFIG):
        got[k] += sign * int(vec[k])
    got[NFIG] += sign


def by_quality(
    qytd: dict[tuple[int, str, int], list[int]], year: int, carrier: str | None = None
) -> dict[str, list[int]]:
    """A year's figures per quality name, of one key (a carrier) or (None) all of them.

    A transfer's readings count their energy and their number where they are metered, not
    their tonnes (``streams.transfers.cluster_share``): those are another site's, or a
    credit. So a site's quality figures hold the tonnes of its own meters, and the sum of
    its sites' is the cluster's: tCO2e by quality adds up to the cluster's tCO2e."""
    out = {q: [0] * (NFIG + 1) for q in QUALITY_NAMES}
    for (y, c, code), vec in qytd.items():
        if y == year and (carrier is None or c == carrier):
            acc = out[QUALITY_NAMES[code]]
            for k, v in enumerate(cluster_share(c, vec)):
                acc[k] += v
    return out


def tco2e_shares(by: Mapping[str, Sequence[int]]) -> dict[str, float | None]:
    """Each quality's share of the tCO2e (scope 1 + 2 location) of all of them, from the
    figure vectors per quality (``by_quality``; for a cluster, its sites' summed first: the
    share of the sums, never a mean of the sites' shares, which would weigh a small site
    like a big one). None when the total is zero."""
    tonnes = {q: int(v[1]) + int(v[2]) for q, v in by.items()}
    total = sum(tonnes.values())
    return {q: (t / total if total else None) for q, t in tonnes.items()}


def completeness(qytd: dict[tuple[int, str, int], list[int]]) -> dict[str, dict[str, Any]]:
    """Per year: the figures of measured, estimated and gap-filled readings, and each one's
    share of the year's tCO2e (scope 1 + scope 2 location) and of its MWh (None when the
    total is zero)."""
    out: dict[str, dict[str, Any]] = {}
    for year in sorted({y for y, _, _ in qytd}):
        by = by_quality(qytd, year)
        shares = tco2e_shares(by)
        mwh = sum(v[0] for v in by.values())
        out[str(year)] = {
            q: {
                **figures(v),
                "share_tco2e": shares[q],
                "share_energy": v[0] / mwh if mwh else None,
            }
            for q, v in by.items()
        }
    return out


def split_intervals(
    meter: np.ndarray, ts: np.ndarray, start: np.ndarray, priced: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings -> parts: ``(meter, time, figures + count)``, one per 1-min window.

    The stated rule: a reading of an instant (no ``start``) is one part at ``ts``. A
    reading of an interval ``[start, ts)`` is shared among the 1-min windows it overlaps,
    in proportion to the overlap: each part is its share rounded down in nano-units
    (``floor(figure * overlap / length)``, exact integer arithmetic), and
    the part in the window that holds the interval's end takes what rounding left (so the
    parts add up exactly) and the reading's count. An hour's reading fills its hour and a
    reading across an outage fills the outage: no spike where it was delivered.
    """
    n = ts.size
    has = start >= 0
    if not has.any():  # the live path's common case: instants, one part each
        figs = np.empty((n, NFIG + 1), np.int64)
        figs[:, :NFIG] = priced
        figs[:, NFIG] = 1
        return meter, ts, figs
    first_w = np.where(has, start // MINUTE, ts // MINUTE)
    last_w = np.where(has, (ts - 1) // MINUTE, ts // MINUTE)
    k = last_w - first_w + 1
    counts = np.zeros(int(k.sum()), np.int64)
    which = np.repeat(np.arange(n), k)
    ends = np.cumsum(k)
    within = np.arange(which.size) - np.repeat(ends - k, k)
    w = first_w[which] + within
    lo = np.where(has[which], np.maximum(start[which], w * MINUTE), ts[which])
    hi = np.where(has[which], np.minimum(ts[which], (w + 1) * MINUTE), ts[which] + 1)
    dur = np.where(has, ts - start, 1)[which][:, None]
    overlap = (hi - lo)[:, None]
    # floor(vec * overlap / dur) in integers without overflow: vec = q * dur + r, r < dur
    q, r = np.divmod(priced[which], dur)
    figs = np.empty((which.size, NFIG + 1), np.int64)
    figs[:, :NFIG] = q * overlap + (r * overlap) // dur
    last = ends - 1
    # the end's part: the reading's figures less the other parts (exact in integers)
    totals = np.add.reduceat(figs[:, :NFIG], ends - k, axis=0)
    figs[last, :NFIG] += priced - totals
    counts[last] = 1
    figs[:, NFIG] = counts
    return meter[which], lo, figs


def window_sums(
    meter: np.ndarray, ts: np.ndarray, figs_in: np.ndarray, catalog: MeterVectors
) -> Iterator[tuple[str, int, str, int, list[int]]]:
    """Every window the readings fall in, summed: ``(level, key, res, start, vec)``, level
    ``meter`` (key = meter index; the resolutions of ``METER_RESOLUTIONS``) or ``site``
    (key = carrier code of ``_meter_columns``; every resolution).

    One sort by (meter, time): every window of every resolution is then a contiguous run,
    and each coarser resolution is summed from the finer one's window sums (1 h = 4 x 15
    min = 60 x 1 min), so only the 1-min level touches every reading.
    """
    o = np.lexsort((ts, meter))
    m_sorted = meter[o]
    t_sorted = ts[o]
    figs = figs_in[o]  # the figures, then the reading count, which sums along
    carrier_code = _meter_columns(catalog)[2]
    key, start_ms, sums = m_sorted, t_sorted, figs
    new_key = np.r_[True, m_sorted[1:] != m_sorted[:-1]]
    minute: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for res, width in RESOLUTIONS.items():
        key, start_ms, sums = _windows(key, start_ms, sums, new_key, width)
        new_key = np.r_[True, key[1:] != key[:-1]]
        if minute is None:
            minute = (key, start_ms, sums)
        if res not in METER_RESOLUTIONS:
            continue
        for m, w, add in zip(key.tolist(), start_ms.tolist(), sums.tolist(), strict=True):
            yield "meter", m, res, w, add
    # site x carrier level, from the 1-min meter windows
    assert minute is not None
    c = carrier_code[minute[0]]
    so = np.lexsort((minute[1], c))
    key, start_ms, sums = c[so], minute[1][so], minute[2][so]
    new_key = np.r_[True, key[1:] != key[:-1]]
    for res, width in RESOLUTIONS.items():
        key, start_ms, sums = _windows(key, start_ms, sums, new_key, width)
        new_key = np.r_[True, key[1:] != key[:-1]]
        for k, w, add in zip(key.tolist(), start_ms.tolist(), sums.tolist(), strict=True):
            yield "site", k, res, w, add


def fold_windows(
    state: SiteState,
    meter: np.ndarray,
    ts: np.ndarray,
    priced: np.ndarray,
    catalog: MeterVectors,
    start: np.ndarray,
) -> list[WindowUpdate]:
    """Add readings to the state's open windows and its year to date: the updates to write
    are the site windows' (a meter window is written once closed, by ``close_windows``)."""
    meter_names, _, _, carrier_names = _meter_columns(catalog)
    mw, sw, ytd = state.mw, state.sw, state.ytd
    cluster, site = state.cluster, state.site
    updates: list[WindowUpdate] = []
    parts = split_intervals(meter, ts, start, priced)
    for level, k, res, w, add in window_sums(*parts, catalog):
        if level == "meter":
            name = meter_names[k]
            mk = (name, res, w)
            vec = mw.get(mk)
            if vec is None:
                mw[mk] = add
            else:
                vec[:] = map(_add, vec, add)
            continue  # an open meter window is not written (influx_schema.METER_WINDOW)
        carrier = carrier_names[k]
        sk = (carrier, res, w)
        vec = sw.get(sk)
        if vec is None:
            sw[sk] = vec = list(add)
        else:
            vec[:] = map(_add, vec, add)
        updates.append(WindowUpdate("site", cluster, site, "", carrier, res, w, vec, False))
        if res == "1h":
            yk = (year_of(w), carrier)
            yvec = ytd.get(yk)
            if yvec is None:
                ytd[yk] = list(add)
            else:
                yvec[:] = map(_add, yvec, add)
    return updates


_add = int.__add__


def _meter_columns(
    catalog: MeterVectors,
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Meter ids and carriers by meter index, small-integer carrier codes by meter index,
    and carriers by code (cached on the catalog)."""
    cached: tuple[list[str], list[str], np.ndarray, list[str]] | None = getattr(
        catalog, "_columns", None
    )
    if cached is None or len(cached[0]) != len(catalog.specs):
        codes: dict[str, int] = {}
        # site windows are kept per carrier, a transfer's apart (``streams.transfers``)
        by_meter = [codes.setdefault(s.window_key or s.carrier, len(codes)) for s in catalog.specs]
        cached = (
            [s.meter for s in catalog.specs],
            list(catalog.carrier),
            np.array(by_meter, np.int64),
            list(codes),
        )
        catalog._columns = cached  # type: ignore[attr-defined]
    return cached


def _windows(
    key: np.ndarray, start_ms: np.ndarray, sums: np.ndarray, new_key: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum rows sorted by (key, time) into tumbling windows of ``width`` ms.

    Returns one row per (key, window): the key, the window start and the summed figures.
    """
    window = start_ms - start_ms % width
    change = new_key.copy()
    change[1:] |= window[1:] != window[:-1]
    starts = np.flatnonzero(change)
    return key[starts], window[starts], np.add.reduceat(sums, starts, axis=0)


def close_windows(
    state: SiteState, grace_ms: int, catalog: MeterVectors | None = None
) -> list[WindowUpdate]:
    """Close every window the watermark has passed by more than the grace period."""
    out: list[WindowUpdate] = []
    if state.wm < 0:
        return out
    for res, width in RESOLUTIONS.items():
        boundary = ((state.wm - grace_ms) // width) * width
        if boundary <= state.closed.get(res, -1):
            continue
        # windows with start + width <= boundary are closed; at the finest resolution,
        # a reading with ts < boundary is late from now on
        state.closed[res] = boundary
        if res == FINEST:
            _forget_seen(state, boundary)
        for key in [k for k in state.mw if k[1] == res and k[2] + width <= boundary]:
            vec = state.mw.pop(key)
            meter = key[0]
            carrier = catalog.carrier[catalog.index[meter]] if catalog is not None else ""
            out.append(
                WindowUpdate(
                    "meter", state.cluster, state.site, meter, carrier, res, key[2], vec, True
                )
            )
        for key in [k for k in state.sw if k[1] == res and k[2] + width <= boundary]:
            vec = state.sw.pop(key)
            out.append(
                WindowUpdate("site", state.cluster, state.site, "", key[0], res, key[2], vec, True)
            )
    return out


def _forget_seen(state: SiteState, boundary: int) -> None:
    """Drop the reading times of closed 1-min windows: the stored readings stand for them."""
    for meter in list(state.seen):
        kept = [t for t in state.seen[meter] if t >= boundary]
        if kept:
            state.seen[meter] = kept
        else:
            del state.seen[meter]


def _dedupe(updates: Iterable[WindowUpdate]) -> list[WindowUpdate]:
    """Keep one update per window, the last (a closing one wins over an open one)."""
    seen: dict[tuple[str, str, str, str, int], WindowUpdate] = {}
    for u in updates:
        seen[(u.level, u.meter, u.carrier, u.res, u.start)] = u
    return list(seen.values())


# -- cluster level (second stage) -----------------------------------------------------------


def cluster_key(cluster: str, res: str, start: int) -> bytes:
    return f"{cluster}|{res}|{start}".encode()


def parse_cluster_key(key: bytes) -> tuple[str, str, int]:
    cluster, res, start = key.decode().rsplit("|", 2)
    return cluster, res, int(start)
