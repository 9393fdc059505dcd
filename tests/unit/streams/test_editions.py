"""The current edition: what the factor restatements change of progress and of the history.

A site's year to date of 1 t scope 1 and 2 t scope 2 (location) has been restated by
+0.5 t of scope 2 (a grid factor revision). Its progress against a plan counting scopes 1
and 2 must then say 3.5 t, the change 0.5 t, and the budget share and projection of 3.5 t;
against a scope 1 plan, nothing changes. The cluster's progress takes every site's change.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from streams import influx_schema as s
from streams.editions import YtdChanges, ytd_changes
from streams.meter_vectors import NANO
from streams.progress_series import Plan, ProgressWriter, progress_fields, year_fraction
from streams.webview import queries
from streams.windows import NFIG, SiteState
from tests.unit.streams.linestore import parse_line

JULY_2026 = 1_782_864_000_000  # 2026-07-01T00:00Z


class _Flat:
    def at(self, year: float) -> float:
        return 10.0


def _row(cluster: str, site: str, year: int, s1: float, s2l: float, s2m: float) -> dict[str, str]:
    return {
        s.CLUSTER: cluster,
        s.SITE: site,
        s.YEAR: str(year),
        s.delta_field(s.TCO2E_S1): repr(s1),
        s.delta_field(s.TCO2E_S2_LOCATION): repr(s2l),
        s.delta_field(s.TCO2E_S2_MARKET): repr(s2m),
    }


def test_the_restatements_are_summed_per_site_and_per_cluster_and_year() -> None:
    rows = [
        _row("d", "steel", 2026, 0.0, 0.5, 0.25),
        _row("d", "steel", 2026, 0.0, 0.000000001, 0.0),  # a second revision of the year
        _row("d", "port", 2026, 0.0, -0.1, -0.1),
        _row("d", "port", 2025, 0.0, 1.0, 1.0),
    ]
    got = ytd_changes(rows)
    assert got[("d", "steel", 2026)] == (0, 500_000_001, 250_000_000)
    assert got[("d", "", 2026)] == (0, 400_000_001, 150_000_000)
    assert got[("d", "", 2025)] == got[("d", "port", 2025)] == (0, NANO, NANO)


def test_progress_folds_the_restatement_into_the_year_to_date() -> None:
    ytd = {"s1": NANO, "s2_location": 2 * NANO, "s2_market": 2 * NANO}
    plan = Plan(_Flat(), scopes="1+2")
    previous = progress_fields(ytd, plan, JULY_2026)
    current = progress_fields(ytd, plan, JULY_2026, (0, NANO // 2, NANO // 4))
    _, frac = year_fraction(JULY_2026)
    assert previous[s.YTD_TCO2E] == 3.0 and previous[s.RESTATED_TCO2E] == 0.0
    assert current[s.YTD_TCO2E] == 3.5 and current[s.RESTATED_TCO2E] == 0.5
    assert current[s.YTD_SCOPE_FIELDS[2]] == 2.25
    assert current[s.PROJECTED_YEAR_END_TCO2E] == pytest.approx(3.5 / frac)
    assert current[s.YTD_VS_BUDGET_PCT] == pytest.approx(100 * 3.5 / (10 * frac))
    assert current[s.PROJECTED_GAP_TCO2E] == pytest.approx(3.5 / frac - 10)
    scope1 = progress_fields(ytd, Plan(_Flat()), JULY_2026, (0, NANO // 2, 0))
    assert scope1[s.YTD_TCO2E] == 1.0 and scope1[s.RESTATED_TCO2E] == 0.0


def test_the_worker_writes_progress_with_the_changes_it_last_read() -> None:
    state = SiteState("d", "steel", 0, wm=JULY_2026 + 5 * 60_000 + 17)
    state.ytd[(2026, "electricity")] = [0, NANO, 2 * NANO, 2 * NANO] + [0] * (NFIG - 3)
    writer = ProgressWriter(cast(Any, None), "live", plans={("d", "steel"): Plan(_Flat(), "1+2")})
    [before] = writer.site_lines([state])
    writer.changes = {("d", "steel", 2026): (0, NANO // 2, NANO // 2), ("d", "x", 2026): (9, 9, 9)}
    [after] = writer.site_lines([state])
    _, tags, old, ts = parse_line(before)
    _, _, new, ts2 = parse_line(after)
    assert ts == ts2 == JULY_2026 + 5 * 60_000  # the same point: the current edition's
    assert float(old[s.YTD_TCO2E]) == 3.0 and float(new[s.YTD_TCO2E]) == 3.5
    assert float(new[s.RESTATED_TCO2E]) == 0.5 and tags[s.SITE] == "steel"


class _Sink:
    bucket = "b"

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def query(self, flux: str) -> list[dict[str, str]]:
        self.calls += 1
        assert s.FACTOR_RESTATEMENT in flux and 'r.twin == "live"' in flux
        if self.fail:
            raise OSError("down")
        return [_row("d", "steel", 2026, 0.0, 0.5, 0.5)]


def test_the_worker_rereads_the_restatements_now_and_then_and_keeps_them_if_influx_fails() -> None:
    sink = _Sink()
    changes = YtdChanges(cast(Any, sink), "live", every_s=0.0)
    known = asyncio.run(changes.refresh())
    assert known[("d", "", 2026)] == (0, NANO // 2, NANO // 2)
    sink.fail = True
    assert asyncio.run(changes.refresh()) == known and sink.calls == 2
    slow = YtdChanges(cast(Any, sink), "live", every_s=3600.0)
    sink.fail = False
    asyncio.run(slow.refresh())
    asyncio.run(slow.refresh())
    assert sink.calls == 3  # once an hour at most


def test_the_history_adds_the_restated_change_to_its_hours() -> None:
    rows = [
        {"_time": "2026-07-01T00:00:00Z", "_value": "30"},
        {"_time": "2026-07-01T03:00:00Z", "_value": "60"},
    ]
    changes = [{"_time": "2026-07-01T03:00:00Z", "_value": "1.5"}]
    merged = queries.with_changes(rows, changes)
    series = queries.parse_series(merged, 3 * 3_600_000)
    assert series["tco2e_per_h"] == [10.0, 20.5]
    flux = queries.series_changes_flux("b", "live", "d", "steel", 0, 3_600_000)
    assert s.WINDOW_RESTATEMENT in flux and 'r.site == "steel"' in flux
    assert f'r._field == "{s.delta_field(s.TCO2E)}"' in flux
