"""The site compute: a batch of reading envelopes in, site state and everything to emit out.

``SiteStage`` turns a batch into site state, InfluxDB points, dead letters, late readings and
per-site window summaries for the cluster stage (``streams.cluster_stage``). It computes in
memory (``prepare``) and stores in the order ``streams.delivery`` explains (``commit``), so
the worker can overlap the two.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from streams.delivery import (
    Counters,
    OffsetCursors,
    PreparedBatch,
    Send,
    StaleBatch,
    StateTable,
    Topics,
    Write,
    cursor_key,
    settle,
)
from streams.envelope import QUALITY_NAMES, Limits, Record, Reject, decode_batch
from streams.eventtime import cluster_clocks
from streams.meter_vectors import MeterVectors
from streams.priced import PricedMessages
from streams.restate import RestateResult, StoredReading, hour_spans, restate
from streams.sink import (
    quality_fields,
    reading_line,
    restatement_line,
    window_lines,
    ytd_lines,
)
from streams.stored import ReadingStore
from streams.windows import (
    RESOLUTIONS,
    ApplyResult,
    SiteBatch,
    SiteState,
    WindowUpdate,
    apply_batch,
    by_quality,
    close_windows,
    forget_fills,
    read_back_extent,
)


class SiteStage:
    """Validates, prices and windows a batch of records, per site, keyed by site name.

    A site's state (its open windows, year to date, last offsets) lives in ``table``; the
    partition cursors beside it (``OffsetCursors``) catch records the consumer skipped.
    """

    def __init__(
        self,
        catalog: MeterVectors,
        table: StateTable,
        write: Write,
        send: Send,
        topics: Topics,
        twin: str,
        grace_ms: int,
        limits: Limits | None = None,
        store: ReadingStore | None = None,
        ytd_every_ms: int = 0,
    ) -> None:
        self.catalog = catalog
        self.table = table
        self.write = write
        self.send = send
        self.topics = topics
        self.twin = twin
        self.grace_ms = grace_ms
        self.limits = limits or Limits()
        # a site's twin_ytd points are rewritten at most this often (wall clock; 0: with
        # every batch that changes them); ``SiteState.ytd_since`` holds what waits
        self.ytd_every_ms = ytd_every_ms
        self.wall_ms: Callable[[], int] = _wall_ms  # the clock ``ytd_since`` is told in
        # Where late readings' hours are read back (None: late readings are counted
        # against the batch alone, for unit tests of the live path only).
        self.store = store
        # Awaited before the store is read, so that every earlier batch is stored first
        # (``OverlappedCommits`` sets it to its wait for the running commit).
        self.before_read: Callable[[], Awaitable[None]] | None = None
        # site -> (cluster, watermark, Kafka time of its newest record): what the
        # event-time clock that closes a silent site's windows is made of (``flush_idle``)
        self.clock_inputs: dict[str, tuple[str, int, int]] = {}
        self.counters = Counters()
        # wall-clock time of the last record seen per site (for the idle flush); not state
        self.last_activity: dict[str, float] = {}
        self.first_batch: float | None = None
        self.latencies: deque[float] = deque(maxlen=200_000)
        self.quiet: set[str] = set()  # sites with no open window since their last record
        self._changed: set[str] = set()  # sites stored since the last ``take_changed``
        self.cursors = OffsetCursors(table)
        # site -> (the bytes last put in the table, the same state decoded): saves decoding
        # every site's state on every batch
        self._live: dict[str, tuple[bytes, SiteState]] = {}
        # States of prepared batches not yet stored: site -> (batch seq, state). The next
        # batch starts from these (and from the cursors ``self.cursors`` holds for them).
        self._pending: dict[str, tuple[int, SiteState]] = {}
        self._seq = 0
        # Bumped by ``forget``: a batch prepared before it was computed from states that
        # will never be stored, so its commit is refused.
        self._epoch = 0

    def forget(self) -> None:
        """Drop every state not read from the table (prepared batches, decoded copies).

        For when a commit failed or was cancelled: the batches prepared after it counted
        effects that are not stored. Call it only once no commit is running any more, so
        that what the table holds is final; the unacknowledged records come again.
        """
        self._pending.clear()
        self.cursors.forget()
        self._live.clear()
        self._epoch += 1

    @property
    def idle(self) -> bool:
        """No prepared batch waits to be stored (what ``flush_idle`` needs)."""
        return not self._pending and self.cursors.idle

    def load(self, cluster: str, site: str, partition: int) -> SiteState:
        pending = self._pending.pop(site, None)
        if pending is not None:
            # the newest state, from a batch still being stored; taken out while in use
            return pending[1]
        raw = self.table.get(site.encode())
        if raw is None:
            return SiteState(cluster, site, partition)
        # The state this worker last stored, still decoded, if the table holds exactly the
        # bytes it stored then (``is``: not a changelog recovery or another worker's value).
        # Taken out while in use: a batch that fails half-way leaves nothing behind.
        live = self._live.pop(site, None)
        if live is not None and live[0] is raw:
            return live[1]
        return SiteState.loads(raw)

    def take_changed(self) -> list[SiteState]:
        """The stored states of the sites stored since the last call (the progress points
        to rewrite), decoded once where the stage holds them decoded."""
        out = []
        for site in sorted(self._changed):
            raw = self.table.get(site.encode())
            if raw is None:
                continue
            live = self._live.get(site)
            out.append(live[1] if live is not None and live[0] is raw else SiteState.loads(raw))
        self._changed.clear()
        return out

    def latency_summary(self) -> dict[str, float]:
        if not self.latencies:
            return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        arr = np.fromiter(self.latencies, dtype=np.float64)
        return {
            "n": int(arr.size),
            "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
        }

    cursor_key = staticmethod(cursor_key)

    @property
    def gap_tries(self) -> dict[tuple[int, int], int]:
        """How often each (partition, first missing offset) gap was sought back."""
        return self.cursors.gap_tries

    def cursor(self, partition: int) -> int | None:
        """The next offset to apply on ``partition`` (None: none applied yet)."""
        return self.cursors.get(partition)

    def admit(self, records: Sequence[Record]) -> tuple[list[Record], list[Record], dict[int, int]]:
        """Split a batch into (to apply, to hold back) and the seeks that recover a gap."""
        return self.cursors.admit(records, self.counters)

    async def process(self, records: Sequence[Record]) -> tuple[list[Record], dict[int, int]]:
        """Apply a batch and store it; return the records to leave unacknowledged and the
        seeks to do (``prepare`` then ``commit``, for callers that do not overlap them)."""
        prepared = await self.prepare(records)
        await self.commit(prepared)
        return prepared.held, prepared.seeks

    async def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Compute a batch in memory: new states, points, dead letters, cluster summaries.

        Later batches see its states at once; they are stored by ``commit``. If computing
        fails half-way the states it had taken are gone, so everything unstored is
        forgotten (the caller must let a running commit end before preparing again).

        The event loop runs between sites. A batch takes a few hundred ms of CPU: computed
        in one go, the loop stood still meanwhile, and the previous batch's commit (an
        InfluxDB request per 5,000 lines, then the Kafka sends and table writes, each
        waiting for the one before) advanced one step per batch, and the worker then
        waited for it. Between sites, its next step goes out while this batch is computed.
        Nothing else changes the stage meanwhile: its callers hold the stage's lock, and a
        commit finishing only moves states this batch already sees from pending to live.
        """
        admitted, held, seeks = self.admit(records)
        steps = self._compute(admitted)
        answer: list[StoredReading] | None = None
        try:
            while True:
                with _gc_held_off():
                    ask = steps.send(answer)
                answer = None
                if ask is None:
                    await asyncio.sleep(0)
                else:
                    answer = await self._stored(*ask)
        except StopIteration as done:
            prepared: PreparedBatch = done.value
        except BaseException:
            self.forget()
            raise
        prepared.held, prepared.seeks, prepared.records_in = held, seeks, records
        return prepared

    async def _stored(
        self, cluster: str, site: str, spans: list[tuple[int, int]]
    ) -> list[StoredReading]:
        """The stored readings of a site in ``spans``, once every earlier batch is stored."""
        if self.store is None:
            return []
        if self.before_read is not None:
            await self.before_read()
        return await self.store.readings(self.twin, cluster, site, spans)

    async def _send_in_order(self, messages: list[tuple[str, bytes | None, bytes, Any]]) -> None:
        for message in messages:
            await self.send(*message)

    async def commit(self, prepared: PreparedBatch) -> None:
        """Store a prepared batch: points, messages, then the states and cursors.

        Commits must come in the order the batches were prepared, one at a time.
        """
        if prepared.epoch != self._epoch:
            raise StaleBatch("prepared before a failed commit; its records come again")
        if prepared.lines:
            await self.write(prepared.lines)
        if prepared.messages:
            # a cluster's updates may take several messages: they are sent one after the
            # other, so the cluster stage sees them in the order its watermark assumes
            # (sent at once, a later window could arrive first and make an earlier one of
            # the same batch look past retention)
            updates = [m for m in prepared.messages if m[0] == self.topics.cluster_updates]
            others = [m for m in prepared.messages if m[0] != self.topics.cluster_updates]
            await asyncio.gather(*(self.send(*m) for m in others), self._send_in_order(updates))
        await settle(
            [
                self.table.put(site.encode(), raw, partition)
                for site, (raw, partition, _) in prepared.stored.items()
            ]
        )
        # cursors after the sites: a crash in between replays records the sites skip
        await self.cursors.store(prepared.seq, prepared.cursors)
        self._changed.update(prepared.stored)
        for site, (raw, _, state) in prepared.stored.items():
            pending = self._pending.get(site)
            if pending is not None and pending[0] == prepared.seq:
                # no later batch took it: the table holds the newest state again
                del self._pending[site]
                self._live[site] = (raw, state)
        self.counters.add(prepared.counters)
        self.counters.points += len(prepared.lines)
        self.counters.last_batch_wall = time.time()
        self.counters.last_batch_cpu = time.process_time()
        if prepared.records:
            # production (record CreateTime) -> effects stored: what a dashboard user waits
            done_ms = time.time() * 1000
            self.latencies.extend(done_ms - r.timestamp for r in prepared.records)

    def _compute(
        self, records: Sequence[Record]
    ) -> Generator[
        tuple[str, str, list[tuple[int, int]]] | None, list[StoredReading] | None, PreparedBatch
    ]:
        """New site states and everything to emit for them; pauses (yields None) between
        sites, where the caller may let the event loop run, and yields ``(cluster, site,
        hour spans)`` when late readings need the stored readings of those hours (sent
        back into the generator)."""
        c = Counters()
        c.records += len(records)
        c.batches += 1
        if self.first_batch is None:
            self.first_batch = time.monotonic()
            self.counters.first_batch_wall = time.time()
            self.counters.first_batch_cpu = time.process_time()
        decoded = decode_batch(records, self.catalog, self.limits)
        c.readings += len(decoded.env) + decoded.rejected_readings()
        deadletters: list[Reject] = decoded.deadletters()  # one per record (grouped)
        late: list[Reject] = []
        states: dict[str, SiteState] = {}
        updates: list[WindowUpdate] = []
        lines: list[str] = []
        now = time.monotonic()
        wall_ms = self.wall_ms()

        # group envelopes (and their readings) by site
        env_site = [e.site for e in decoded.envelopes]
        by_site: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(env_site):
            by_site[s].append(i)
        env_offsets = np.array([e.record.offset for e in decoded.envelopes], dtype=np.int64)
        # readings by site: one stable sort (arrival order kept within a site), then slices
        site_codes = {s: k for k, s in enumerate(by_site)}
        env_code = np.array([site_codes[s] for s in env_site], dtype=np.int64)
        reading_site = env_code[decoded.env] if len(decoded.env) else np.empty(0, np.int64)
        by_reading = np.argsort(reading_site, kind="stable")
        bounds = np.searchsorted(reading_site[by_reading], np.arange(len(by_site) + 1))
        priced = PricedMessages(self.topics.priced, self.catalog)
        for k, (site, env_ids) in enumerate(by_site.items()):
            yield None
            first = decoded.envelopes[env_ids[0]]
            state = self.load(first.cluster, site, first.record.partition)
            sel = by_reading[bounds[k] : bounds[k + 1]]
            batch = SiteBatch(
                meter=decoded.meter[sel],
                row=decoded.row[sel],
                ts=decoded.ts[sel],
                value=decoded.value[sel],
                quality=decoded.quality[sel],
                start=decoded.start[sel],
                offset=env_offsets[decoded.env[sel]],
                max_offset=int(max(decoded.envelopes[i].record.offset for i in env_ids)),
            )
            state.seen_at = max(
                state.seen_at, max(decoded.envelopes[i].record.timestamp for i in env_ids)
            )
            result = apply_batch(state, batch, self.catalog, self.grace_ms)
            if state.fills:
                forget_fills(state, self.limits.horizon_start(state.seen_at))
            # the restatement's windows come after (and so overwrite) the live ones
            updates.extend(result.updates)
            late_result = None
            if result.late.size:
                # readings that end up to the longest interval later reach into these hours
                stored = yield (
                    state.cluster,
                    site,
                    _read_back_spans(state, batch, result, self.catalog),
                )
                at = max(decoded.envelopes[i].record.timestamp for i in env_ids)
                late_result = self._restate(state, batch, result, stored or [], at, updates, lines)
                c.late += int(late_result.added.size)
                c.accepted += int(late_result.added.size)
                c.duplicates += int(late_result.duplicates.size)
            c.accepted += result.applied
            c.duplicates += len(result.duplicates)
            records_of_site = (decoded.envelopes[i].record for i in env_ids)
            priced.add(state.cluster, site, batch, records_of_site, result, late_result)
            states[site] = state
            self.last_activity[site] = now
            self.quiet.discard(site)
            self.clock_inputs[site] = (state.cluster, state.wm, state.seen_at)
            if result.applied:
                lines.extend(self._reading_lines(state, batch, result.keep, result.priced))
            if result.applied or late_result is not None:
                if state.ytd_since < 0:
                    state.ytd_since = wall_ms
                lines.extend(self._ytd_due(state, wall_ms))
        c.deadletters += len(deadletters)
        lines.extend(window_lines(self.twin, updates))
        cursors: dict[int, int] = {}
        for r in records:
            cursors[r.partition] = max(cursors.get(r.partition, 0), r.offset + 1)
        prepared = self._prepared(records, lines, deadletters, late, updates, states, cursors, c)
        prepared.messages += priced.messages
        return prepared

    def _prepared(
        self,
        records: Sequence[Record],
        lines: list[str],
        deadletters: list[Reject],
        late: list[Reject],
        updates: list[WindowUpdate],
        states: dict[str, SiteState],
        cursors: dict[int, int],
        counters: Counters,
    ) -> PreparedBatch:
        """Serialise what a commit needs and make the new states the ones to start from."""
        self._seq += 1
        seq = self._seq
        messages = [
            (self.topics.deadletter, r.record.key, r.payload(), r.headers()) for r in deadletters
        ]
        messages += [(self.topics.late, r.record.key, r.payload(), r.headers("late")) for r in late]
        messages += [
            (self.topics.cluster_updates, cluster.encode(), payload, [])
            for cluster, payload in _cluster_payloads(updates, states)
        ]
        stored = {site: (state.dumps(), state.partition, state) for site, state in states.items()}
        for site, state in states.items():
            self._pending[site] = (seq, state)
        self.cursors.prepared(seq, cursors)
        return PreparedBatch(
            self._epoch, seq, records, [], {}, lines, messages, stored, cursors, counters
        )

    def _restate(
        self,
        state: SiteState,
        batch: SiteBatch,
        result: ApplyResult,
        stored: list[StoredReading],
        at: int,
        updates: list[WindowUpdate],
        lines: list[str],
    ) -> RestateResult:
        """Restate what the late readings of ``result`` fall in; their windows go into
        ``updates`` (after the live ones, so they win), their stored form and the record of
        each restated hour (stamped ``at``, the record time) into ``lines``."""
        out = restate(
            state,
            batch,
            result.late,
            result.keep,
            result.priced,
            stored,
            self.catalog,
            result.prev_offset,
        )
        updates.extend(out.updates)
        self._note_latest(state, batch, out.added)
        lines.extend(
            restatement_line(
                self.twin,
                r.cluster,
                r.site,
                r.carrier,
                r.start,
                r.old,
                r.new,
                r.readings_added,
                r.reason,
                at,
            )
            for r in out.restatements
        )
        lines.extend(self._reading_lines(state, batch, out.added, out.priced))
        return out

    def _note_latest(self, state: SiteState, batch: SiteBatch, sel: np.ndarray) -> None:
        """A late reading newer than its meter's latest is the latest: a meter whose readings
        all arrive after their windows closed (a backfill, a historian) still has one."""
        for i in sel.tolist():
            name = self.catalog.specs[int(batch.meter[i])].meter
            t = int(batch.ts[i])
            current = state.last.get(name)
            if current is None or t > current[0]:
                state.last[name] = [t, float(batch.value[i]), int(batch.quality[i])]

    def _reading_lines(
        self,
        state: SiteState,
        batch: SiteBatch,
        sel: np.ndarray,
        priced: np.ndarray,
    ) -> list[str]:
        """The stored form of accepted readings (what a later restatement reads back)."""
        names = self.catalog.specs
        carriers = self.catalog.carrier
        return [
            reading_line(
                self.twin,
                state.cluster,
                state.site,
                names[m].meter,
                carriers[m],
                t,
                v,
                QUALITY_NAMES[q],
                vec,
                state.partition,
                off,
                st,
            )
            for m, t, v, q, off, vec, st in zip(
                batch.meter[sel].tolist(),
                batch.ts[sel].tolist(),
                batch.value[sel].tolist(),
                batch.quality[sel].tolist(),
                batch.offset[sel].tolist(),
                priced.tolist(),
                batch.starts()[sel].tolist(),
                strict=True,
            )
        ]

    def _ytd_due(self, state: SiteState, wall_ms: int) -> list[str]:
        """The site's year-to-date points if a change has waited ``ytd_every_ms`` (and then
        nothing waits any more), else none."""
        if not self._ytd_waits(state, wall_ms):
            return []
        state.ytd_since = -1
        return self._ytd_lines(state)

    def _ytd_lines(self, state: SiteState) -> list[str]:
        """The site's year to date, for every year it holds (a late reading may restate the
        previous one), stamped at the hour of the watermark or the year's last hour."""
        hour = RESOLUTIONS["1h"]
        ts = state.wm - state.wm % hour
        return [
            line
            for (year, key), vec in state.ytd.items()
            for line in ytd_lines(
                self.twin,
                state.cluster,
                state.site,
                key,
                year,
                vec,
                min(ts, _year_end(year) - hour),
                quality_fields(by_quality(state.qytd, year, key)) if ">" not in key else "",
            )
        ]

    async def flush_idle(
        self, idle_s: float, caught_up: Callable[[int], bool], now_ms: int | None = None
    ) -> int:
        """Close the windows of sites that have been silent for ``idle_s`` (wall clock).

        A silent site's watermark moves to its cluster's event-time clock
        (``streams.eventtime``; ``now_ms`` stands for the wall clock), not to the wall
        clock: a replay, a backfill or a catch-up running behind the clock closes windows
        as its own time passes them, not the moment it pauses. Only for partitions whose
        records have all been processed: a site is not idle while its readings wait in
        Kafka (after a restart or an InfluxDB outage).
        """
        if not self.idle:
            raise RuntimeError("flush_idle while a prepared batch waits to be stored")
        now = time.monotonic()
        cap_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if self.first_batch is None or now - self.first_batch < idle_s:
            # Right after a (re)start nothing says which sites are idle and which merely
            # wait in Kafka behind a recovery or a rebalance.
            return 0
        closed_sites = 0
        updates: list[WindowUpdate] = []
        ytd: list[str] = []
        states: dict[str, SiteState] = {}
        clocks = cluster_clocks(self.clock_inputs.values(), cap_ms)
        wall_ms = self.wall_ms()
        for key in list(self.table.all_keys()):
            if key.startswith(b"\x00"):
                continue
            site = key.decode()
            if site in self.quiet or now - self.last_activity.get(site, self.first_batch) < idle_s:
                continue
            raw = self.table.get(key)
            if raw is None:
                continue
            live = self._live.get(site)
            decoded = live[1] if live is not None and live[0] is raw else None
            if (
                decoded is not None
                and not _closes_any(decoded, clocks.get(decoded.cluster, decoded.wm), self)
                and not self._ytd_waits(decoded, wall_ms)
            ):
                # the decoded state says nothing would close: no need to decode it again
                # (with thousands of sites, decoding them all every second is the whole cost)
                if not (decoded.mw or decoded.sw) and decoded.ytd_since < 0:
                    self.quiet.add(site)
                continue
            state = SiteState.loads(raw)
            self.clock_inputs.setdefault(site, (state.cluster, state.wm, state.seen_at))
            if not (state.mw or state.sw or self._ytd_waits(state, wall_ms)):
                if state.ytd_since < 0:
                    self.quiet.add(site)  # nothing open: not worth decoding until it speaks
                continue
            if not caught_up(state.partition):
                continue
            state.wm = max(state.wm, clocks.get(state.cluster, state.wm))
            closing = close_windows(state, self.grace_ms, self.catalog)
            due = self._ytd_due(state, wall_ms)
            if closing or due:
                updates.extend(closing)
                ytd.extend(due)
                states[site] = state
                closed_sites += 1
        if states:
            lines = [*window_lines(self.twin, updates), *ytd]
            await self.commit(self._prepared([], lines, [], [], updates, states, {}, Counters()))
        return closed_sites

    def _ytd_waits(self, state: SiteState, wall_ms: int) -> bool:
        """A change of the site's year to date has waited long enough to be written."""
        return state.ytd_since >= 0 and wall_ms - state.ytd_since >= self.ytd_every_ms


def _wall_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def _gc_held_off() -> Iterator[None]:
    """The cyclic GC is held off while a batch is computed: decoding allocates a container
    per reading and keeps them all alive until the batch is folded, so collections would
    keep re-scanning them for nothing (no cycles are made); they are freed by reference
    counting once computed. (Decoding is the first step of ``_compute``, before any pause.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _closes_any(state: SiteState, now_ms: int, stage: SiteStage) -> bool:
    """Whether moving the watermark to ``now_ms`` would close an open window of ``state``."""
    wm = max(state.wm, now_ms)
    for res, width in RESOLUTIONS.items():
        boundary = ((wm - stage.grace_ms) // width) * width
        if boundary <= state.closed.get(res, -1):
            continue
        if any(k[1] == res and k[2] + width <= boundary for k in state.mw) or any(
            k[1] == res and k[2] + width <= boundary for k in state.sw
        ):
            return True
    return False


def _read_back_spans(
    state: SiteState, batch: SiteBatch, result: ApplyResult, catalog: MeterVectors
) -> list[tuple[int, int]]:
    """The time ranges of stored readings a restatement of ``result.late`` needs: their
    hours, and as much after them as the site's longest interval reaches back."""
    late_start = batch.starts()[result.late]
    if late_start.size and late_start.max() >= 0:
        spans = batch.ts[result.late] - late_start
        state.max_interval = max(state.max_interval, int(spans.max()))
    ts, start = read_back_extent(state, batch, result.late, catalog)  # and replaced fills
    return [(a, b + state.max_interval) for a, b in hour_spans(ts, start)]


def _year_end(year: int) -> int:
    """Epoch ms of 1 January of the year after ``year``."""
    return int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000)


#: Site windows per cluster-update message. A batch that restates weeks (a fresh worker
#: draining a topic's history, a long backfill) changes tens of thousands of windows of one
#: cluster; in one message that was 14 MB, over the producer's request size, and the worker
#: stopped. Each message stands alone (absolute figures), so any split is safe.
CLUSTER_UPDATE_ROWS = 4000


def _cluster_payloads(
    updates: list[WindowUpdate], states: dict[str, SiteState]
) -> list[tuple[str, bytes]]:
    """Per cluster, the site-level windows that changed and each site's year-to-date, in
    messages of at most ``CLUSTER_UPDATE_ROWS`` windows."""
    per: dict[str, dict[str, Any]] = {}
    # a window can change twice in a batch (live, then restated): only its last figures go,
    # so no split of the messages can let an older figure overwrite a newer one
    newest: dict[tuple[str, str, str, str, int], list[Any]] = {}
    for u in updates:
        if u.level == "site":
            newest[(u.cluster, u.site, u.carrier, u.res, u.start)] = [
                u.carrier,
                u.res,
                u.start,
                *u.vec,
                u.complete,
            ]
    for (cluster, site, *_), row in newest.items():
        entry = per.setdefault(cluster, {}).setdefault(site, {"sw": [], "ytd": []})
        entry["sw"].append(row)
    for site, state in states.items():
        if state.ytd:
            entry = per.setdefault(state.cluster, {}).setdefault(site, {"sw": [], "ytd": []})
            entry["ytd"] = [[y, c, *v] for (y, c), v in state.ytd.items()]
            entry["wm"] = state.wm
    out: list[tuple[str, bytes]] = []
    for cluster, sites in per.items():
        chunk: dict[str, Any] = {}
        rows = 0
        for site, data in sites.items():
            sw = data["sw"]
            first = True
            while first or sw:
                room = max(CLUSTER_UPDATE_ROWS - rows, 0)
                if room == 0:
                    out.append((cluster, orjson.dumps({"cluster": cluster, "sites": chunk})))
                    chunk, rows, room = {}, 0, CLUSTER_UPDATE_ROWS
                part = {**data, "sw": sw[:room]} if first else {"sw": sw[:room]}
                sw = sw[room:]
                chunk[site] = part  # a site appears once per message
                rows += len(part["sw"])
                first = False
        if chunk:
            out.append((cluster, orjson.dumps({"cluster": cluster, "sites": chunk})))
    return out
