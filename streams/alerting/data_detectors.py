"""Data alerts (``category: data``): a meter whose readings cannot be trusted.

A meter silent or stuck makes its site's buckets untrusted (``SiteAlertState.bad``) until
it reports again, so its fault is told as a data problem and never as an emission change.
"""

from __future__ import annotations

import math

import numpy as np

from streams.alerting.book import AlertBook, fmt_dur, fmt_time
from streams.alerting.detector import Detector, MeterRun, ScopeBucket
from streams.alerting.model import Kind, Scope
from streams.alerting.state import SiteAlertState
from twin.drift import flat_runs, gaps


class MeterSilent(Detector):
    """No reading for ``silent_intervals`` of the meter's interval; resolves at the next."""

    def on_meter(self, run: MeterRun, book: AlertBook) -> None:
        state, t, last_ts = run.site, run.t, run.last_ts
        silent_ms = int(self.cfg.silent_intervals * run.gap_ms)
        for i in gaps(t, last_ts, silent_ms).tolist():
            before = last_ts if i == 0 else int(t[i - 1])
            if not book.is_open(Kind.METER_SILENT, run.name):
                self._open(state, run.scope, before, silent_ms, book)
            self._resolve(state, run.scope, int(t[i]), before, book, silent_ms)
        if (
            book.is_open(Kind.METER_SILENT, run.name)
            and last_ts >= 0
            and int(t[0]) - last_ts <= silent_ms
        ):
            # opened by the clock while the gap was shorter than a fresh look shows
            self._resolve(state, run.scope, int(t[0]), last_ts, book, silent_ms)

    def on_clock(self, site: SiteAlertState, now: int, book: AlertBook) -> None:
        """Meters quiet for longer than allowed at event time ``now``."""
        for name, m in site.meters.items():
            silent_ms = int(self.cfg.silent_intervals * m[3])
            if not book.is_open(Kind.METER_SILENT, name) and m[0] >= 0 and now - m[0] > silent_ms:
                scope = Scope(cluster=site.cluster, site=site.site, meter=name)
                self._open(site, scope, int(m[0]), silent_ms, book)

    def _open(
        self, state: SiteAlertState, scope: Scope, last: int, silent_ms: int, book: AlertBook
    ) -> None:
        opened = last + silent_ms
        book.emit(
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
                f"{fmt_time(last)} (allowed: {fmt_dur(silent_ms)}, "
                f"{self.cfg.silent_intervals:g} intervals). Check the meter, its gateway and "
                "the connector. The site's emission figures are incomplete meanwhile and its "
                "emission alerts pause."
            ),
            details={"last_reading": last},
        )
        state.mark_bad(last)

    def _resolve(
        self,
        state: SiteAlertState,
        scope: Scope,
        at: int,
        last: int,
        book: AlertBook,
        silent_ms: int = 0,
    ) -> None:
        explanation = (
            f"Meter {scope.meter} at site {state.site} is reporting again "
            f"({fmt_time(at)}) after {fmt_dur(at - last)} of silence."
        )
        delay = state.seen_at - at if state.seen_at >= 0 else 0
        arrived_late = bool(silent_ms) and delay > silent_ms
        if arrived_late:
            # the readings of the silence came, only late (a gateway's buffer, a backfill):
            # the twin has restated the windows they belong to
            explanation = (
                f"Meter {scope.meter} at site {state.site} was not silent: its readings from "
                f"{fmt_time(last)} on arrived late ({fmt_dur(delay)} after they were "
                "taken), and the twin's figures now include them."
            )
        book.emit(
            "resolve",
            Kind.METER_SILENT,
            scope,
            at,
            value=(at - last) / 60_000,
            unit="min silent",
            explanation=explanation,
            details={"arrived_late_by_ms": delay} if arrived_late else None,
        )
        state.close_bad(at)


class MeterFlatline(Detector):
    """The same value for ``flat_intervals`` intervals (0 = plant off, ignored)."""

    def on_meter(self, run: MeterRun, book: AlertBook) -> None:
        cfg, state, name, t, v = self.cfg, run.site, run.name, run.t, run.v
        flat_ms = int(cfg.flat_intervals * run.gap_ms)
        run_start, _changed = flat_runs(t, v, run.last_value, run.run_start, cfg.flat_rel_tol)
        cond = (t - run_start) >= flat_ms
        if cfg.flat_ignore_zero:
            cond &= v != 0
        prev = np.r_[book.is_open(Kind.METER_FLATLINE, name), cond[:-1]]
        for i in np.flatnonzero(cond != prev).tolist():
            if cond[i]:
                opened = int(run_start[i]) + flat_ms
                book.emit(
                    "open",
                    Kind.METER_FLATLINE,
                    run.scope,
                    opened,
                    opened=opened,
                    value=float(v[i]),
                    threshold=flat_ms / 60_000,
                    unit="min unchanged",
                    explanation=(
                        f"Meter {name} at site {state.site} has reported exactly {v[i]:g} "
                        f"since {fmt_time(int(run_start[i]))} ({fmt_dur(flat_ms)} without "
                        "any change). A live meter always varies a little: it is probably "
                        "stuck or a gateway is repeating its last value. Its readings are "
                        "not trusted and the site's emission alerts pause until it moves."
                    ),
                    details={"run_start": int(run_start[i]), "interval_ms": run.gap_ms},
                )
                state.mark_bad(int(run_start[i]))
            else:
                at = int(t[i])
                rec = book.open.get(f"{Kind.METER_FLATLINE.value}|{name}")
                since = int(rec["opened"]) - flat_ms if rec else at
                book.emit(
                    "resolve",
                    Kind.METER_FLATLINE,
                    run.scope,
                    at,
                    value=float(v[i]),
                    threshold=flat_ms / 60_000,
                    unit="min unchanged",
                    explanation=(
                        f"Meter {name} at site {state.site} is moving again "
                        f"({v[i]:g} at {fmt_time(at)}) after being stuck for "
                        f"{fmt_dur(at - since)}."
                    ),
                )
                state.close_bad(at)
        run.run_start = int(run_start[-1])


class MeterJump(Detector):
    """A meter whose level jumps while the rest of its site does not: the energy balance of
    the site no longer holds, which is a metering fault far more often than physics."""

    def on_bucket(self, bucket: ScopeBucket, book: AlertBook) -> None:
        state, counts = bucket.site, bucket.counts
        if state is None or counts is None or not bucket.trusted:
            return  # a cluster's bucket, or one the site's data cannot be trusted for
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
        at = bucket.start + cfg.step_ms
        for n in names:
            m = state.meters[n]
            scope = Scope(cluster=state.cluster, site=state.site, meter=n)
            r = ratios.get(n)
            others = [v for k, v in ratios.items() if k != n]
            rest = float(np.median(others)) if others else math.nan
            steady_rest = math.isfinite(rest) and abs(rest - 1) < cfg.jump_ratio / 2
            jumped = r is not None and abs(r - 1) > cfg.jump_ratio and steady_rest
            is_open = book.is_open(Kind.METER_JUMP, n)
            if jumped and not is_open:
                assert r is not None
                book.emit(
                    "open",
                    Kind.METER_JUMP,
                    scope,
                    at,
                    opened=bucket.start,
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
            elif is_open and r is not None and abs(r - 1) < cfg.jump_ratio / 2:
                book.emit(
                    "resolve",
                    Kind.METER_JUMP,
                    scope,
                    at,
                    value=means[n],
                    unit="mean reading",
                    explanation=f"Meter {n} at site {state.site} is back in line with its site.",
                )
            if not book.is_open(Kind.METER_JUMP, n) and n in means:
                m[4] = means[n] if m[4] <= 0 else 0.9 * m[4] + 0.1 * means[n]
