"""What the alert engine remembers, as plain data: one Faust table value per site and cluster.

Kept apart from the detectors so that a detector can be read (and added) without the
serialisation, and the stored layout stays in one place: ``dumps``/``loads`` are the table
format, and a change to them is a change to every running worker's changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.alerting.model import Alert, Kind
from twin.drift import ShiftState

#: The kinds whose open alerts make a site's buckets untrusted (``SiteAlertState.bad``).
DATA_FAULTS = (Kind.METER_SILENT, Kind.METER_FLATLINE)


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
    # partition of the site's ``readings`` records, which ``offset`` counts in (-1: not
    # known); ``partition`` is the one of the input this state is stored beside
    source: int = -1

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
                "rp": self.source,
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
        s.source = d.get("rp", -1)
        return s

    def mark_bad(self, since: int) -> None:
        """A data fault began at ``since``: buckets from then on are not trusted."""
        self.bad.append([since, -1])

    def close_bad(self, at: int) -> None:
        """The open fault intervals end at ``at``, once no data alert of the site is open."""
        open_data = sum(1 for k in self.open if k.split("|", 1)[0] in DATA_FAULTS)
        if open_data == 0:
            for b in self.bad:
                if b[1] < 0:
                    b[1] = at


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
    """What one call of the engine caused: alert events, InfluxDB lines, closed site buckets."""

    events: list[Alert] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    buckets: list[BucketSummary] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.events.extend(other.events)
        self.lines.extend(other.lines)
        self.buckets.extend(other.buckets)
