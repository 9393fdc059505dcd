"""Emission alerts (``category: emission``), for a site or a whole cluster.

They see trusted buckets only (``ScopeBucket.trusted``; the pathway detectors see the
trusted history ``ScopeState.hist``), so a broken meter never reads as an emission change.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from streams.alerting.book import AlertBook, fmt_dur, fmt_time, open_key
from streams.alerting.config import AlertConfig
from streams.alerting.detector import Detector, ScopeBucket
from streams.alerting.model import Kind
from twin.drift import Latch, projected_year_end, rolling_rate, shift_scan

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class EmissionShift(Detector):
    """The bucket's rate against its EWMA baseline, standardised; two-sided CUSUM."""

    def __init__(self, cfg: AlertConfig) -> None:
        super().__init__(cfg)
        self.shift_cfg = cfg.shift

    def on_bucket(self, bucket: ScopeBucket, book: AlertBook) -> None:
        if not bucket.trusted:
            return
        cfg, sc, scope, end = self.cfg, bucket.sc, bucket.scope, bucket.end
        x = bucket.tco2e / (cfg.step_ms / HOUR_MS)
        (s,) = shift_scan(sc.shift, np.array([x]), self.shift_cfg)
        bucket.fields.update(
            rate_tph=x,
            expected_tph=s.expected,
            sigma_tph=s.sigma,
            z=s.z,
            cusum_hi=s.s_hi,
            cusum_lo=s.s_lo,
            shift_open=int(sc.shift.open),
        )
        where = bucket.where
        if s.event == "open":
            up = s.direction > 0
            pct = (x / s.expected - 1) * 100 if s.expected else math.nan
            book.emit(
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
                    f"{fmt_time(end)}, against a usual {s.expected:.3g} ± {s.sigma:.2g} "
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
            book.emit(
                "resolve",
                Kind.EMISSION_SHIFT,
                scope,
                end,
                value=x,
                unit="tCO2e/h",
                explanation=(
                    f"Emissions of {where} are back at their usual level "
                    f"({x:.3g} against {s.expected:.3g} tCO2e/h) at {fmt_time(end)}."
                ),
            )
        elif sc.shift.open:
            rec = book.open.get(open_key(Kind.EMISSION_SHIFT))
            if rec is not None:
                rec["value"] = x


class _Latched(Detector):
    """A condition that must hold ``hold_s`` to open and clear ``clear_for_s`` to resolve."""

    def _latched(
        self,
        bucket: ScopeBucket,
        book: AlertBook,
        kind: Kind,
        value: float,
        threshold: float,
        raise_: bool,
        clear: bool,
        hold_s: int,
        unit: str,
        open_text: Callable[[], str],
        resolve_text: Callable[[], str],
    ) -> None:
        sc = bucket.sc
        latch = Latch.from_list(sc.latches.get(kind.value, [0, -1, -1, -1]))
        ev = latch.step(bucket.end, raise_, clear, hold_s * 1000, self.cfg.clear_for_s * 1000)
        sc.latches[kind.value] = latch.to_list()
        if ev is not None:
            book.emit(
                "open" if ev.kind == "open" else "resolve",
                kind,
                bucket.scope,
                ev.at,
                opened=ev.at if ev.kind == "open" else None,
                value=value,
                threshold=threshold,
                unit=unit,
                explanation=open_text() if ev.kind == "open" else resolve_text(),
            )
        elif open_key(kind) in book.open:
            book.open[open_key(kind)]["value"] = value


class PathwayDrift(_Latched):
    """The rolling rate over ``window_ms`` above the pathway rate by more than a margin."""

    def __init__(self, cfg: AlertConfig, window_ms: int) -> None:
        super().__init__(cfg)
        self.window_ms = window_ms
        if window_ms == HOUR_MS:
            self.kind, self.label = Kind.PATHWAY_DRIFT_1H, "1h"
            self.margin, self.hold_s = cfg.margin_1h, cfg.drift_for_1h_s
        else:
            self.kind, self.label = Kind.PATHWAY_DRIFT_24H, "24h"
            self.margin, self.hold_s = cfg.margin_24h, cfg.drift_for_24h_s

    def on_bucket(self, bucket: ScopeBucket, book: AlertBook) -> None:
        view = bucket.pathway_view()
        if view is None:
            return
        cfg, window = self.cfg, self.window_ms
        rate, covered = rolling_rate(view.starts, view.tco2e, view.hours, bucket.end, window)
        if covered < cfg.min_rate_coverage * window / HOUR_MS:
            return
        label, margin, hold, where = self.label, self.margin, self.hold_s, bucket.where
        pathway_tph, year = view.pathway_tph, view.year
        bucket.fields[f"rate_{label}_tph"] = rate
        limit = pathway_tph * (1 + margin)
        self._latched(
            bucket,
            book,
            self.kind,
            rate,
            limit,
            rate > limit,
            rate < pathway_tph * (1 + margin / 2),
            hold,
            "tCO2e/h",
            lambda: (
                f"The {label} emission rate of {where} is {rate:.3g} tCO2e/h, "
                f"{(rate / pathway_tph - 1) * 100:+.1f}% against the pathway's "
                f"{pathway_tph:.3g} tCO2e/h for {year} (allowed margin "
                f"{margin * 100:.0f}%), for longer than {fmt_dur(hold * 1000)}. At this "
                "rate the site falls behind its reduction target."
            ),
            lambda: (
                f"The {label} emission rate of {where} is back within its pathway "
                f"({rate:.3g} against {pathway_tph:.3g} tCO2e/h)."
            ),
        )


class ProjectionOverTarget(_Latched):
    """Year to date plus the 24 h rate for the rest of the year, above the year's pathway."""

    def on_bucket(self, bucket: ScopeBucket, book: AlertBook) -> None:
        view = bucket.pathway_view()
        if view is None:
            return
        cfg, sc, where, year = self.cfg, bucket.sc, bucket.where, view.year
        n_h = float(sc.ytd[2])
        rate_24, cov_24 = rolling_rate(view.starts, view.tco2e, view.hours, bucket.end, DAY_MS)
        if not (n_h > 0 and cov_24 >= cfg.min_rate_coverage * 24):
            return
        ytd_rate = float(sc.ytd[1]) / n_h
        projected = projected_year_end(ytd_rate, rate_24, view.frac, year)
        target = view.pathway.at(year)
        bucket.fields["projected_t"] = projected
        bucket.fields["target_t"] = target
        self._latched(
            bucket,
            book,
            Kind.PROJECTION_OVER_TARGET,
            projected,
            target * (1 + cfg.projection_margin),
            projected > target * (1 + cfg.projection_margin),
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
