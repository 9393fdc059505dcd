"""The live view's figures are the twin's figures, in any arrival order, at any size.

The view's numbers are computed from the worker's state (``streams.webview.figures``); here
the worker's real compute path takes readings in the orders reality produces and the view
must show exactly the offline sums. The browser proof on the real stack is
tests/integration/webview.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.influx_schema import SCOPE_FIELDS
from streams.meter_vectors import QUALITIES, MeterSpec, MeterVectors, offline_price
from streams.progress_series import Plan
from streams.webview import figures, queries
from streams.webview.routes import STATIC, ViewSource
from streams.windows import NFIG, QUALITY_NAMES, SiteState, by_quality
from streams.windows import figures as named
from tests.unit.streams.test_arrival_orders import (
    METERS,
    MODES,
    arrive,
    make_readings,
    offline,
    play,
)
from tests.unit.streams.test_pipeline_units import T0, reading

HOUR = 3_600_000
NANO_T = 1_000_000_000  # one tonne in nano-units


class Flat:
    """A pathway that stays at one value: the rate the view must show is that over the year."""

    def __init__(self, value: float) -> None:
        self.value = value

    def at(self, year: float) -> float:
        return self.value


async def _no_rows(flux: str) -> list[dict[str, str]]:
    return []


def view_of(w: Any, plan: Plan | None = None) -> ViewSource:
    def site_state(site: str) -> SiteState | None:
        raw = w.site_table.get(site.encode())
        return None if raw is None else SiteState.loads(raw)

    return ViewSource(
        catalog=w.catalog,
        twin="t",
        bucket="b",
        plans={("c", ""): plan} if plan else {},
        site_state=site_state,
        held=w.clusters.held,
        query=_no_rows,
    )


def _sum(vecs: Any) -> list[int]:
    out = [0] * (NFIG + 1)
    for v in vecs:
        for k in range(NFIG + 1):
            out[k] += v[k]
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 120),
    mode=st.sampled_from(MODES),
    repeats=st.floats(0, 0.3),
    intervals=st.sampled_from([0.0, 0.5]),
)
def test_the_view_shows_the_offline_figures_in_any_arrival_order(
    seed: int, n: int, mode: str, repeats: float, intervals: float
) -> None:
    rng = random.Random(seed)
    readings = make_readings(rng, n, intervals)
    sent = arrive(rng, readings, mode)
    for r in rng.sample(readings, int(len(readings) * repeats)):
        sent.insert(rng.randrange(len(sent) + 1), dict(r))
    w = asyncio.run(play(rng, sent, 30_000, 6 * HOUR))
    want = offline(readings)
    summary = asyncio.run(view_of(w, Plan(Flat(8760.0))).cluster("c"))

    year = summary["ytd"]["year"]
    ytd = [v for k, v in want.items() if k[0] == "twin_ytd" and k[3] == str(year)]
    assert summary["ytd"]["figures"] == named(_sum(ytd))
    assert summary["ytd"]["ytd_tco2e"] == named(_sum(ytd))["tco2e_s1"]  # plan counts scope 1
    for row in summary["by_site"]:
        site_ytd = [v for k, v in want.items() if k[0] == "twin_ytd" and k[1] == row["site"]]
        assert row["ytd_tco2e"] == named(_sum(site_ytd))["tco2e"]
    for row in summary["by_carrier"]:
        c_ytd = [v for k, v in want.items() if k[0] == "twin_ytd" and k[2] == row["carrier"]]
        assert row["ytd_tco2e"] == named(_sum(c_ytd))["tco2e"]

    # "now" is the newest hour with readings that is over by the cluster's clock
    hours = {int(k[3]) for k in want if k[0] == "cluster_window" and k[2] == "1h"}
    ended = [h for h in hours if h + HOUR <= summary["clock_ms"]]
    assert summary["now"]["hour_start"] == (max(ended) if ended else None)
    if ended:
        in_hour = [
            v
            for k, v in want.items()
            if k[0] == "cluster_window" and k[2:] == ("1h", str(max(ended)))
        ]
        assert summary["now"]["tco2e_per_h"] == named(_sum(in_hour))["tco2e"]
        assert summary["now"]["pathway_tco2e_per_h"] == 8760.0 / figures.year_hours(year)

    # each meter's latest reading is its newest, however late it came
    view = view_of(w)
    newest: dict[str, dict[str, Any]] = {}
    for r in readings:
        if r["ts"] > newest.get(r["meter"], {"ts": -1})["ts"]:
            newest[r["meter"]] = r
    for site in ("a", "b"):
        for row in view.site("c", site, 0)["meters"]["rows"]:
            want_r = newest.get(row["meter"])
            assert (row["ts"], row["value"]) == (
                (want_r["ts"], want_r["value"]) if want_r else (None, None)
            ), row

    comp = summary["completeness"]
    latest = {r["meter"] for r in readings}
    assert comp["meters"] == len(METERS) and comp["reporting"] == len(latest)
    assert sum(comp["quality"].values()) == len(latest)


def big_catalog(sites: int, meters: int) -> MeterVectors:
    return MeterVectors(
        [
            MeterSpec(
                f"m{s}-{m:03d}",
                f"s{s}",
                "big",
                "natural_gas",
                {"MWh": (1.0, (0.2, 0.0, 0.0, 0.0))},
                factors=(("scope1", "ipcc:gas", "2006", "IPCC 2006 Table 2.2", "", 0.2),),
            )
            for s in range(sites)
            for m in range(meters)
        ]
    )


def test_a_cluster_of_100_sites_and_5000_meters_stays_small_and_paged() -> None:
    catalog = big_catalog(100, 50)
    clock = T0 + 2 * HOUR
    states = {}
    for s in range(100):
        state = SiteState("big", f"s{s}", 0, wm=clock - s * 60_000, seen_at=clock)
        for m in range(50):
            state.last[f"m{s}-{m:03d}"] = [clock - (s + m) * 60_000, float(m), m % 3]
        states[f"s{s}"] = state
    hour = {"natural_gas": {f"s{s}": [NFIG] * (NFIG + 1) for s in range(100)}}
    facts = figures.ClusterFacts(
        "big", clock, catalog.clusters["big"], states, {T0: hour}, {2026: hour}
    )
    summary = figures.cluster_summary(facts, catalog, "t")
    assert summary["ytd"]["comparable"] is False  # no stored hour known: never "on track"
    body = orjson.dumps(summary)
    assert len(summary["by_site"]) == 100
    assert len(body) < 64_000, len(body)  # what the page gets every second
    comp = summary["completeness"]
    assert comp["meters"] == comp["reporting"] == 5000
    # current: newest reading at most 15 minutes behind the clock
    assert comp["current"] == sum(1 for s in range(100) for m in range(50) if s + m <= 15)
    site = figures.site_summary("big", "s7", states["s7"], catalog, clock, page=0, size=20)
    assert site["meters"]["pages"] == 3 and len(site["meters"]["rows"]) == 20
    last = figures.site_summary("big", "s7", states["s7"], catalog, clock, page=99, size=20)
    assert last["meters"]["page"] == 2 and len(last["meters"]["rows"]) == 10
    assert last["meters"]["rows"][0]["meter"] == "m7-040"
    explained = figures.explain_factors(catalog, "big", "s7")
    assert explained == [
        {
            "scope": "scope1",
            "factor": "ipcc:gas",
            "version": "2006",
            "tco2e_per_unit": 0.2,
            "unit": "MWh",
            "source": "IPCC 2006 Table 2.2",
            "note": "",
            "meters": [f"m7-{m:03d}" for m in range(50)],
        }
    ]


def test_no_chart_gets_more_than_its_points_whatever_the_span() -> None:
    for hours in (1, 24, 168, 24 * 31, 24 * 366):
        every = queries.bucket_every(hours * HOUR)
        assert every % HOUR == 0
        assert hours * HOUR / every <= queries.MAX_POINTS
    rows = [
        {"_time": "2026-01-01T00:00:00Z", "_value": "30"},
        {"_time": "2026-01-01T03:00:00Z", "_value": "60"},
    ]
    series = queries.parse_series(rows, 3 * HOUR)
    assert series["tco2e_per_h"] == [10.0, 20.0]  # a 3-hour bucket's sum is shown per hour
    assert series["t"][1] - series["t"][0] == 3 * 3600


def test_open_alerts_are_the_open_newest_states_most_severe_first() -> None:
    rows = [
        {"open": "1", "severity": "2", "kind": "meter_silent", "_time": "2026-01-01T01:00:00Z"},
        {"open": "0", "severity": "3", "kind": "pathway_drift_1h", "_time": "2026-01-01T02:00:00Z"},
        {
            "open": "1",
            "severity": "3",
            "kind": "pathway_drift_24h",
            "_time": "2026-01-01T00:00:00Z",
        },
    ]
    got = queries.parse_alerts(rows)
    assert [a["kind"] for a in got] == ["pathway_drift_24h", "meter_silent"]
    assert got[0]["severity"] == "critical"


def test_figure_explanations_count_readings_by_quality() -> None:
    rows = [{"q": "measured", "_value": "9"}, {"q": "estimated", "_value": "1"}]
    shares = figures.quality_shares(queries.parse_quality(rows))
    assert shares["readings"] == 10
    assert shares["pct"]["measured"] == 90.0 and shares["pct"]["gap_filled"] == 0.0


def test_flux_string_literals_cannot_be_broken_out_of() -> None:
    flux = queries.series_flux('b"', "t", 'c") |> drop(', None, 0, HOUR)
    assert 'r.cluster == "c\\") |> drop("' in flux
    assert 'bucket: "b\\""' in flux


@pytest.mark.parametrize("name", ["uplot"])
def test_the_vendored_chart_library_is_the_pinned_release(name: str) -> None:
    vendor = STATIC / "vendor"
    manifest = json.loads((vendor / "vendor.json").read_text())["packages"][name]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((vendor / rel).read_bytes()).hexdigest() == digest, rel
    banner = (vendor / "uplot" / "uPlot.iife.min.js").read_text()[:80]
    assert f"(v{manifest['version']})" in banner


def test_the_page_loads_nothing_from_outside_the_worker() -> None:
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "app.js").read_text()
    for text in (html, js):
        assert "http://" not in text and "https://" not in text
    for ref in ("/view/static/vendor/uplot/uPlot.iife.min.js", "/view/static/app.js"):
        assert ref in html
        assert (STATIC / ref.removeprefix("/view/static/")).is_file()
    assert isinstance(Path(STATIC), Path)


def test_a_year_to_date_covering_part_of_the_year_is_not_set_against_the_budget() -> None:
    catalog = big_catalog(1, 1)
    year = 2026
    start = figures.year_start_ms(year)
    clock = start + 300 * 24 * HOUR
    state = SiteState("big", "s0", 0, wm=clock, seen_at=clock)
    held = {"natural_gas": {"s0": [0, NANO_T, *[0] * (NFIG - 2), 1]}}
    plan = Plan(Flat(365 * 24.0))

    def ytd(since: int | None) -> dict[str, Any]:
        facts = figures.ClusterFacts(
            "big", clock, ["s0"], {"s0": state}, {}, {year: held}, plan, data_since_ms=since
        )
        return figures.cluster_summary(facts, catalog, "t")["ytd"]

    whole = ytd(start)
    assert whole["comparable"] is True and whole["year_covered_pct"] == 100.0
    late_start = ytd(clock - 7 * 24 * HOUR)  # a twin that started a week ago
    assert late_start["comparable"] is False
    assert late_start["year_covered_pct"] == 100.0 * 7 / 300
    # the figures themselves are the same: only whether they compare with the budget changes
    assert late_start["ytd_tco2e"] == whole["ytd_tco2e"] == 1.0
    assert ytd(None)["comparable"] is False


def _quality_of(k: int, site: str) -> str:
    """Site a (big) is mostly measured; site b (small) mostly estimated or gap filled."""
    if site == "a":
        return "estimated" if k % 10 == 0 else "measured"
    return "gap_filled" if k % 2 == 0 else "estimated" if k % 3 == 0 else "measured"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(MODES),
    repeats=st.floats(0, 0.3),
    crashes=st.sampled_from([0.0, 0.2]),
)
def test_the_clusters_quality_shares_are_the_shares_of_its_sites_sums(
    seed: int, mode: str, repeats: float, crashes: float
) -> None:
    """In every arrival order, with repeats, crashes, and gap fills a real reading replaces
    later: each site's tonnes by quality are those of the readings that stand, and the
    cluster's shares are of their sums."""
    rng = random.Random(seed)
    readings = []
    for k in range(90):
        ts = T0 + k * 60_000
        for meter, value in (
            ("gas-a", 5_000.0 + k),
            ("elec-a", 800_000.0 + k),
            ("gas-b", 1 + k / 8),
        ):
            site, carrier, unit = METERS[meter]
            r = reading(meter, ts, value, unit, carrier)
            r["quality"] = _quality_of(k, site)
            readings.append(r)
    sent = arrive(rng, readings, mode)
    for r in rng.sample(readings, int(len(readings) * repeats)):
        sent.insert(rng.randrange(len(sent) + 1), dict(r))
    # some measured readings of the small site were first missing and filled: the fill
    # comes before the real reading (any time before), which then replaces it
    for r in [r for r in readings if r["meter"] == "gas-b" and r["quality"] == "measured"][::2]:
        fill = {**r, "quality": "gap_filled", "value": r["value"] * 3}
        sent.insert(rng.randrange(sent.index(r) + 1), fill)
    w = asyncio.run(play(rng, sent, 30_000, 6 * HOUR, crashes))
    summary = asyncio.run(view_of(w).cluster("c"))

    # offline: each site's tCO2e (nano-units) by quality, from the distinct readings
    tonnes: dict[str, dict[str, int]] = {s: dict.fromkeys(QUALITIES, 0) for s in ("a", "b")}
    for r in readings:
        site, _carrier, unit = METERS[r["meter"]]
        vec = offline_price(w.catalog, r["meter"], unit, r["value"])
        tonnes[site][r["quality"]] += vec[1] + vec[2]
    rows = {row["site"]: row for row in summary["by_site"]}
    shares = {}
    for site, by in tonnes.items():
        total = sum(by.values())
        shares[site] = {q: by[q] / total for q in by}
        assert rows[site]["ytd_quality"] == {
            q: {"tco2e": by[q] / NANO_T, "share": by[q] / total} for q in by
        }
        assert view_of(w).site("c", site, 0)["ytd"]["quality"] == rows[site]["ytd_quality"]
    whole = {q: tonnes["a"][q] + tonnes["b"][q] for q in QUALITIES}
    assert summary["ytd_quality"] == {
        q: {"tco2e": whole[q] / NANO_T, "share": whole[q] / sum(whole.values())} for q in whole
    }
    assert set(summary["by_scope"]) == set(SCOPE_FIELDS)  # gross scope 1 is no scope
    # the tonnes by quality add up to the cluster's year to date (no transfers here)
    assert sum(whole.values()) == round(summary["ytd"]["figures"]["tco2e"] * NANO_T)
    # two sites of very different size: the mean of their shares is another figure
    gap = summary["ytd_quality"]["gap_filled"]["share"]
    mean = (shares["a"]["gap_filled"] + shares["b"]["gap_filled"]) / 2
    assert tonnes["a"]["measured"] > 1000 * tonnes["b"]["measured"]
    assert mean - gap > 0.2, (mean, gap)


def test_a_transfers_tonnes_are_in_no_sites_quality_figures() -> None:
    """They are another site's (or a credit): counted there, the cluster's tonnes by
    quality would exceed the cluster's tonnes."""
    state = SiteState("c", "a", 0, wm=T0, seen_at=T0)
    own = [10 * NANO_T, 2 * NANO_T, NANO_T, 0, 0, *[0] * (NFIG - 5), 4]
    sent = [5 * NANO_T, 0, 3 * NANO_T, 3 * NANO_T, 0, *[0] * (NFIG - 5), 2]
    measured = QUALITY_NAMES.index("measured")
    state.qytd = {(2026, "natural_gas", measured): own, (2026, "steam>internal>b", measured): sent}
    vecs = by_quality(state.qytd, 2026)
    assert vecs["measured"][1:3] == [2 * NANO_T, NANO_T]  # the own meter's tonnes only
    assert vecs["measured"][0] == 15 * NANO_T and vecs["measured"][-1] == 6  # energy, count: both
    got = state.twin()["completeness"]["2026"]["measured"]
    assert got["tco2e"] == 3.0 and got["share_tco2e"] == 1.0
    assert figures.quality_ytd(vecs)["measured"] == {"tco2e": 3.0, "share": 1.0}


def test_a_sites_open_hours_come_from_its_minute_windows() -> None:
    """Site hourly windows are written once closed: the series reads them up to the site's
    first open hour and the 1-min windows from there (the cluster's are written as they
    grow)."""
    site = queries.series_flux("b", "t", "c", "s", 0, 10 * HOUR, open_from_ms=7 * HOUR)
    at = f"time(v: {7 * HOUR * 1_000_000})"
    assert f'r.res == "1h" and r._time < {at} or r.res == "1m" and r._time >= {at}' in site
    never_closed = queries.series_flux("b", "t", "c", "s", 0, 10 * HOUR, open_from_ms=-1)
    assert 'r.res == "1m" and r._time >= time(v: 0)' in never_closed
    cluster = queries.series_flux("b", "t", "c", None, 0, 10 * HOUR, open_from_ms=7 * HOUR)
    assert 'r.res == "1h"' in cluster and '"1m"' not in cluster
