"""What a detector is: the one interface every alert kind is written against.

The engine (``streams.alerting.engine``) owns the order of a batch, because the detectors'
verdicts depend on each other through the site's state: a data alert makes the site's
buckets untrusted, and only trusted buckets reach the emission detectors. Per site and
batch it feeds every detector, in the order of ``AlertEngine.detectors``:

1. ``on_meter``, once per meter, with the meter's fresh readings (duplicates and earlier
   times already dropped, its reading interval learnt), meter after meter;
2. ``on_clock`` with the site's event time (its watermark, or the cluster's clock when the
   worker checks by the wall clock);
3. ``on_bucket`` for every closed 5-min bucket, of the site, and of a cluster when the
   cluster stage closes one (``MeterRun`` and ``site`` are then absent).

A detector returns nothing: what it finds goes through the ``AlertBook`` it is handed
(alert events and their ``alert_state`` points) and, for bucket statistics, into
``ScopeBucket.fields`` (the ``alert_detector`` point of the bucket). It keeps no state of
its own either: whatever must survive a restart lives in the site or cluster state, so a
detector instance serves every site and cluster of a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.alerting.book import AlertBook
from streams.alerting.config import AlertConfig
from streams.alerting.model import Scope
from streams.alerting.state import ScopeState, SiteAlertState
from twin.drift import fractional_year, hours_in_year
from twin.targets import Pathway


@dataclass
class MeterRun:
    """One meter's fresh readings of a batch, in time order, strictly increasing."""

    site: SiteAlertState
    name: str
    scope: Scope
    t: np.ndarray
    v: np.ndarray
    last_ts: int  # the meter's newest reading before this batch (-1: first sight)
    last_value: float  # its value
    run_start: int  # when the meter's current unchanged run began (the flat-line detector moves it)
    gap_ms: float  # the meter's learnt reading interval, this batch included


@dataclass
class PathwayView:
    """A scope's pathway at a bucket's end and the trusted history to compare with it."""

    pathway: Pathway
    starts: np.ndarray
    tco2e: np.ndarray
    hours: np.ndarray
    year: int
    frac: float
    pathway_tph: float


@dataclass
class ScopeBucket:
    """A closed bucket of a site or a cluster (``site`` is None for a cluster)."""

    sc: ScopeState
    scope: Scope
    start: int
    end: int
    tco2e: float
    trusted: bool
    fields: dict[str, object]
    pathway: Pathway | None = None
    site: SiteAlertState | None = None
    counts: dict[str, list[Any]] | None = None  # site: meter -> [readings, value sum]
    _view: PathwayView | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        scope = self.scope
        return f"site {scope.site} ({scope.cluster})" if scope.site else f"cluster {scope.cluster}"

    def pathway_view(self) -> PathwayView | None:
        """The pathway figures of the bucket, computed once; ``pathway_tph`` goes on the
        bucket's statistics the first time a detector asks (no pathway or no history: None)."""
        if self.pathway is None or not self.sc.hist:
            return None
        if self._view is None:
            h = np.array(self.sc.hist, dtype=np.float64)
            year, frac = fractional_year(self.end)
            pathway_tph = self.pathway.at(year + frac) / hours_in_year(year)
            self.fields["pathway_tph"] = pathway_tph
            self._view = PathwayView(
                self.pathway, h[:, 0], h[:, 1], h[:, 2], year, frac, pathway_tph
            )
        return self._view


class Detector:
    """Base of every detector: each hook is a no-op unless the detector needs it."""

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg

    def on_meter(self, run: MeterRun, book: AlertBook) -> None:
        """A meter's fresh readings of the batch."""

    def on_clock(self, site: SiteAlertState, now: int, book: AlertBook) -> None:
        """The site's event time is ``now`` (after its meters were fed)."""

    def on_bucket(self, bucket: ScopeBucket, book: AlertBook) -> None:
        """A bucket of the site or cluster closed."""
