"""A ``ReadingStore`` test double over the line protocol the stages write.

It keeps the last line of every series and timestamp (InfluxDB's overwrite rule), so the
unit tests can read back what the restatement would read from InfluxDB and compare the
final figures with an offline computation. The real store is tested on the real server in
tests/integration/streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streams.influx_schema import GAS_FIELDS
from streams.influx_schema import METER_READING as READING_MEASUREMENT
from streams.meter_vectors import NANO
from streams.restate import StoredReading
from streams.stored import SiteWindows, stored_reading
from streams.transfers import key_of_tag
from streams.windows import RESOLUTIONS

_FIGURES = (
    "energy_mwh",
    "tco2e_s1",
    "tco2e_s2_location",
    "tco2e_s2_market",
    "tco2e_s3_upstream",
    *GAS_FIELDS,
)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    """measurement, tags, fields (raw text), timestamp; for lines without spaces in values."""
    head, fields, ts = line.rsplit(" ", 2) if line.count(" ") == 2 else _split(line)
    measurement, *tag_parts = head.split(",")
    tags = dict(p.split("=", 1) for p in tag_parts)
    values = dict(p.split("=", 1) for p in _fields(fields))
    return measurement, tags, values, int(ts)


def _split(line: str) -> tuple[str, str, str]:
    head, rest = line.split(" ", 1)
    fields, ts = rest.rsplit(" ", 1)
    return head, fields, ts


def _fields(text: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def nano(value: str) -> int:
    return round(float(value) * NANO)


class LineStore:
    """What InfluxDB would hold after the lines written so far."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, str]] = {}

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            measurement, tags, fields, ts = parse_line(line)
            key = (measurement, tuple(sorted(tags.items())), ts)
            self.points.setdefault(key, {}).update(fields)

    def series(self, measurement: str) -> list[tuple[dict[str, str], int, dict[str, str]]]:
        return [(dict(t), ts, f) for (m, t, ts), f in self.points.items() if m == measurement]

    async def readings(
        self, twin: str, cluster: str, site: str, spans: Sequence[tuple[int, int]]
    ) -> list[StoredReading]:
        out = []
        for tags, ts, f in self.series(READING_MEASUREMENT):
            if (tags["twin"], tags["cluster"], tags["site"]) != (twin, cluster, site):
                continue
            if any(a <= ts < b for a, b in spans):
                # the field values as InfluxDB's CSV answer gives them: no type suffix, no quotes
                row = {k: v.rstrip("i").strip('"') for k, v in f.items()}
                out.append(stored_reading({**row, "meter": tags["meter"], "t": str(ts * 10**6)}))
        return out

    async def site_windows(
        self, twin: str, cluster: str, res: str, starts: Sequence[int]
    ) -> SiteWindows:
        wanted = set(starts)
        out: SiteWindows = {}
        assert res in RESOLUTIONS
        for tags, ts, f in self.series("site_window"):
            if (tags["twin"], tags["cluster"], tags["res"]) != (twin, cluster, res):
                continue
            if ts in wanted:
                vec = [nano(f.get(k, "0")) for k in _FIGURES] + [int(f["readings"].rstrip("i"))]
                key = key_of_tag(tags["carrier"], tags.get("transfer", ""))
                if key is not None:
                    out.setdefault(ts, {}).setdefault(key, {})[tags["site"]] = vec
        return out
