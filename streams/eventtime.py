"""The event-time clock that decides when a silent site's windows close and when a meter
is silent: one rule for the twin worker and the alerting worker.

A replay of last week at 60x, a backfill and a catch-up after an outage all deliver
readings far behind the wall clock; judged by the wall clock every one of them would be
late and every meter silent. Judged by event time alone, a cluster that stops entirely
would never be found silent. So the clock of a cluster is the newest reading time of its
sites (its frontier), or, when that is further on, the wall clock less the lag its most
current site showed when it last spoke (the record's Kafka time minus its newest reading):
a live cluster's clock is the wall clock, a replay's runs at the replay's own pace, and a
replay that pauses sees time pass no faster than the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable


def cluster_clocks(sites: Iterable[tuple[str, int, int]], now_ms: int) -> dict[str, int]:
    """Per cluster, the event-time clock: ``sites`` are (cluster, watermark, seen_at)
    with ``seen_at`` the Kafka time of the site's newest record (-1: not known)."""
    frontier: dict[str, int] = {}
    lag: dict[str, int] = {}
    for cluster, wm, seen_at in sites:
        if wm < 0:
            continue
        frontier[cluster] = max(frontier.get(cluster, -1), wm)
        if seen_at >= 0:
            behind = max(seen_at - wm, 0)
            lag[cluster] = min(lag.get(cluster, behind), behind)
    clocks: dict[str, int] = {}
    for cluster, newest in frontier.items():
        clock = newest if cluster not in lag else max(newest, now_ms - lag[cluster])
        clocks[cluster] = min(clock, now_ms)
    return clocks
