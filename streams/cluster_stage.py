"""The cluster stage: site window summaries in, cluster windows (the sum over sites) out.

The site stage (``streams.site_stage``) sends, per cluster, the site windows a batch changed
with their absolute figures; this stage keeps them by cluster window and writes the sums.
Because every summary carries absolute figures that overwrite the site's previous ones,
replaying summaries is harmless: the stage needs no delivery bookkeeping of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.delivery import Counters, StateTable, Write, settle
from streams.meter_vectors import MeterVectors
from streams.sink import window_line, ytd_line
from streams.stored import ReadingStore, SiteWindows
from streams.transfers import attributed, cluster_view
from streams.windows import (
    NFIG,
    RESOLUTIONS,
    WindowUpdate,
    cluster_key,
    figures,
    padded,
    parse_cluster_key,
    sum_vecs,
)


def _held(raw: bytes) -> dict[str, dict[str, list[int]]]:
    """A window as the table holds it (carrier -> site -> figures); one stored before the
    gases were kept reads with gases of 0."""
    value: dict[str, dict[str, list[int]]] = orjson.loads(raw)
    return {c: {s: padded(v) for s, v in sites.items()} for c, sites in value.items()}


@dataclass
class _Folded:
    """What a call of ``ClusterStage.process`` gathered before anything is written."""

    table: StateTable
    # key -> (partition, carrier -> site -> figures): every window the summaries reach
    entries: dict[bytes, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    touched: set[bytes] = field(default_factory=set)  # the keys of windows they changed
    partitions: dict[str, int] = field(default_factory=dict)  # cluster -> its partition
    # (cluster, res) -> start -> carrier -> site -> figures, for windows past retention
    late: dict[tuple[str, str], SiteWindows] = field(default_factory=dict)

    def entry(self, key: bytes, partition: int) -> dict[str, Any]:
        """A window's figures by carrier and site, read from the table the first time."""
        if key in self.entries:
            return self.entries[key][1]
        raw = self.table.get(key)
        value: dict[str, Any] = _held(raw) if raw else {}
        self.entries[key] = (partition, value)
        return value


class ClusterStage:
    """Cluster windows = sum over sites; updates carry absolute site figures (overwrite).

    A site's figures for a window replace the previous ones, so replaying summaries is
    harmless. Table key: ``cluster|res|start`` (and ``cluster|ytd|year``), all on the
    partition of the cluster's summaries.
    """

    def __init__(
        self,
        catalog: MeterVectors,
        table: StateTable,
        write: Write,
        twin: str,
        retention_ms: int,
        on_late: Callable[[str, str, int], None] | None = None,
        store: ReadingStore | None = None,
    ) -> None:
        self.catalog = catalog
        self.table = table
        self.write = write
        self.twin = twin
        self.retention_ms = retention_ms
        # where the windows past retention are read back to be restated (None: dropped)
        self.store = store
        self.counters = Counters()
        self.on_late = on_late
        self._wm: dict[str, int] = {}
        self._index: dict[str, set[bytes]] | None = None

    def _keys_of(self, cluster: str) -> set[bytes]:
        if self._index is None:
            self._index = defaultdict(set)
            for key in self.table.all_keys():
                c, res, start = parse_cluster_key(key)
                self._index[c].add(key)
                if res in RESOLUTIONS:
                    self._wm[c] = max(self._wm.get(c, -1), start + RESOLUTIONS[res])
        return self._index[cluster]

    def reset_index(self) -> None:
        """Forget the key index (partitions moved in a rebalance)."""
        self._index = None
        self._wm.clear()

    async def process(self, messages: Sequence[tuple[int, bytes]]) -> None:
        """``messages``: (partition, payload) of cluster summaries, in order."""
        folded = _Folded(self.table)
        for partition, payload in messages:
            self._fold(folded, partition, orjson.loads(payload))
        lines = self._changed_lines(folded)
        # windows past retention: final point, then forget
        final, evict = self._retire(folded)
        lines.extend(final)
        lines.extend(await self._restated(folded.late))
        if lines:
            await self.write(lines)
            self.counters.points += len(lines)
        await self._put_windows(folded, evict)

    def _fold(self, folded: _Folded, partition: int, body: dict[str, Any]) -> None:
        """Put one summary's site figures into the cluster windows they belong to; a window
        past retention the stage no longer holds is set aside to be restated."""
        cluster = body["cluster"]
        folded.partitions[cluster] = partition
        keys = self._keys_of(cluster)
        wm = self._wm.get(cluster, -1)
        for site, data in body["sites"].items():
            for row in data["sw"]:
                carrier, res, start = row[0], row[1], int(row[2])
                key = cluster_key(cluster, res, start)
                end = start + RESOLUTIONS[res]
                if key not in keys and key not in folded.entries and end + self.retention_ms <= wm:
                    # past retention: restated from the stored site windows below
                    self.counters.cluster_late_updates += 1
                    if self.on_late:
                        self.on_late(cluster, res, start)
                    folded.late.setdefault((cluster, res), {}).setdefault(start, {}).setdefault(
                        carrier, {}
                    )[site] = padded(row[3 : 3 + NFIG + 1])
                    continue
                e = folded.entry(key, partition)
                e.setdefault(carrier, {})[site] = padded(row[3 : 3 + NFIG + 1])
                folded.touched.add(key)
                wm = max(wm, end)
            for row in data.get("ytd", []):
                year, carrier = int(row[0]), row[1]
                key = cluster_key(cluster, "ytd", year)
                e = folded.entry(key, partition)
                e.setdefault(carrier, {})[site] = padded(row[2 : 2 + NFIG + 1])
                folded.touched.add(key)
        self._wm[cluster] = wm

    def _changed_lines(self, folded: _Folded) -> list[str]:
        """The points of every cluster window and year to date the summaries changed."""
        lines: list[str] = []
        for key in folded.touched:
            cluster, res, start = parse_cluster_key(key)
            _, value = folded.entries[key]
            for carrier, sites in cluster_view(value).items():
                total = sum_vecs(sites.values())
                if res == "ytd":
                    ts = max(self._wm.get(cluster, 0) - 1, 0)
                    ts -= ts % RESOLUTIONS["1h"]
                    lines.append(ytd_line(self.twin, cluster, "", carrier, start, total, ts))
                else:
                    lines.append(
                        window_line(
                            self.twin,
                            WindowUpdate(
                                "cluster", cluster, "", "", carrier, res, start, total, False
                            ),
                        )
                    )
        return lines

    def _retire(self, folded: _Folded) -> tuple[list[str], list[tuple[bytes, int]]]:
        """The final points of the windows now past retention, and their keys to delete."""
        lines: list[str] = []
        evict: list[tuple[bytes, int]] = []
        for cluster, partition in folded.partitions.items():
            wm = self._wm.get(cluster, -1)
            prefix = cluster.encode() + b"|"
            candidates = self._keys_of(cluster) | {
                k for k in folded.touched if k.startswith(prefix)
            }
            for key in candidates:
                c, res, start = parse_cluster_key(key)
                if c != cluster or res not in RESOLUTIONS:
                    continue
                if start + RESOLUTIONS[res] + self.retention_ms <= wm:
                    if key in folded.entries:
                        value = folded.entries[key][1]
                    else:
                        raw = self.table.get(key)
                        if raw is None:
                            continue
                        value = _held(raw)
                    for carrier, sites in cluster_view(value).items():
                        lines.append(
                            window_line(
                                self.twin,
                                WindowUpdate(
                                    "cluster",
                                    cluster,
                                    "",
                                    "",
                                    carrier,
                                    res,
                                    start,
                                    sum_vecs(sites.values()),
                                    True,
                                ),
                            )
                        )
                    evict.append((key, partition))
        return lines, evict

    async def _put_windows(self, folded: _Folded, evict: list[tuple[bytes, int]]) -> None:
        """Put the changed windows in the table and delete the retired ones (after their
        points are written: a crash in between rewrites the same points)."""
        evicted = {k for k, _ in evict}
        futures: list[Awaitable[Any] | None] = []
        for key in folded.touched:
            if key in evicted:
                continue
            partition, value = folded.entries[key]
            futures.append(self.table.put(key, orjson.dumps(value), partition))
            c = parse_cluster_key(key)[0]
            self._keys_of(c).add(key)
        for key, partition in evict:
            futures.append(self.table.delete(key, partition))
            self._keys_of(parse_cluster_key(key)[0]).discard(key)
        await settle(futures)

    async def _restated(self, late: dict[tuple[str, str], SiteWindows]) -> list[str]:
        """Cluster windows past retention that a site restated: the sum of every site's
        stored window (the restating site's own figures as it sent them), written final."""
        lines: list[str] = []
        if self.store is None:
            return lines
        for (cluster, res), by_start in late.items():
            stored = await self.store.site_windows(self.twin, cluster, res, sorted(by_start))
            for start, carriers in by_start.items():
                merged = stored.get(start, {})
                for carrier, sites in carriers.items():
                    merged.setdefault(carrier, {}).update(sites)
                wanted = set(cluster_view(carriers))
                for carrier, sites in cluster_view(merged).items():
                    if carrier not in wanted:
                        continue
                    total = sum_vecs(sites.values())
                    u = WindowUpdate("cluster", cluster, "", "", carrier, res, start, total, True)
                    lines.append(window_line(self.twin, u))
        return lines

    def held(self, cluster: str, res: str) -> dict[int, dict[str, dict[str, list[int]]]]:
        """Every window of ``res`` (or year to date, ``"ytd"``) the stage holds for
        ``cluster``, by start (or year): carrier -> site -> nano-unit figures."""
        out: dict[int, dict[str, dict[str, list[int]]]] = {}
        for key in list(self._keys_of(cluster)):
            _, r, start = parse_cluster_key(key)
            if r != res:
                continue
            raw = self.table.get(key)
            if raw is not None:
                out[start] = _held(raw)
        return out

    def twin_json(self, cluster: str) -> dict[str, Any]:
        """The live cluster twin: latest open windows per resolution and year-to-date."""
        out: dict[str, Any] = {"cluster": cluster, "windows": {}, "year_to_date": {}}
        latest: dict[str, int] = {}
        for key in self._keys_of(cluster):
            _, res, start = parse_cluster_key(key)
            if res in RESOLUTIONS:
                latest[res] = max(latest.get(res, -1), start)
        for res, start in sorted(latest.items()):
            raw = self.table.get(cluster_key(cluster, res, start))
            if raw is None:
                continue
            value = _held(raw)
            counted = cluster_view(value)
            out["windows"][res] = {
                "start": start,
                "by_carrier": {c: figures(sum_vecs(s.values())) for c, s in counted.items()},
                "total": figures(sum_vecs(v for s in counted.values() for v in s.values())),
                "sites_reporting": sorted({site for s in value.values() for site in s}),
            }
        for key in self._keys_of(cluster):
            _, res, year = parse_cluster_key(key)
            if res != "ytd":
                continue
            raw = self.table.get(key)
            if raw is None:
                continue
            value = _held(raw)
            counted, views = cluster_view(value), attributed(value)
            out["year_to_date"][str(year)] = {
                "total": figures(sum_vecs(v for s in counted.values() for v in s.values())),
                "by_carrier": {c: figures(sum_vecs(s.values())) for c, s in counted.items()},
                # each site's own view: transfers credit the sender, charge the receiver
                "by_site": {
                    site: figures(sum_vecs(s[site] for s in views.values() if site in s))
                    for site in sorted({x for s in views.values() for x in s})
                },
            }
        return out
