"""Priced readings: what the stream worker computed, for the workers that come after it.

The stream worker's site stage validates and prices every reading; the alerting worker used
to consume ``readings`` again and do both a second time (a sixth to a third of its CPU, see
``bench/bench_alerting.py``, and one Kafka message per envelope). Now the site stage
publishes, per input batch and site, the readings it accepted with their emissions on
``<readings>-priced`` (``priced_topic``), and the alerting worker reads only that. One
message per site and batch, key = site, so a site's messages stay in order on one
partition; nothing else is needed to decode them (no catalog lookup, no pricing).

Columnar and binary (``priced/1``): a little-endian ``u32`` header length, a JSON header
(cluster, site, meter names, the record bookkeeping below), then the columns back to back,
``ts`` i8, ``offset`` i8, ``value`` f8, ``tco2e`` f8, ``meter`` i4 (an index into the header's
meter names, so a reader maps names to its own meter index once per message). Decoding is
``np.frombuffer`` per column: no per-reading work at all.

At-least-once stays exact downstream because each message carries the ``readings`` record
bookkeeping the old path had: each reading's record offset, the highest record offset of the
site in the batch (``max_offset``, rejected records included) and the newest record's Kafka
time (``seen_at``). A stream worker that replays a batch after a crash publishes the same
readings with the same offsets again, and a reader that keeps "offsets applied" per site
skips them, as it skipped replayed ``readings`` records.

What is published is what the twin accepted: readings folded into open windows and late
readings a restatement added; duplicates (the same meter and time again) and replays are
left out, dead letters never get here. A site in the batch with nothing accepted still gets
its message (its offsets and record time moved on). A site whose batch holds more than
``MAX_READINGS`` readings is split on record boundaries (a record is never split, and never
holds more, ``streams.envelope.Limits.max_readings``); its parts are sent in order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson

from streams.envelope import DecodedBatch, Limits, Record
from streams.meter_vectors import NANO, MeterVectors

if TYPE_CHECKING:
    from streams.restate import RestateResult
    from streams.windows import ApplyResult, SiteBatch

SCHEMA = "priced/1"
HEADERS = [("content-type", b"application/octet-stream"), ("clustertwin-schema", SCHEMA.encode())]
#: Readings per message at most (unless one record holds more): ~3.6 MB of columns.
MAX_READINGS = Limits().max_readings
#: (name, dtype) of the columns, in payload order (8-byte columns first: aligned reads).
COLUMNS = (("ts", "<i8"), ("offset", "<i8"), ("value", "<f8"), ("tco2e", "<f8"), ("meter", "<i4"))
_HEAD = struct.Struct("<I")
#: Settings of the topic wherever it is created: a message takes more than a broker's 1 MB.
TOPIC_CONFIG = {"max.message.bytes": str(8 * 1024 * 1024)}

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def priced_topic(readings_topic: str) -> str:
    """The priced topic of a readings topic: one name rule for the writer and the readers."""
    return f"{readings_topic}-priced"


def tco2e_of(figures: np.ndarray) -> np.ndarray:
    """tCO2e of priced readings (``MeterVectors.price`` rows): scope 1 + scope 2
    (location-based), as everywhere in the twin."""
    out: np.ndarray = (figures[:, 1] + figures[:, 2]).astype(np.float64) / NANO
    return out


@dataclass
class PricedGroup:
    """One site's accepted readings of one input batch, with their emissions."""

    cluster: str
    site: str
    max_offset: int  # highest readings-record offset of the site in the batch (-1: none)
    seen_at: int  # Kafka time (ms) of the site's newest record in the batch
    meters: list[str]  # meter names; ``meter`` holds indices into this list
    meter: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    tco2e: np.ndarray
    offset: np.ndarray  # readings-record offset of each reading
    source: int = -1  # the readings partition of those records (-1: not known)

    def __len__(self) -> int:
        return int(self.ts.size)

    def encode(self) -> bytes:
        head = orjson.dumps(
            {
                "schema": SCHEMA,
                "cluster": self.cluster,
                "site": self.site,
                "max_offset": self.max_offset,
                "seen_at": self.seen_at,
                "source": self.source,
                "meters": self.meters,
                "n": len(self),
            }
        )
        head += b" " * (-(_HEAD.size + len(head)) % 8)  # JSON allows it; columns aligned
        cols = [np.ascontiguousarray(getattr(self, name), dtype) for name, dtype in COLUMNS]
        return b"".join([_HEAD.pack(len(head)), head, *(c.tobytes() for c in cols)])

    @classmethod
    def decode(cls, payload: bytes) -> PricedGroup:
        """A message of the priced topic; ``ValueError`` if it is not ``priced/1``."""
        (size,) = _HEAD.unpack_from(payload)
        head = orjson.loads(payload[_HEAD.size : _HEAD.size + size])
        if head.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} message: {head.get('schema')!r}")
        n = int(head["n"])
        at = _HEAD.size + size
        cols: dict[str, np.ndarray] = {}
        for name, dtype in COLUMNS:
            cols[name] = np.frombuffer(payload, dtype, count=n, offset=at)
            at += n * np.dtype(dtype).itemsize
        if at != len(payload):
            raise ValueError(f"{SCHEMA} message of {len(payload)} bytes, expected {at}")
        return cls(
            head["cluster"],
            head["site"],
            int(head["max_offset"]),
            int(head["seen_at"]),
            list(head["meters"]),
            **cols,
            source=int(head.get("source", -1)),
        )

    def meter_index(self, catalog: MeterVectors) -> np.ndarray:
        """Each reading's meter as an index of ``catalog`` (-1: a meter it does not know)."""
        lut = np.array([catalog.index.get(m, -1) for m in self.meters], dtype=np.int64)
        out: np.ndarray = lut[self.meter] if self.meters else np.empty(0, np.int64)
        return out


def group_of(
    catalog: MeterVectors,
    cluster: str,
    site: str,
    meter: np.ndarray,
    ts: np.ndarray,
    value: np.ndarray,
    tco2e: np.ndarray,
    offset: np.ndarray,
    max_offset: int,
    seen_at: int,
    source: int,
) -> PricedGroup:
    """A group from catalog-indexed readings (the meter names travel, not the indices)."""
    codes, inverse = np.unique(meter, return_inverse=True)
    names = [catalog.specs[int(i)].meter for i in codes.tolist()]
    return PricedGroup(
        cluster,
        site,
        max_offset,
        seen_at,
        names,
        inverse.astype(np.int32),
        ts,
        value,
        tco2e,
        offset,
        source,
    )


def split_records(offset: np.ndarray, limit: int = MAX_READINGS) -> list[slice]:
    """Slices of at most ``limit`` readings (unless one record holds more), cut only where
    the record offset changes: a reader's replay check needs a record whole."""
    n = int(offset.size)
    if n <= limit:
        return [slice(0, n)]
    starts = [*np.flatnonzero(offset[1:] != offset[:-1]) + 1, n]
    cuts: list[slice] = []
    first = prev = 0
    for s in starts:  # s: where the next record starts (or the end)
        if s - first > limit and prev > first:
            cuts.append(slice(first, prev))
            first = prev
        prev = int(s)
    cuts.append(slice(first, n))
    return cuts


def groups_from_readings(
    decoded: DecodedBatch, catalog: MeterVectors
) -> list[tuple[int, PricedGroup]]:
    """(record partition, group) per site of a decoded ``readings`` batch, every valid
    reading priced here: what a reader of ``readings`` had to do itself (the alerting
    stage's ``process``, for tests, the bench, or running inside the twin worker)."""
    n = len(decoded.env)
    figures = (
        catalog.price(decoded.row, decoded.value)
        if n
        else np.zeros((0, catalog.factors.shape[1]), np.int64)
    )
    tco2e = tco2e_of(figures)
    # a transfer between sites adds nothing to the cluster, and its tonnes are another
    # site's (``streams.transfers``): the detectors see what they always did, none
    tco2e[catalog.is_transfer[decoded.meter]] = 0.0
    by_site: dict[str, list[int]] = {}
    for i, e in enumerate(decoded.envelopes):
        by_site.setdefault(e.site, []).append(i)
    env_offsets = np.array([e.record.offset for e in decoded.envelopes], dtype=np.int64)
    site_codes = {s: k for k, s in enumerate(by_site)}
    env_code = np.array([site_codes[e.site] for e in decoded.envelopes], dtype=np.int64)
    reading_site = env_code[decoded.env] if n else np.empty(0, np.int64)
    out = []
    for k, (site, env_ids) in enumerate(by_site.items()):
        first = decoded.envelopes[env_ids[0]]
        sel = np.flatnonzero(reading_site == k)
        group = group_of(
            catalog,
            first.cluster,
            site,
            decoded.meter[sel],
            decoded.ts[sel],
            decoded.value[sel],
            tco2e[sel],
            env_offsets[decoded.env[sel]],
            int(max(decoded.envelopes[i].record.offset for i in env_ids)),
            max(decoded.envelopes[i].record.timestamp for i in env_ids),
            first.record.partition,
        )
        out.append((first.record.partition, group))
    return out


class PricedMessages:
    """What the site stage publishes for one batch: call ``add`` per site, send ``messages``."""

    def __init__(self, topic: str | None, catalog: MeterVectors) -> None:
        self.topic = topic
        self.catalog = catalog
        self.messages: list[Message] = []

    def add(
        self,
        cluster: str,
        site: str,
        batch: SiteBatch,
        records: Iterable[Record],
        result: ApplyResult,
        late: RestateResult | None = None,
    ) -> None:
        """The site's accepted readings of the batch (``result.keep``, ``late.added``)."""
        if self.topic is None:
            return
        parts = [(result.keep, result.priced)]
        if late is not None:
            parts.append((late.added, late.priced))
        idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
        tco2e = np.concatenate([tco2e_of(p[1]) for p in parts])
        order = np.argsort(idx, kind="stable")  # arrival order, as the batch had them
        idx, tco2e = idx[order], tco2e[order]
        tco2e[self.catalog.is_transfer[batch.meter[idx]]] = 0.0  # see groups_from_readings
        records = list(records)
        seen_at = max(r.timestamp for r in records)
        offset = batch.offset[idx]
        chunks = split_records(offset)
        for k, part in enumerate(chunks):
            last = k == len(chunks) - 1
            group = group_of(
                self.catalog,
                cluster,
                site,
                batch.meter[idx[part]],
                batch.ts[idx[part]],
                batch.value[idx[part]],
                tco2e[part],
                offset[part],
                batch.max_offset if last else int(offset[part].max()),
                seen_at,
                records[0].partition,
            )
            self.messages.append((self.topic, site.encode(), group.encode(), HEADERS))


def concat(groups: Sequence[PricedGroup]) -> PricedGroup:
    """Several groups of one site as one (in order): the newest bookkeeping wins."""
    if len(groups) == 1:
        return groups[0]
    where: dict[str, int] = {}  # meter name -> its index in the merged names
    codes = []
    for g in groups:
        lut = np.array([where.setdefault(m, len(where)) for m in g.meters], dtype=np.int32)
        codes.append(lut[g.meter] if g.meters else np.empty(0, np.int32))
    names = list(where)
    last = groups[-1]
    return PricedGroup(
        last.cluster,
        last.site,
        max(g.max_offset for g in groups),
        max(g.seen_at for g in groups),
        names,
        np.concatenate(codes),
        np.concatenate([g.ts for g in groups]),
        np.concatenate([g.value for g in groups]),
        np.concatenate([g.tco2e for g in groups]),
        np.concatenate([g.offset for g in groups]),
        last.source,
    )
