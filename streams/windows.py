"""The live twin of one site: tumbling windows, latest readings, year-to-date, as plain data.

One ``SiteState`` is one Faust table entry (key = site id, the same key as the readings,
so it lives on the partition its readings arrive on). Everything a batch changes for a site
is written back as one changelog record, so a crash leaves the site either wholly before or
wholly after a batch; ``offset`` (the last applied record of the site's partition) then tells
a replay which records are already in: at-least-once delivery, exactly-once effect.

Windows are tumbling, per meter and per site x carrier, at 1 min, 15 min and 1 h. A window
``[s, s+res)`` closes once the site's watermark (latest accepted reading time) passes
``s + res + grace``. Lateness is judged at the finest resolution: a reading whose 1-min window
has closed is late for every resolution (counted and sent to the side output), so the three
resolutions always reconcile.

All figures are integer nano-units (see ``streams.catalog``): exact and order-independent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from streams.catalog import NANO, QUALITIES, SCOPES, MeterCatalog

QUALITY_NAMES = sorted(QUALITIES)
RESOLUTIONS: dict[str, int] = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
FINEST = "1m"
NFIG = 1 + len(SCOPES)  # MWh, then tCO2e per scope
# value vector layout: [mwh, s1, s2_location, s2_market, readings]
VEC = NFIG + 1


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
    accepted: int = 0
    late: int = 0
    duplicates: int = 0

    # -- (de)serialisation: the changelog value ------------------------------------------
    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
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
                "n": [self.accepted, self.late, self.duplicates],
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> SiteState:
        d = orjson.loads(raw)
        s = cls(d["cluster"], d["site"], d["p"], d["off"], d["wm"], d["closed"], d["last"])
        s.mw = {(r[0], r[1], r[2]): r[3:] for r in d["mw"]}
        s.sw = {(r[0], r[1], r[2]): r[3:] for r in d["sw"]}
        s.ytd = {(r[0], r[1]): r[2:] for r in d["ytd"]}
        s.accepted, s.late, s.duplicates = d["n"]
        return s

    def twin(self, catalog: MeterCatalog | None = None) -> dict[str, Any]:
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
            "open_windows": [
                {"carrier": c, "res": r, "start": s, **figures(v)}
                for (c, r, s), v in sorted(self.sw.items())
            ],
            "year_to_date": [
                {"year": y, "carrier": c, **figures(v)} for (y, c), v in sorted(self.ytd.items())
            ],
        }


def figures(vec: list[int]) -> dict[str, Any]:
    """Nano-unit vector -> named floats (exact: each is one integer divided by 1e9)."""
    out: dict[str, Any] = {"energy_mwh": vec[0] / NANO}
    for k, name in enumerate(SCOPES):
        out[f"tco2e_{name}"] = vec[1 + k] / NANO
    out["tco2e"] = (vec[1] + vec[2]) / NANO  # scope 1 + scope 2 location-based
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


@dataclass
class ApplyResult:
    updates: list[WindowUpdate]
    late: np.ndarray  # indices (into the SiteBatch) of late readings
    duplicates: np.ndarray  # indices of readings not after their meter's last reading
    applied: int


def apply_batch(
    state: SiteState, batch: SiteBatch, catalog: MeterCatalog, grace_ms: int
) -> ApplyResult:
    """Fold a site's readings into its state; return the windows to write.

    Records at or below ``state.offset`` were applied before a crash and are skipped.
    """
    fresh = batch.offset > state.offset
    idx = np.flatnonzero(fresh)
    updates: list[WindowUpdate] = []
    empty = np.empty(0, np.int64)
    if batch.max_offset > state.offset:
        state.offset = batch.max_offset
    if idx.size == 0:
        return ApplyResult(updates, empty, empty, 0)
    meter = batch.meter[idx]
    ts = batch.ts[idx]

    # Per meter, readings must move forward in time: an equal or earlier timestamp is a
    # duplicate (a connector re-sending) or out of order, and is never added twice.
    order = np.lexsort((np.arange(idx.size), meter))
    m_sorted = meter[order]
    t_sorted = ts[order]
    names = catalog.specs
    prev = np.empty(idx.size, np.int64)
    group_start = np.ones(idx.size, dtype=bool)
    group_start[1:] = m_sorted[1:] != m_sorted[:-1]
    last_ts = np.array(
        [state.last.get(names[m].meter, (-(2**62),))[0] for m in m_sorted[group_start].tolist()],
        dtype=np.int64,
    )
    # running max per group, seeded with the meter's last accepted ts
    prev_ts = _group_running_prev_max(t_sorted, group_start, last_ts)
    prev[order] = prev_ts
    dup = ts <= prev
    # Lateness at the finest resolution: its 1-min window has already closed.
    late = (~dup) & (ts < state.closed[FINEST])
    ok = ~(dup | late)
    late_idx = idx[late]
    dup_idx = idx[dup]
    state.late += int(late.sum())
    state.duplicates += int(dup.sum())
    keep = idx[ok]
    if keep.size == 0:
        return ApplyResult(updates, late_idx, dup_idx, 0)

    meter = batch.meter[keep]
    ts = batch.ts[keep]
    priced = catalog.price(batch.row[keep], batch.value[keep])
    state.accepted += int(keep.size)

    # One sort by (meter, time): every window of every resolution is then a contiguous run,
    # and each coarser resolution is summed from the finer one's window sums (1 h = 4 x 15
    # min = 60 x 1 min), so only the 1-min level touches every reading.
    o = np.lexsort((ts, meter))
    m_sorted = meter[o]
    t_sorted = ts[o]
    meter_start = np.r_[True, m_sorted[1:] != m_sorted[:-1]]
    # latest reading per meter (ts strictly increases per meter, so the run's last = latest)
    last_of_meter = np.r_[meter_start[1:], True]
    meter_names, carriers, carrier_code, carrier_names = _meter_columns(catalog)
    lasts = o[last_of_meter]
    for m, t, v, q in zip(
        meter[lasts].tolist(),
        ts[lasts].tolist(),
        batch.value[keep[lasts]].tolist(),
        batch.quality[keep[lasts]].tolist(),
        strict=True,
    ):
        state.last[meter_names[m]] = [t, v, q]

    figs = np.empty((o.size, NFIG + 1), np.int64)
    figs[:, :NFIG] = priced[o]
    figs[:, NFIG] = 1  # the reading count sums along
    mw, sw, ytd = state.mw, state.sw, state.ytd
    cluster, site = state.cluster, state.site
    # meter level
    key, start_ms, sums, new_key = m_sorted, t_sorted, figs, meter_start
    minute: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for res, width in RESOLUTIONS.items():
        key, start_ms, sums = _windows(key, start_ms, sums, new_key, width)
        new_key = np.r_[True, key[1:] != key[:-1]]
        if minute is None:
            minute = (key, start_ms, sums)
        for m, w, add in zip(key.tolist(), start_ms.tolist(), sums.tolist(), strict=True):
            name = meter_names[m]
            mk = (name, res, w)
            vec = mw.get(mk)
            if vec is None:
                mw[mk] = vec = add
            else:
                vec[:] = map(_add, vec, add)
            updates.append(
                WindowUpdate("meter", cluster, site, name, carriers[m], res, w, vec, False)
            )
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
                    ytd[yk] = add
                else:
                    yvec[:] = map(_add, yvec, add)
    state.wm = max(state.wm, int(ts.max()))
    updates.extend(close_windows(state, grace_ms, catalog))
    return ApplyResult(_dedupe(updates), late_idx, dup_idx, int(keep.size))


_SLOTS = np.int64(1) << np.int64(32)  # window slots per meter/carrier in a group key
_add = int.__add__


def _meter_columns(
    catalog: MeterCatalog,
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Meter ids and carriers by meter index, small-integer carrier codes by meter index,
    and carriers by code (cached on the catalog)."""
    cached: tuple[list[str], list[str], np.ndarray, list[str]] | None = getattr(
        catalog, "_columns", None
    )
    if cached is None or len(cached[0]) != len(catalog.specs):
        codes: dict[str, int] = {}
        by_meter = [codes.setdefault(c, len(codes)) for c in catalog.carrier]
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


_BAND = np.int64(1) << np.int64(44)
_LO = -(2**42)


def _group_running_prev_max(
    t_sorted: np.ndarray, group_start: np.ndarray, seed: np.ndarray
) -> np.ndarray:
    """For each element, the max of its group's seed and all earlier elements of the group.

    Each group is lifted into its own band of 2**44 so one global running max never mixes
    groups; validated timestamps lie in [0, 2**42), seeds below that are clamped.
    """
    n = t_sorted.size
    gid = (np.cumsum(group_start) - 1).astype(np.int64)
    previous = np.empty(n, np.int64)
    previous[1:] = t_sorted[:-1]
    previous[group_start] = seed
    previous = np.clip(previous, _LO, -_LO)
    band = gid * _BAND
    run = np.maximum.accumulate(previous - _LO + band)
    out: np.ndarray = run - band + _LO
    return out


def close_windows(
    state: SiteState, grace_ms: int, catalog: MeterCatalog | None = None
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
