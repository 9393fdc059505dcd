"""The alert engine: readings of a site in, alert events and detector statistics out.

No I/O and no clock here: ``AlertEngine.process_site`` folds a batch of one site's priced
readings into that site's ``SiteAlertState`` (one Faust table entry, key = site id, so it
lives on the partition of the site's readings) and returns the alert events and InfluxDB
lines the batch caused. ``streams.alerting.stage`` does the I/O in an order that makes
at-least-once delivery exact (see there).

Per batch, per meter (numpy over the meter's readings): duplicates dropped, gaps longer than
``silent_intervals`` found (meter_silent opens at the last reading + the allowance, resolves
at the next reading), unchanged runs found (meter_flatline). Per site, readings are summed
into ``step_s`` emission buckets (``np.add.reduceat``); a bucket closes when the site's event
time passes its end plus ``grace_s``. A closed bucket is *trusted* when every known meter
reported at least ``min_coverage`` of its expected readings and no data alert overlapped it;
only trusted buckets feed the statistical shift detector and the rolling rates, so a broken
meter is reported as a data problem and never as an emission change.

Cluster-level drift runs the same ``ScopeDetector`` over the sum of the sites' buckets
(``ClusterAlertState``), fed with the ``BucketSummary`` records this stage produces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from streams.alerting.config import AlertConfig
from streams.alerting.model import (
    DEFAULT_SEVERITY,
    SEVERITY_LEVEL,
    Alert,
    Kind,
    Scope,
    alert_id,
)
from streams.meter_vectors import MeterVectors
from streams.sink import fields_line
from twin.drift import (
    Latch,
    ShiftState,
    flat_runs,
    fractional_year,
    gaps,
    hours_in_year,
    projected_year_end,
    rolling_rate,
    shift_scan,
)
from twin.targets import Pathway

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_dur(ms: float) -> str:
    m = ms / 60_000
    if m < 120:
        return f"{m:.0f} min"
    return f"{m / 60:.1f} h"


# -- state ---------------------------------------------------------------------------------------


@dataclass
class ScopeState:
    """Emission detectors of one scope (a site, or a whole cluster)."""

    shift: ShiftState = field(default_factory=ShiftState)
    # recent trusted buckets: [start, tco2e, hours]
    hist: list[list[float]] = field(default_factory=list)
    # year-to-date of trusted buckets: [year, tco2e, hours]
    ytd: list[float] = field(default_factory=lambda: [0, 0.0, 0.0])
    latches: dict[str, list[int]] = field(default_factory=dict)

    def to_obj(self) -> dict[str, Any]:
        return {"s": self.shift.to_list(), "h": self.hist, "y": self.ytd, "l": self.latches}

    @classmethod
    def from_obj(cls, d: dict[str, Any]) -> ScopeState:
        return cls(ShiftState.from_list(d["s"]), d["h"], d["y"], d["l"])


@dataclass
class SiteAlertState:
    """Everything the engine remembers about one site: one table value."""

    cluster: str
    site: str
    partition: int
    offset: int = -1  # last applied record offset of the site's partition
    wm: int = -1  # event-time watermark: latest reading of the site
    # meter -> [last_ts, last_value, run_start, gap_ms, level]
    meters: dict[str, list[float]] = field(default_factory=dict)
    # bucket start -> [tco2e, {meter: [count, value_sum]}]
    buckets: dict[int, list[Any]] = field(default_factory=dict)
    closed_until: int = -1  # buckets starting before this are closed
    # data-fault intervals [from, to] (to = -1 while open) of the last day
    bad: list[list[int]] = field(default_factory=list)
    scope: ScopeState = field(default_factory=ScopeState)
    # key (kind|meter) -> open alert record
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: int = 0
    seen_at: int = -1  # Kafka time of the newest record (for the event-time clock)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "sa": self.seen_at,
                "c": self.cluster,
                "s": self.site,
                "p": self.partition,
                "off": self.offset,
                "wm": self.wm,
                "m": self.meters,
                "b": [[k, v[0], v[1]] for k, v in self.buckets.items()],
                "cu": self.closed_until,
                "bad": self.bad,
                "sc": self.scope.to_obj(),
                "o": self.open,
                "late": self.late,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> SiteAlertState:
        d = orjson.loads(raw)
        s = cls(d["c"], d["s"], d["p"], d["off"], d["wm"], d["m"])
        s.buckets = {int(b[0]): [b[1], b[2]] for b in d["b"]}
        s.closed_until = d["cu"]
        s.bad = d["bad"]
        s.scope = ScopeState.from_obj(d["sc"])
        s.open = d["o"]
        s.late = d["late"]
        s.seen_at = d.get("sa", -1)
        return s


@dataclass
class BucketSummary:
    """A closed site bucket, for the cluster-level detectors."""

    cluster: str
    site: str
    start: int
    tco2e: float
    trusted: bool

    def to_list(self) -> list[Any]:
        return [self.site, self.start, self.tco2e, int(self.trusted)]


@dataclass
class ClusterAlertState:
    """Cluster-level detectors: site buckets gathered per start until every site is in."""

    cluster: str
    partition: int
    # start -> {site: [tco2e, trusted]}
    pending: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    # site -> end of its newest bucket: partitions are consumed at different paces, so the
    # cluster can only judge a bucket "missing a site" by that site's own progress
    site_wm: dict[str, int] = field(default_factory=dict)
    wm: int = -1
    closed_until: int = -1
    scope: ScopeState = field(default_factory=ScopeState)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "c": self.cluster,
                "p": self.partition,
                "pe": [[k, v] for k, v in self.pending.items()],
                "sw": self.site_wm,
                "wm": self.wm,
                "cu": self.closed_until,
                "sc": self.scope.to_obj(),
                "o": self.open,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> ClusterAlertState:
        d = orjson.loads(raw)
        s = cls(d["c"], d["p"])
        s.pending = {int(k): v for k, v in d["pe"]}
        s.site_wm = d["sw"]
        s.wm, s.closed_until = d["wm"], d["cu"]
        s.scope = ScopeState.from_obj(d["sc"])
        s.open = d["o"]
        return s


@dataclass
class EngineOutput:
    events: list[Alert] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    buckets: list[BucketSummary] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.events.extend(other.events)
        self.lines.extend(other.lines)
        self.buckets.extend(other.buckets)


# -- engine --------------------------------------------------------------------------------------


class AlertEngine:
    """Pure detector logic; one instance serves every site and cluster of a worker."""

    def __init__(
        self,
        catalog: MeterVectors,
        config: AlertConfig | None = None,
        pathways: Mapping[str, Pathway] | None = None,
        twin: str = "live",
    ) -> None:
        self.catalog = catalog
        self.cfg = config or AlertConfig()
        #: key "cluster" or "cluster/site" -> pathway (tCO2e per year)
        self.pathways = dict(pathways or {})
        self.twin = twin
        self.shift_cfg = self.cfg.shift

    # -- alert records -----------------------------------------------------------------------
    def _emit(
        self,
        out: EngineOutput,
        open_map: dict[str, dict[str, Any]],
        event: str,
        kind: Kind,
        scope: Scope,
        at: int,
        *,
        opened: int | None = None,
        value: float | None = None,
        threshold: float | None = None,
        unit: str = "",
        explanation: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        key = f"{kind.value}|{scope.meter}"
        rec = open_map.get(key)
        if event == "open":
            if rec is not None:
                return  # de-duplication: already open
            assert opened is not None
            rec = {
                "id": alert_id(self.twin, kind.value, scope, opened),
                "opened": opened,
                "last": at,
                "value": value,
                "threshold": threshold,
            }
            open_map[key] = rec
        else:
            if rec is None:
                return  # nothing open to update or resolve
            if event == "resolve":
                del open_map[key]
            else:
                rec["last"] = at
        if value is not None and not math.isfinite(value):
            value = None
        severity = DEFAULT_SEVERITY[kind]
        alert = Alert(
            id=rec["id"],
            event=event,
            kind=kind,
            category=kind.category,
            severity=severity,
            scope=scope,
            twin=self.twin,
            opened=rec["opened"],
            resolved=at if event == "resolve" else None,
            at=at,
            value=value,
            threshold=threshold,
            unit=unit,
            explanation=explanation,
            details=details or {},
        )
        out.events.append(alert)
        tags = {"twin": self.twin, "cluster": scope.cluster, "kind": kind.value}
        if scope.site:
            tags["site"] = scope.site
        if scope.meter:
            tags["meter"] = scope.meter
        out.lines.append(
            fields_line(
                "alert_state",
                tags,
                {
                    "open": 0 if event == "resolve" else 1,
                    "severity": SEVERITY_LEVEL[severity],
                    "category": kind.category.value,
                    "value": None if value is None else float(value),
                    "threshold": None if threshold is None else float(threshold),
                    "alert_id": rec["id"],
                    "event": event,
                },
                at,
            )
        )

    # -- sites -------------------------------------------------------------------------------
    def new_site_state(self, cluster: str, site: str, partition: int) -> SiteAlertState:
        return SiteAlertState(cluster, site, partition)

    def process_site(
        self,
        state: SiteAlertState,
        meter: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        tco2e: np.ndarray,
        offset: np.ndarray,
        max_offset: int,
        clock: int = -1,
    ) -> EngineOutput:
        """Fold one site's readings (catalog meter index, ms, value, tCO2e, record offset).

        Records at or below ``state.offset`` were applied before (a replay) and are skipped.
        ``clock`` is the worker's event-time watermark across sites: it lets a meter be found
        silent even when its whole site has gone quiet.
        """
        out = EngineOutput()
        fresh = offset > state.offset
        if max_offset > state.offset:
            state.offset = max_offset
        if fresh.any():
            meter, ts, value, tco2e = meter[fresh], ts[fresh], value[fresh], tco2e[fresh]
            order = np.lexsort((ts, meter))
            meter, ts, value, tco2e = meter[order], ts[order], value[order], tco2e[order]
            keep = self._meter_runs(state, meter, ts, value, out)
            meter, ts, value, tco2e = meter[keep], ts[keep], value[keep], tco2e[keep]
            if ts.size:
                state.wm = max(state.wm, int(ts.max()))
                self._bucket(state, meter, ts, value, tco2e)
        now = max(state.wm, clock)
        self._silence(state, now, out)
        self._close_buckets(state, out)
        self._updates(state.open, Scope(cluster=state.cluster, site=state.site), now, out)
        horizon = state.wm - DAY_MS
        state.bad = [b for b in state.bad if b[1] < 0 or b[1] >= horizon]
        return out

    def _meter_runs(
        self,
        state: SiteAlertState,
        meter: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        out: EngineOutput,
    ) -> np.ndarray:
        """Per meter: drop repeats, find silences and flat runs. Returns the kept mask."""
        cfg = self.cfg
        keep = np.ones(ts.size, dtype=bool)
        if ts.size == 0:
            return keep
        bounds = np.flatnonzero(np.r_[True, meter[1:] != meter[:-1], True])
        specs = self.catalog.specs
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            name = specs[int(meter[a])].meter
            m = state.meters.get(name)
            if m is None:
                m = [-1, math.nan, -1, cfg.expected_interval_s * 1000.0, -1.0]
            last_ts = int(m[0])
            t = ts[a:b]
            v = value[a:b]
            # strictly increasing per meter: equal or earlier = duplicate / out of order
            run_max = np.maximum.accumulate(np.r_[last_ts, t[:-1]])
            ok = t > run_max
            keep[a:b] = ok
            t, v = t[ok], v[ok]
            if t.size == 0:
                continue
            gap_ms = float(m[3])
            if last_ts < 0 and t.size > 1:
                gap_ms = float(np.median(np.diff(t)))  # first sight: learn the interval
            elif last_ts >= 0:
                diffs = np.diff(np.r_[last_ts, t])
                normal = diffs[diffs <= 3 * gap_ms]
                if normal.size:
                    gap_ms = 0.9 * gap_ms + 0.1 * float(np.median(normal))
            scope = Scope(cluster=state.cluster, site=state.site, meter=name)
            silent_ms = int(cfg.silent_intervals * gap_ms)
            flat_ms = int(cfg.flat_intervals * gap_ms)
            key_s = f"{Kind.METER_SILENT.value}|{name}"
            for i in gaps(t, last_ts, silent_ms).tolist():
                before = last_ts if i == 0 else int(t[i - 1])
                if key_s not in state.open:
                    self._open_silent(state, scope, before, silent_ms, out)
                self._resolve_silent(state, scope, int(t[i]), before, out, silent_ms)
            if key_s in state.open and last_ts >= 0 and int(t[0]) - last_ts <= silent_ms:
                # opened by the clock while the gap was shorter than a fresh look shows
                self._resolve_silent(state, scope, int(t[0]), last_ts, out, silent_ms)
            # flat line
            run_start, _changed = flat_runs(t, v, float(m[1]), int(m[2]), cfg.flat_rel_tol)
            cond = (t - run_start) >= flat_ms
            if cfg.flat_ignore_zero:
                cond &= v != 0
            key_f = f"{Kind.METER_FLATLINE.value}|{name}"
            was = key_f in state.open
            prev = np.r_[was, cond[:-1]]
            for i in np.flatnonzero(cond != prev).tolist():
                if cond[i]:
                    opened = int(run_start[i]) + flat_ms
                    self._emit(
                        out,
                        state.open,
                        "open",
                        Kind.METER_FLATLINE,
                        scope,
                        opened,
                        opened=opened,
                        value=float(v[i]),
                        threshold=flat_ms / 60_000,
                        unit="min unchanged",
                        explanation=(
                            f"Meter {name} at site {state.site} has reported exactly {v[i]:g} "
                            f"since {_fmt_time(int(run_start[i]))} ({_fmt_dur(flat_ms)} without "
                            "any change). A live meter always varies a little: it is probably "
                            "stuck or a gateway is repeating its last value. Its readings are "
                            "not trusted and the site's emission alerts pause until it moves."
                        ),
                        details={"run_start": int(run_start[i]), "interval_ms": gap_ms},
                    )
                    state.bad.append([int(run_start[i]), -1])
                else:
                    at = int(t[i])
                    rec = state.open.get(key_f)
                    since = int(rec["opened"]) - flat_ms if rec else at
                    self._emit(
                        out,
                        state.open,
                        "resolve",
                        Kind.METER_FLATLINE,
                        scope,
                        at,
                        value=float(v[i]),
                        threshold=flat_ms / 60_000,
                        unit="min unchanged",
                        explanation=(
                            f"Meter {name} at site {state.site} is moving again "
                            f"({v[i]:g} at {_fmt_time(at)}) after being stuck for "
                            f"{_fmt_dur(at - since)}."
                        ),
                    )
                    self._close_bad(state, at)
            m[0], m[1], m[2], m[3] = int(t[-1]), float(v[-1]), int(run_start[-1]), gap_ms
            state.meters[name] = m
        return keep

    def _open_silent(
        self, state: SiteAlertState, scope: Scope, last: int, silent_ms: int, out: EngineOutput
    ) -> None:
        opened = last + silent_ms
        self._emit(
            out,
            state.open,
            "open",
            Kind.METER_SILENT,
            scope,
            opened,
            opened=opened,
            value=silent_ms / 60_000,
            threshold=silent_ms / 60_000,
            unit="min silent",
            explanation=(
                f"Meter {scope.meter} at site {state.site} has sent nothing since "
                f"{_fmt_time(last)} (allowed: {_fmt_dur(silent_ms)}, "
                f"{self.cfg.silent_intervals:g} intervals). Check the meter, its gateway and "
                "the connector. The site's emission figures are incomplete meanwhile and its "
                "emission alerts pause."
            ),
            details={"last_reading": last},
        )
        state.bad.append([last, -1])

    def _resolve_silent(
        self,
        state: SiteAlertState,
        scope: Scope,
        at: int,
        last: int,
        out: EngineOutput,
        silent_ms: int = 0,
    ) -> None:
        explanation = (
            f"Meter {scope.meter} at site {state.site} is reporting again "
            f"({_fmt_time(at)}) after {_fmt_dur(at - last)} of silence."
        )
        delay = state.seen_at - at if state.seen_at >= 0 else 0
        if silent_ms and delay > silent_ms:
            # the readings of the silence came, only late (a gateway's buffer, a backfill):
            # the twin has restated the windows they belong to
            explanation = (
                f"Meter {scope.meter} at site {state.site} was not silent: its readings from "
                f"{_fmt_time(last)} on arrived late ({_fmt_dur(delay)} after they were "
                "taken), and the twin's figures now include them."
            )
        self._emit(
            out,
            state.open,
            "resolve",
            Kind.METER_SILENT,
            scope,
            at,
            value=(at - last) / 60_000,
            unit="min silent",
            explanation=explanation,
            details={"arrived_late_by_ms": delay} if silent_ms and delay > silent_ms else None,
        )
        self._close_bad(state, at)

    @staticmethod
    def _close_bad(state: SiteAlertState, at: int) -> None:
        open_data = sum(
            1 for k in state.open if k.split("|", 1)[0] in (Kind.METER_SILENT, Kind.METER_FLATLINE)
        )
        if open_data == 0:
            for b in state.bad:
                if b[1] < 0:
                    b[1] = at

    def _silence(self, state: SiteAlertState, now: int, out: EngineOutput) -> None:
        """Meters quiet for longer than allowed at event time ``now``."""
        for name, m in state.meters.items():
            silent_ms = int(self.cfg.silent_intervals * m[3])
            key = f"{Kind.METER_SILENT.value}|{name}"
            if key not in state.open and m[0] >= 0 and now - m[0] > silent_ms:
                scope = Scope(cluster=state.cluster, site=state.site, meter=name)
                self._open_silent(state, scope, int(m[0]), silent_ms, out)

    def _bucket(
        self,
        state: SiteAlertState,
        meter: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        tco2e: np.ndarray,
    ) -> None:
        step = self.cfg.step_ms
        start = ts - ts % step
        late = start < state.closed_until
        state.late += int(late.sum())
        if late.all():
            return
        start, meter, value, tco2e = start[~late], meter[~late], value[~late], tco2e[~late]
        # one pass: group by (bucket, meter)
        key = start // step * np.int64(1 << 24) + meter
        order = np.argsort(key, kind="stable")
        ks = key[order]
        firsts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        t_sum = np.add.reduceat(tco2e[order], firsts)
        v_sum = np.add.reduceat(value[order], firsts)
        counts = np.diff(np.r_[firsts, ks.size])
        specs = self.catalog.specs
        for g, f in enumerate(firsts.tolist()):
            j = int(order[f])
            b = int(start[j])
            name = specs[int(meter[j])].meter
            entry = state.buckets.setdefault(b, [0.0, {}])
            entry[0] += float(t_sum[g])
            mv = entry[1].setdefault(name, [0, 0.0])
            mv[0] += int(counts[g])
            mv[1] += float(v_sum[g])

    def _trusted(self, state: SiteAlertState, start: int, counts: dict[str, list[Any]]) -> bool:
        step = self.cfg.step_ms
        for name, m in state.meters.items():
            if m[0] < start - DAY_MS:
                continue  # decommissioned long ago: do not hold the site hostage
            expected = step / max(m[3], 1.0)
            got = counts.get(name, [0])[0]
            if got < self.cfg.min_coverage * expected - 1e-9:
                return False
        end = start + step
        return all(not (b[0] < end and (b[1] < 0 or b[1] > start)) for b in state.bad)

    def _close_buckets(self, state: SiteAlertState, out: EngineOutput) -> None:
        step = self.cfg.step_ms
        limit = state.wm - self.cfg.grace_s * 1000
        scope = Scope(cluster=state.cluster, site=state.site)
        for start in sorted(state.buckets):
            if start + step > limit:
                break
            tco2e, counts = state.buckets.pop(start)
            state.closed_until = max(state.closed_until, start + step)
            trusted = self._trusted(state, start, counts)
            out.buckets.append(BucketSummary(state.cluster, state.site, start, tco2e, trusted))
            if trusted:
                self._jump(state, start, counts, out)
            self.scope_step(
                state.scope,
                state.open,
                scope,
                self.pathways.get(f"{state.cluster}/{state.site}"),
                start,
                tco2e,
                trusted,
                out,
            )

    def _jump(
        self, state: SiteAlertState, start: int, counts: dict[str, list[Any]], out: EngineOutput
    ) -> None:
        """A meter whose level jumps while the rest of its site does not: the energy balance
        of the site no longer holds, which is a metering fault far more often than physics."""
        cfg = self.cfg
        names = [n for n in counts if n in state.meters]
        if len(names) < 2:
            return
        means = {n: counts[n][1] / counts[n][0] for n in names if counts[n][0]}
        ratios: dict[str, float] = {}
        for n, mean in means.items():
            level = state.meters[n][4]
            if level > 0:
                ratios[n] = mean / level
        at = start + cfg.step_ms
        for n in names:
            m = state.meters[n]
            key = f"{Kind.METER_JUMP.value}|{n}"
            scope = Scope(cluster=state.cluster, site=state.site, meter=n)
            r = ratios.get(n)
            others = [v for k, v in ratios.items() if k != n]
            rest = float(np.median(others)) if others else math.nan
            steady_rest = math.isfinite(rest) and abs(rest - 1) < cfg.jump_ratio / 2
            jumped = r is not None and abs(r - 1) > cfg.jump_ratio and steady_rest
            if jumped and key not in state.open:
                assert r is not None
                self._emit(
                    out,
                    state.open,
                    "open",
                    Kind.METER_JUMP,
                    scope,
                    at,
                    opened=start,
                    value=means[n],
                    threshold=m[4] * (1 + cfg.jump_ratio),
                    unit="mean reading",
                    explanation=(
                        f"Meter {n} at site {state.site} jumped to {means[n]:.4g} "
                        f"({(r - 1) * 100:+.0f}% against its usual {m[4]:.4g}) while the site's "
                        f"other meters stayed within {cfg.jump_ratio * 50:.0f}% of usual: the "
                        "site's energy balance no longer holds. Check the meter's scaling, unit "
                        "or a recent replacement."
                    ),
                    details={"ratio": r, "rest_ratio": rest},
                )
            elif key in state.open and r is not None and abs(r - 1) < cfg.jump_ratio / 2:
                self._emit(
                    out,
                    state.open,
                    "resolve",
                    Kind.METER_JUMP,
                    scope,
                    at,
                    value=means[n],
                    unit="mean reading",
                    explanation=f"Meter {n} at site {state.site} is back in line with its site.",
                )
            if key not in state.open and n in means:
                m[4] = means[n] if m[4] <= 0 else 0.9 * m[4] + 0.1 * means[n]

    # -- emission detectors (site or cluster) ------------------------------------------------
    def scope_step(
        self,
        sc: ScopeState,
        open_map: dict[str, dict[str, Any]],
        scope: Scope,
        pathway: Pathway | None,
        start: int,
        tco2e: float,
        trusted: bool,
        out: EngineOutput,
    ) -> None:
        cfg = self.cfg
        step_h = cfg.step_ms / HOUR_MS
        end = start + cfg.step_ms
        where = f"site {scope.site} ({scope.cluster})" if scope.site else f"cluster {scope.cluster}"
        fields: dict[str, object] = {"tco2e": tco2e, "trusted": trusted}
        if trusted:
            x = tco2e / step_h
            (s,) = shift_scan(sc.shift, np.array([x]), self.shift_cfg)
            fields.update(
                rate_tph=x,
                expected_tph=s.expected,
                sigma_tph=s.sigma,
                z=s.z,
                cusum_hi=s.s_hi,
                cusum_lo=s.s_lo,
                shift_open=int(sc.shift.open),
            )
            if s.event == "open":
                up = s.direction > 0
                pct = (x / s.expected - 1) * 100 if s.expected else math.nan
                self._emit(
                    out,
                    open_map,
                    "open",
                    Kind.EMISSION_SHIFT,
                    scope,
                    end,
                    opened=end,
                    value=x,
                    threshold=s.expected + (1 if up else -1) * cfg.shift_k * s.sigma,
                    unit="tCO2e/h",
                    explanation=(
                        f"Emissions of {where} shifted {'up' if up else 'down'}: "
                        f"{x:.3g} tCO2e/h in the {cfg.step_s // 60}-min interval to "
                        f"{_fmt_time(end)}, against a usual {s.expected:.3g} ± {s.sigma:.2g} "
                        f"tCO2e/h ({pct:+.1f}%). The change has lasted long enough to rule out "
                        f"noise (CUSUM {max(s.s_hi, s.s_lo):.1f} > {cfg.shift_h:g} sigma). "
                        + (
                            "Check which unit's fuel or process flow rose."
                            if up
                            else "Check for a shutdown or a meter reading low."
                        )
                    ),
                    details={"expected": s.expected, "sigma": s.sigma, "z": s.z},
                )
            elif s.event == "resolve":
                self._emit(
                    out,
                    open_map,
                    "resolve",
                    Kind.EMISSION_SHIFT,
                    scope,
                    end,
                    value=x,
                    unit="tCO2e/h",
                    explanation=(
                        f"Emissions of {where} are back at their usual level "
                        f"({x:.3g} against {s.expected:.3g} tCO2e/h) at {_fmt_time(end)}."
                    ),
                )
            elif sc.shift.open:
                rec = open_map.get(f"{Kind.EMISSION_SHIFT.value}|")
                if rec is not None:
                    rec["value"] = x
            sc.hist.append([start, tco2e, step_h])
            year, _ = fractional_year(start)
            if int(sc.ytd[0]) != year:
                sc.ytd = [year, 0.0, 0.0]
            sc.ytd[1] += tco2e
            sc.ytd[2] += step_h
        sc.hist = [h for h in sc.hist if h[0] >= end - DAY_MS]
        if pathway is not None and sc.hist:
            self._pathway(sc, open_map, scope, where, pathway, end, fields, out)
        tags = {"twin": self.twin, "cluster": scope.cluster}
        if scope.site:
            tags["site"] = scope.site
        out.lines.append(fields_line("alert_detector", tags, fields, start))

    def _pathway(
        self,
        sc: ScopeState,
        open_map: dict[str, dict[str, Any]],
        scope: Scope,
        where: str,
        pathway: Pathway,
        end: int,
        fields: dict[str, object],
        out: EngineOutput,
    ) -> None:
        cfg = self.cfg
        h = np.array(sc.hist, dtype=np.float64)
        starts, tco2e, hours = h[:, 0], h[:, 1], h[:, 2]
        year, frac = fractional_year(end)
        pathway_tph = pathway.at(year + frac) / hours_in_year(year)
        fields["pathway_tph"] = pathway_tph
        for kind, window, margin, hold in (
            (Kind.PATHWAY_DRIFT_1H, HOUR_MS, cfg.margin_1h, cfg.drift_for_1h_s),
            (Kind.PATHWAY_DRIFT_24H, DAY_MS, cfg.margin_24h, cfg.drift_for_24h_s),
        ):
            rate, covered = rolling_rate(starts, tco2e, hours, end, window)
            label = "1h" if window == HOUR_MS else "24h"
            enough = covered >= cfg.min_rate_coverage * window / HOUR_MS
            if not enough:
                continue
            fields[f"rate_{label}_tph"] = rate
            limit = pathway_tph * (1 + margin)
            self._latched(
                out,
                sc,
                open_map,
                kind,
                scope,
                end,
                rate,
                limit,
                rate > limit,
                rate < pathway_tph * (1 + margin / 2),
                hold,
                "tCO2e/h",
                lambda rate=rate, limit=limit, label=label, margin=margin, hold=hold: (
                    f"The {label} emission rate of {where} is {rate:.3g} tCO2e/h, "
                    f"{(rate / pathway_tph - 1) * 100:+.1f}% against the pathway's "
                    f"{pathway_tph:.3g} tCO2e/h for {year} (allowed margin "
                    f"{margin * 100:.0f}%), for longer than {_fmt_dur(hold * 1000)}. At this "
                    "rate the site falls behind its reduction target."
                ),
                lambda rate=rate, label=label: (
                    f"The {label} emission rate of {where} is back within its pathway "
                    f"({rate:.3g} against {pathway_tph:.3g} tCO2e/h)."
                ),
            )
        n_h = float(sc.ytd[2])
        rate_24, cov_24 = rolling_rate(starts, tco2e, hours, end, DAY_MS)
        if n_h > 0 and cov_24 >= cfg.min_rate_coverage * 24:
            ytd_rate = float(sc.ytd[1]) / n_h
            projected = projected_year_end(ytd_rate, rate_24, frac, year)
            target = pathway.at(year)
            fields["projected_t"] = projected
            fields["target_t"] = target
            limit = target * (1 + cfg.projection_margin)
            self._latched(
                out,
                sc,
                open_map,
                Kind.PROJECTION_OVER_TARGET,
                scope,
                end,
                projected,
                limit,
                projected > limit,
                projected < target * (1 + cfg.projection_margin / 2),
                cfg.projection_for_s,
                "tCO2e",
                lambda: (
                    f"At the rate of the last 24 h ({rate_24:.3g} tCO2e/h) {where} ends {year} "
                    f"at about {projected:,.0f} tCO2e, {(projected / target - 1) * 100:+.1f}% "
                    f"above its pathway of {target:,.0f} tCO2e for the year."
                ),
                lambda: (
                    f"The year-end projection of {where} is back under its pathway "
                    f"({projected:,.0f} against {target:,.0f} tCO2e)."
                ),
            )

    def _latched(
        self,
        out: EngineOutput,
        sc: ScopeState,
        open_map: dict[str, dict[str, Any]],
        kind: Kind,
        scope: Scope,
        t: int,
        value: float,
        threshold: float,
        raise_: bool,
        clear: bool,
        hold_s: int,
        unit: str,
        open_text: Any,
        resolve_text: Any,
    ) -> None:
        latch = Latch.from_list(sc.latches.get(kind.value, [0, -1, -1, -1]))
        ev = latch.step(t, raise_, clear, hold_s * 1000, self.cfg.clear_for_s * 1000)
        sc.latches[kind.value] = latch.to_list()
        key = f"{kind.value}|"
        if ev is not None and ev.kind == "open":
            self._emit(
                out,
                open_map,
                "open",
                kind,
                scope,
                ev.at,
                opened=ev.at,
                value=value,
                threshold=threshold,
                unit=unit,
                explanation=open_text(),
            )
        elif ev is not None:
            self._emit(
                out,
                open_map,
                "resolve",
                kind,
                scope,
                ev.at,
                value=value,
                threshold=threshold,
                unit=unit,
                explanation=resolve_text(),
            )
        elif key in open_map:
            open_map[key]["value"] = value

    def _updates(
        self, open_map: dict[str, dict[str, Any]], scope: Scope, now: int, out: EngineOutput
    ) -> None:
        """Re-publish long-lasting alerts now and then, so a board shows they still hold."""
        every = self.cfg.update_every_s * 1000
        for key, rec in list(open_map.items()):
            opened = int(rec["opened"])
            # aligned on the opening time, so a replay in other batches updates at the same times
            at = opened + (now - opened) // every * every
            if at <= int(rec["last"]) or at <= opened:
                continue
            kind_s, meter = key.split("|", 1)
            kind = Kind(kind_s)
            sc = Scope(cluster=scope.cluster, site=scope.site, meter=meter)
            value = rec.get("value")
            self._emit(
                out,
                open_map,
                "update",
                kind,
                sc,
                at,
                value=value,
                threshold=rec.get("threshold"),
                explanation=(
                    f"Still open since {_fmt_time(opened)} ({_fmt_dur(at - opened)}): "
                    f"{kind.value} at {sc.label}."
                ),
            )

    # -- clusters ----------------------------------------------------------------------------
    def process_cluster(
        self,
        state: ClusterAlertState,
        summaries: list[list[Any]],
        n_sites: int,
        lag_steps: int = 3,
    ) -> EngineOutput:
        """Fold site bucket summaries ([site, start, tco2e, trusted]) into cluster buckets.

        A cluster bucket closes when all ``n_sites`` sites reported it, or when every site has
        moved ``lag_steps`` past it (a missing site then makes it untrusted), or when the
        cluster's newest bucket is ``cluster_wait_s`` ahead (a site that never reports).
        Summaries are absolute per (site, start), so a replay overwrites instead of adding.
        """
        out = EngineOutput()
        step = self.cfg.step_ms
        for site, start, tco2e, trusted in summaries:
            start = int(start)
            if start < state.closed_until:
                continue
            state.pending.setdefault(start, {})[str(site)] = [float(tco2e), int(trusted)]
            state.wm = max(state.wm, start + step)
            state.site_wm[str(site)] = max(state.site_wm.get(str(site), -1), start + step)
        slowest = min(state.site_wm.values(), default=-1)
        scope = Scope(cluster=state.cluster)
        for start in sorted(state.pending):
            sites = state.pending[start]
            everyone_past = (
                len(state.site_wm) >= n_sites and start + step * (lag_steps + 1) <= slowest
            )
            # a site that never reports must not hold the cluster back for ever
            given_up = start + self.cfg.cluster_wait_s * 1000 <= state.wm
            if len(sites) < n_sites and not everyone_past and not given_up:
                break
            del state.pending[start]
            state.closed_until = start + step
            total = sum(v[0] for v in sites.values())
            trusted = len(sites) >= n_sites and all(v[1] for v in sites.values())
            self.scope_step(
                state.scope,
                state.open,
                scope,
                self.pathways.get(state.cluster),
                start,
                total,
                trusted,
                out,
            )
        return out
