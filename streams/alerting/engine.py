"""The alert engine: readings of a site in, alert events and detector statistics out.

No I/O and no clock here: ``AlertEngine.process_site`` folds a batch of one site's priced
readings into that site's ``SiteAlertState`` (one Faust table entry, key = site id, so it
lives on the partition of the site's input) and returns the alert events and InfluxDB
lines the batch caused. ``streams.alerting.stage`` does the I/O in an order that makes
at-least-once delivery exact (see there).

The engine owns what every detector relies on, and the order (``streams.alerting.detector``
says why the order matters): per meter, duplicates and earlier times dropped and the
reading interval learnt; per site, readings summed into ``step_s`` emission buckets
(``np.add.reduceat``); a bucket closes when the site's event time passes its end plus
``grace_s``. A closed bucket is *trusted* when every known meter reported at least
``min_coverage`` of its expected readings and no data alert overlapped it; only trusted
buckets enter the history the emission detectors judge. The detectors themselves are the
small classes of ``data_detectors`` and ``emission_detectors``, listed in ``detectors``.

Cluster-level drift runs the same emission detectors over the sum of the sites' buckets
(``ClusterAlertState``), fed with the ``BucketSummary`` records this stage produces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.alerting.book import AlertBook
from streams.alerting.config import AlertConfig
from streams.alerting.data_detectors import MeterFlatline, MeterJump, MeterSilent
from streams.alerting.detector import Detector, MeterRun, ScopeBucket
from streams.alerting.emission_detectors import (
    DAY_MS,
    HOUR_MS,
    EmissionShift,
    PathwayDrift,
    ProjectionOverTarget,
)
from streams.alerting.model import Scope
from streams.alerting.state import (
    BucketSummary,
    ClusterAlertState,
    EngineOutput,
    ScopeState,
    SiteAlertState,
)
from streams.meter_vectors import MeterVectors
from streams.sink import fields_line
from twin.drift import fractional_year
from twin.targets import Pathway

__all__ = [
    "AlertEngine",
    "BucketSummary",
    "ClusterAlertState",
    "EngineOutput",
    "ScopeState",
    "SiteAlertState",
]


def default_detectors(cfg: AlertConfig) -> tuple[Detector, ...]:
    """Every detector, in the order they are fed (which decides the order of events)."""
    return (
        MeterSilent(cfg),
        MeterFlatline(cfg),
        MeterJump(cfg),
        EmissionShift(cfg),
        PathwayDrift(cfg, HOUR_MS),
        PathwayDrift(cfg, DAY_MS),
        ProjectionOverTarget(cfg),
    )


class AlertEngine:
    """The detectors' loop; one instance serves every site and cluster of a worker."""

    def __init__(
        self,
        catalog: MeterVectors,
        config: AlertConfig | None = None,
        pathways: Mapping[str, Pathway] | None = None,
        twin: str = "live",
        detectors: Sequence[Detector] | None = None,
    ) -> None:
        self.catalog = catalog
        self.cfg = config or AlertConfig()
        #: key "cluster" or "cluster/site" -> pathway (tCO2e per year)
        self.pathways = dict(pathways or {})
        self.twin = twin
        self.detectors = tuple(detectors) if detectors is not None else default_detectors(self.cfg)

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
        book = AlertBook(self.twin, state.open, out)
        fresh = offset > state.offset
        if max_offset > state.offset:
            state.offset = max_offset
        if fresh.any():
            meter, ts, value, tco2e = meter[fresh], ts[fresh], value[fresh], tco2e[fresh]
            order = np.lexsort((ts, meter))
            meter, ts, value, tco2e = meter[order], ts[order], value[order], tco2e[order]
            keep = self._meter_runs(state, meter, ts, value, book)
            meter, ts, value, tco2e = meter[keep], ts[keep], value[keep], tco2e[keep]
            if ts.size:
                state.wm = max(state.wm, int(ts.max()))
                self._bucket(state, meter, ts, value, tco2e)
        now = max(state.wm, clock)
        for detector in self.detectors:
            detector.on_clock(state, now, book)
        self._close_buckets(state, out)
        book.republish(
            Scope(cluster=state.cluster, site=state.site), now, self.cfg.update_every_s * 1000
        )
        horizon = state.wm - DAY_MS
        state.bad = [b for b in state.bad if b[1] < 0 or b[1] >= horizon]
        return out

    def _meter_runs(
        self,
        state: SiteAlertState,
        meter: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        book: AlertBook,
    ) -> np.ndarray:
        """Per meter (sorted by meter, then time): drop repeats, learn the interval, feed
        the detectors. Returns the kept mask."""
        keep = np.ones(ts.size, dtype=bool)
        if ts.size == 0:
            return keep
        bounds = np.flatnonzero(np.r_[True, meter[1:] != meter[:-1], True])
        specs = self.catalog.specs
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            name = specs[int(meter[a])].meter
            m = state.meters.get(name)
            if m is None:
                m = [-1, math.nan, -1, self.cfg.expected_interval_s * 1000.0, -1.0]
            last_ts = int(m[0])
            t = ts[a:b]
            # strictly increasing per meter: equal or earlier = duplicate / out of order
            ok = t > np.maximum.accumulate(np.r_[last_ts, t[:-1]])
            keep[a:b] = ok
            t, v = t[ok], value[a:b][ok]
            if t.size == 0:
                continue
            run = MeterRun(
                state,
                name,
                Scope(cluster=state.cluster, site=state.site, meter=name),
                t,
                v,
                last_ts,
                float(m[1]),
                int(m[2]),
                _learn_interval(float(m[3]), last_ts, t),
            )
            for detector in self.detectors:
                detector.on_meter(run, book)
            m[0], m[1], m[2], m[3] = int(t[-1]), float(v[-1]), run.run_start, run.gap_ms
            state.meters[name] = m
        return keep

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
            self.scope_step(
                state.scope,
                state.open,
                scope,
                self.pathways.get(f"{state.cluster}/{state.site}"),
                start,
                tco2e,
                trusted,
                out,
                site=state,
                counts=counts,
            )

    # -- a closed bucket of a site or a cluster ----------------------------------------------
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
        site: SiteAlertState | None = None,
        counts: dict[str, list[Any]] | None = None,
    ) -> None:
        """A closed bucket: the trusted history moves on, every detector judges the bucket,
        and its statistics become one ``alert_detector`` point."""
        step_h = self.cfg.step_ms / HOUR_MS
        end = start + self.cfg.step_ms
        if trusted:
            sc.hist.append([start, tco2e, step_h])
            year, _ = fractional_year(start)
            if int(sc.ytd[0]) != year:
                sc.ytd = [year, 0.0, 0.0]
            sc.ytd[1] += tco2e
            sc.ytd[2] += step_h
        sc.hist = [h for h in sc.hist if h[0] >= end - DAY_MS]
        bucket = ScopeBucket(
            sc,
            scope,
            start,
            end,
            tco2e,
            trusted,
            {"tco2e": tco2e, "trusted": trusted},
            pathway,
            site,
            counts,
        )
        book = AlertBook(self.twin, open_map, out)
        for detector in self.detectors:
            detector.on_bucket(bucket, book)
        tags = {"twin": self.twin, "cluster": scope.cluster}
        if scope.site:
            tags["site"] = scope.site
        out.lines.append(fields_line("alert_detector", tags, bucket.fields, start))

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
            # summed in site order, not arrival order: the same bits whatever the batching
            # or the input (readings or priced) brought the sites in
            total = sum(sites[s][0] for s in sorted(sites))
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


def _learn_interval(gap_ms: float, last_ts: int, t: np.ndarray) -> float:
    """The meter's reading interval: the median of its first batch, then a slow average of
    its normal gaps (an outage's gap is not an interval)."""
    if last_ts < 0 and t.size > 1:
        return float(np.median(np.diff(t)))  # first sight: learn the interval
    if last_ts >= 0:
        diffs = np.diff(np.r_[last_ts, t])
        normal = diffs[diffs <= 3 * gap_ms]
        if normal.size:
            return 0.9 * gap_ms + 0.1 * float(np.median(normal))
    return gap_ms
