"""The dead-letter vocabulary: header names and the grouped format, written once.

A dead letter is a Kafka record on the dead-letter topic whose value is the original bytes of
what was refused and whose headers say why. Three shapes, told apart by their headers:

* **a whole message** refused (not JSON, wrong schema, unknown site...): the original bytes,
  ``clustertwin-reason`` its fault;
* **the rejected readings of one envelope** (the stream worker): the original bytes of the
  envelope, once, however many of its readings were refused, and ``clustertwin-dl-rejected``:
  a small JSON object grouping the rejected readings' indices by reason (``RejectedReadings``),
  with exact counts. Replaying the fixed envelope is safe: its good readings are repeats of
  readings already counted (same meter and time) and count once;
* **one refused sample at the edge** (a connector): the sample's own bytes and its reason. A
  connector judges samples one at a time as devices deliver them, so there is no envelope to
  group; ``read`` takes any of the three (and the envelopes of one that workers wrote per
  rejected reading before the grouped format).

The grouped header is bounded (``MAX_REJECTED_BYTES``): past it, index lists are cut and
whole groups only counted, so a 100,000-reading envelope never makes a record Kafka refuses.
Plain typed Python (orjson only), imported by the worker, the edge and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

REASON_HEADER: Final = "clustertwin-reason"
KIND_HEADER: Final = "clustertwin-dl-kind"
REJECTED_HEADER: Final = "clustertwin-dl-rejected"
TRUNCATED_HEADER: Final = "clustertwin-dl-truncated"
#: One rejected reading's position: the per-reading dead letters workers wrote before the
#: grouped format (an envelope of one); still read, so a topic holding both reads as one.
READING_INDEX_HEADER: Final = "clustertwin-dl-reading-index"
#: Longest ``clustertwin-reason`` (bytes): a header, not a document.
MAX_REASON_BYTES: Final = 2000
#: Largest ``clustertwin-dl-rejected`` value: far below the 64 KiB the dead-letter payload
#: leaves for headers (``streams.envelope.MAX_DEADLETTER_BYTES``).
MAX_REJECTED_BYTES: Final = 16 * 1024
FORMAT_VERSION: Final = 1

_POSITION = re.compile(r"^reading \d+(?: \(meter (.*?)\))?: ")


def reason_group(reason: str) -> str:
    """A reading's reason without its position: equal faults of several readings group.

    ``reading 7 (meter 'm1'): unknown meter ...`` -> ``meter 'm1': unknown meter ...``;
    ``reading 7: field 'ts' must be ...`` -> ``field 'ts' must be ...``.
    """
    m = _POSITION.match(reason)
    if m is None:
        return reason
    rest = reason[m.end() :]
    return f"meter {m.group(1)}: {rest}" if m.group(1) is not None else rest


def _runs(indices: Sequence[int]) -> list[int | list[int]]:
    """Sorted indices as runs: ``[a, b]`` for a..b (3 or more), single ints otherwise."""
    out: list[int | list[int]] = []
    i, n = 0, len(indices)
    while i < n:
        j = i
        while j + 1 < n and indices[j + 1] == indices[j] + 1:
            j += 1
        if j - i >= 2:
            out.append([indices[i], indices[j]])
        else:
            out.extend(indices[i : j + 1])
        i = j + 1
    return out


def _expand(runs: Iterable[Any]) -> list[int]:
    out: list[int] = []
    for r in runs:
        if isinstance(r, list):
            out.extend(range(r[0], r[1] + 1))
        else:
            out.append(int(r))
    return out


@dataclass
class RejectedReadings:
    """The rejected readings of one envelope, grouped by reason (position left out).

    ``groups`` keeps every index, in the worker; ``encode`` writes what fits the header.
    """

    readings: int  # readings in the envelope
    groups: dict[str, list[int]] = field(default_factory=dict)

    def add(self, index: int, reason: str) -> None:
        self.groups.setdefault(reason_group(reason), []).append(index)

    @property
    def rejected(self) -> int:
        return sum(len(v) for v in self.groups.values())

    def ordered(self) -> list[tuple[str, list[int]]]:
        """Groups, the most frequent first (ties: first rejected reading first)."""
        return sorted(self.groups.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))

    def summary(self) -> str:
        """The ``clustertwin-reason`` of the envelope: counts and the commonest reasons."""
        parts = [f"{self.rejected} of {self.readings} readings rejected"]
        for reason, idx in self.ordered()[:5]:
            parts.append(f"{len(idx)} x {reason}")
        more = len(self.groups) - 5
        if more > 0:
            parts.append(f"{more} more reasons")
        text = "; ".join(parts)
        return text.encode("utf-8", "replace")[:MAX_REASON_BYTES].decode("utf-8", "ignore")

    def encode(self, limit: int = MAX_REJECTED_BYTES) -> bytes:
        """The ``clustertwin-dl-rejected`` header, at most ``limit`` bytes; counts exact.

        ``{"v", "readings", "rejected", "groups": [{"reason", "count", "indices", "cut"?}],
        "unlisted"}``: ``indices`` are runs (``[a, b]`` = a..b); ``cut`` says the list stops
        early; ``unlisted`` counts the rejected readings of groups left out entirely.
        """
        head = {"v": FORMAT_VERSION, "readings": self.readings, "rejected": self.rejected}
        room = limit - len(orjson.dumps({**head, "groups": [], "unlisted": self.rejected})) - 8
        groups: list[dict[str, Any]] = []
        unlisted = 0
        for reason, idx in self.ordered():
            entry: dict[str, Any] = {"reason": reason[:500], "count": len(idx), "indices": []}
            base = len(orjson.dumps(entry)) + 20  # "cut" and the separator
            if base > room:
                unlisted += len(idx)
                continue
            runs = _runs(sorted(idx))
            size = len(orjson.dumps(runs))
            if base + size > room:
                runs = _fit(runs, room - base)
                entry["cut"] = True
            entry["indices"] = runs
            room -= len(orjson.dumps(entry)) + 1
            groups.append(entry)
        return orjson.dumps({**head, "groups": groups, "unlisted": unlisted})


def _fit(runs: list[int | list[int]], room: int) -> list[int | list[int]]:
    """The leading runs whose JSON fits ``room`` bytes."""
    used, out = 2, []
    for r in runs:
        used += len(orjson.dumps(r)) + 1
        if used > room:
            break
        out.append(r)
    return out


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as any reader sees it, whichever of the three shapes it has."""

    reason: str
    #: reason -> rejected reading indices (listed ones); empty for a whole message or a sample
    groups: Mapping[str, list[int]]
    rejected: int  # readings rejected (0: a whole message or an edge sample)
    readings: int  # readings in the envelope (0 when not an envelope's readings)
    complete: bool  # every rejected index is listed
    truncated_from: int | None  # the original size when the value was cut


def read(headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
    """What a dead letter says, from its headers (worker grouped, worker whole, edge)."""
    h = dict(headers)
    reason = h.get(REASON_HEADER, b"").decode("utf-8", "replace")
    truncated = int(h[TRUNCATED_HEADER]) if TRUNCATED_HEADER in h else None
    raw = h.get(REJECTED_HEADER)
    if raw is None:
        if READING_INDEX_HEADER in h:  # an envelope of one (before the grouped format)
            index = int(h[READING_INDEX_HEADER])
            return DeadLetter(reason, {reason_group(reason): [index]}, 1, 1, True, truncated)
        return DeadLetter(reason, {}, 0, 0, True, truncated)
    body = orjson.loads(raw)
    groups = {g["reason"]: _expand(g["indices"]) for g in body["groups"]}
    complete = body["unlisted"] == 0 and not any(g.get("cut") for g in body["groups"])
    return DeadLetter(reason, groups, body["rejected"], body["readings"], complete, truncated)
