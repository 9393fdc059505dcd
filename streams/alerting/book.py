"""The open alerts of one scope and the events they cause: the one place alerts are made.

Every detector raises and clears through ``AlertBook.emit``, so what makes replays exact
lives here once: an alert's id is a hash of twin, kind, scope and open time (a replay in
other batches opens the same alert), it opens once and resolves once (de-duplication on
the open map, which is part of the site's or cluster's state), and every event is also an
``alert_state`` point at its event time (a replay overwrites the same point).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from streams.alerting.model import DEFAULT_SEVERITY, SEVERITY_LEVEL, Alert, Kind, Scope, alert_id
from streams.alerting.state import EngineOutput
from streams.sink import fields_line


def fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_dur(ms: float) -> str:
    m = ms / 60_000
    if m < 120:
        return f"{m:.0f} min"
    return f"{m / 60:.1f} h"


def open_key(kind: Kind, meter: str = "") -> str:
    """Key of an open alert in its scope's open map (one per kind and meter)."""
    return f"{kind.value}|{meter}"


class AlertBook:
    """The open map of one site or cluster (``state.open``) and the output of one call."""

    def __init__(self, twin: str, open_map: dict[str, dict[str, Any]], out: EngineOutput) -> None:
        self.twin = twin
        self.open = open_map
        self.out = out

    def is_open(self, kind: Kind, meter: str = "") -> bool:
        return open_key(kind, meter) in self.open

    def emit(
        self,
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
        """Open (once), update or resolve (if open) the alert of ``kind`` at ``scope``."""
        key = open_key(kind, scope.meter)
        rec = self.open.get(key)
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
            self.open[key] = rec
        else:
            if rec is None:
                return  # nothing open to update or resolve
            if event == "resolve":
                del self.open[key]
            else:
                rec["last"] = at
        if value is not None and not math.isfinite(value):
            value = None
        severity = DEFAULT_SEVERITY[kind]
        self.out.events.append(
            Alert(
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
        )
        tags = {"twin": self.twin, "cluster": scope.cluster, "kind": kind.value}
        if scope.site:
            tags["site"] = scope.site
        if scope.meter:
            tags["meter"] = scope.meter
        self.out.lines.append(
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

    def republish(self, scope: Scope, now: int, every_ms: int) -> None:
        """Re-publish long-lasting alerts now and then, so a board shows they still hold."""
        for key, rec in list(self.open.items()):
            opened = int(rec["opened"])
            # aligned on the opening time, so a replay in other batches updates at the same times
            at = opened + (now - opened) // every_ms * every_ms
            if at <= int(rec["last"]) or at <= opened:
                continue
            kind_s, meter = key.split("|", 1)
            kind = Kind(kind_s)
            sc = Scope(cluster=scope.cluster, site=scope.site, meter=meter)
            self.emit(
                "update",
                kind,
                sc,
                at,
                value=rec.get("value"),
                threshold=rec.get("threshold"),
                explanation=(
                    f"Still open since {fmt_time(opened)} ({fmt_dur(at - opened)}): "
                    f"{kind.value} at {sc.label}."
                ),
            )
