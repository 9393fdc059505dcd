"""The names the dashboards query are the names the pipeline writes (streams/sink.py)."""

from __future__ import annotations

import pytest

from streams import influx_schema as s
from streams.meter_vectors import NANO
from streams.progress_series import Plan, progress_fields
from streams.sink import window_line, ytd_line
from streams.windows import NFIG, WindowUpdate


def _parse(line: str) -> tuple[str, dict[str, str], set[str]]:
    head, fields, _ts = line.rsplit(" ", 2)
    measurement, *tags = head.split(",")
    return (
        measurement,
        dict(t.split("=", 1) for t in tags),
        {f.split("=", 1)[0] for f in fields.split(",")},
    )


@pytest.mark.parametrize(
    ("level", "measurement", "tags"),
    [
        ("meter", s.METER_WINDOW, {s.TWIN, s.CLUSTER, s.SITE, s.METER, s.CARRIER, s.RES}),
        ("site", s.SITE_WINDOW, {s.TWIN, s.CLUSTER, s.SITE, s.CARRIER, s.RES}),
        ("cluster", s.CLUSTER_WINDOW, {s.TWIN, s.CLUSTER, s.CARRIER, s.RES}),
    ],
)
def test_window_points(level: str, measurement: str, tags: set[str]) -> None:
    update = WindowUpdate(
        level, "dunkirk", "port", "m1", "diesel", "1m", 0, [NANO] * NFIG + [3], True
    )
    got_measurement, got_tags, fields = _parse(window_line("live", update))
    assert got_measurement == measurement
    assert set(got_tags) == tags
    assert fields == {*s.FIGURE_FIELDS, s.COMPLETE}
    assert got_tags[s.RES] in s.RESOLUTIONS


def test_ytd_points() -> None:
    m, tags, fields = _parse(ytd_line("live", "c", "", "coal", 2026, [NANO] * NFIG + [1], 0))
    assert m == s.TWIN_YTD and s.SITE not in tags and s.YEAR in tags
    assert fields == set(s.FIGURE_FIELDS)


class _Flat:
    def at(self, year: float) -> float:
        return 1000.0


def test_progress_fields() -> None:
    fields = progress_fields({"s1": NANO, "s2_location": 0, "s2_market": 0}, Plan(_Flat()), 0)
    used = {
        s.YTD_TCO2E,
        *s.YTD_SCOPE_FIELDS,
        s.YEAR_FRACTION,
        s.PATHWAY_TCO2E_YEAR,
        s.BUDGET_TO_DATE_TCO2E,
        s.YTD_VS_BUDGET_PCT,
        s.PROJECTED_YEAR_END_TCO2E,
        s.PROJECTED_GAP_TCO2E,
        s.ON_TRACK,
    }
    assert used <= set(fields)


def test_stored_reading_and_restatement_points() -> None:
    from streams.sink import reading_line, restatement_line
    from streams.stored import stored_reading
    from tests.unit.streams.linestore import parse_line

    vec = [10**12 + k for k in range(NFIG)]
    line = reading_line("live", "c", "site", "m1", "coal", 5, 1.0, "measured", vec, 3, 7, 2)
    m, tags, raw, ts = parse_line(line)
    assert m == s.METER_READING and {s.TWIN, s.CLUSTER, s.SITE, s.METER, s.CARRIER} == set(tags)
    # four field values: what InfluxDB's write cost is counted in (influx_schema)
    assert set(raw) == {s.VALUE, s.QUALITY, s.READING_ENERGY, s.READING_PACKED}
    # the one reader of the packed field gives back what was written
    row = {k: v.rstrip("i").strip('"') for k, v in raw.items()}
    back = stored_reading({**row, s.METER: tags[s.METER], "t": str(ts * 10**6)})
    assert (back.meter, back.ts, back.vec, back.partition, back.offset, back.start) == (
        "m1",
        5,
        tuple(vec),
        3,
        7,
        2,
    )
    m, tags, fields = _parse(
        restatement_line("live", "c", "site", "coal", 0, [0] * 6, [1] * 6, 2, "late", 9)
    )
    assert m == s.RESTATEMENT and {s.TWIN, s.CLUSTER, s.SITE, s.CARRIER, s.HOUR} <= set(tags)
    assert fields == set(s.RESTATEMENT_FIELDS)
