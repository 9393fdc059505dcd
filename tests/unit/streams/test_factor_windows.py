"""A factor revision's change of the hourly windows (``streams.factor_windows``).

Two sites' grid meters and a gas meter read from 30 June 21:00 to 1 July 03:00 UTC, in
instants and intervals (15 minutes, and two hours across midnight, the revision's start);
the French grid factor is revised from 1 July. The offline computation sums every reading's
minute parts by the stated rule (``reference_parts``) into hours twice: with the stored
figures (the previous edition), and with those a worker pricing at the new version would
have stored (new factor for the readings ending in July, old before). Each window plus its
change must equal the second, to the nano-unit, whatever the order of the read-back and its
repeats; the cluster's change is its sites'; a rerun writes the same points.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime

from streams import influx_schema as schema
from streams.factor_windows import HOUR_MS, cluster_changes, hourly_changes, window_change_lines
from streams.meter_vectors import NANO
from streams.windows import NFIG
from tests.unit.streams.linestore import parse_line
from tests.unit.streams.test_intervals import reference_parts
from tests.unit.twin.conftest import make_cluster, meter, site
from twin.factors import FactorLibrary, default_library
from twin.revision import affected_meters, restated_readings, revision_of

FR = "grid:FR:2021"
JULY = int(datetime(2026, 7, 1, tzinfo=UTC).timestamp() * 1000)


def _library() -> FactorLibrary:
    base = default_library()
    body = {"version": "2026-07", "valid_from": date(2026, 7, 1), "gases": {"CO2": 0.040}}
    return base.with_factors([base.get(FR).model_copy(update=body)])


def _figures(mwh_nano: int, per_mwh: float, gas: bool) -> tuple[int, ...]:
    if gas:
        return (mwh_nano, round(mwh_nano * 0.2), 0, 0, 0, round(mwh_nano * 0.2), 0, 0, 0, 0, 0)
    s2 = round(mwh_nano * per_mwh)
    return (mwh_nano, 0, s2, s2, 0, 0, 0, 0, 0, 0, 0)


def _readings(rng: random.Random, old: float) -> list[tuple[str, int, tuple[int, ...], int]]:
    out = []
    for m in ("grid-a", "grid-b", "gas"):
        for k in range(24):  # 15-min intervals, 21:00 to 03:00
            ts = JULY - 3 * HOUR_MS + (k + 1) * 900_000
            out.append((m, ts, _figures(rng.randrange(1, 10**10), old, m == "gas"), ts - 900_000))
        for _ in range(10):  # instants
            ts = JULY - 3 * HOUR_MS + rng.randrange(6 * HOUR_MS)
            out.append((m, ts, _figures(rng.randrange(1, 10**9), old, m == "gas"), -1))
    # two hours across midnight, ending in July: covered, and partly in June's last hour
    long = _figures(987_654_321_123, old, False)
    out.append(("grid-a", JULY + HOUR_MS + 7, long, JULY - HOUR_MS))
    return out


def test_the_hourly_windows_are_restated_exactly_whatever_the_arrival_order() -> None:
    lib = _library()
    rev = revision_of(lib, FR)
    cluster = make_cluster(
        [
            site("a", meter("grid-a", "electricity"), meter("gas", "natural_gas")),
            site("b", meter("grid-b", "electricity")),
        ]
    )
    meters = affected_meters(cluster, lib, rev)
    assert set(meters) == {"grid-a", "grid-b"}
    rng = random.Random(3)
    old_f, new_f = rev.old.gases["CO2"], rev.new.gases["CO2"]
    readings = _readings(rng, old_f)
    site_of = {"grid-a": "a", "gas": "a", "grid-b": "b"}
    carrier_of = {"grid-a": "electricity", "grid-b": "electricity", "gas": "natural_gas"}

    # offline: the windows as stored, and as a worker at the new version would have them
    before: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    after: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    for m, ts, vec, start in readings:
        at_new = list(vec)
        if m != "gas" and ts >= JULY:
            at_new = list(_figures(vec[0], new_f, False))
        for windows, figures in ((before, list(vec)), (after, at_new)):
            for minute, part in reference_parts(start, ts, figures).items():
                acc = windows[(site_of[m], carrier_of[m], minute - minute % HOUR_MS)]
                for k in range(NFIG + 1):
                    acc[k] += part[k]
    assert before != after

    shuffled = readings + rng.sample(readings, 20)  # repeats, as a read-back may hold
    rng.shuffle(shuffled)
    changes = hourly_changes(restated_readings(shuffled, meters, rev))
    assert changes == hourly_changes(restated_readings(readings, meters, rev))
    assert set(changes) <= set(before)
    # June's last hour holds the readings ending at midnight and the long one's June part
    june_a, june_b = (changes[(x, "electricity", JULY - HOUR_MS)][2] for x in "ab")
    assert june_a > june_b > 0
    for key, vec in before.items():
        change = changes.get(key, [0] * (NFIG + 1))
        assert [v + d for v, d in zip(vec[:NFIG], change[:NFIG], strict=True)] == after[key][
            :NFIG
        ], key
    # the cluster's change: its sites', per carrier
    expected: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    for (_site, carrier, hour), vec in changes.items():
        expected[(carrier, hour)] = [
            a + b for a, b in zip(expected[(carrier, hour)], vec, strict=True)
        ]
    assert cluster_changes(changes) == expected
    assert sum(d[2] for d in changes.values()) == sum(after[k][2] - before[k][2] for k in before)

    # the points: exact back from their doubles, and the same on a rerun in another order
    lines = window_change_lines("live", "t", rev, changes)
    assert lines == window_change_lines("live", "t", rev, dict(reversed(list(changes.items()))))
    points = [parse_line(line) for line in lines]
    site_points = [p for p in points if p[1][schema.LEVEL] == "site"]
    assert len(site_points) == len(changes)
    for measurement, tags, fields, ts in site_points:
        assert measurement == schema.WINDOW_RESTATEMENT and tags[schema.FACTOR] == FR
        got = round(float(fields[schema.delta_field(schema.TCO2E_S2_LOCATION)]) * NANO)
        assert got == changes[(tags[schema.SITE], tags[schema.CARRIER], ts)][2]
