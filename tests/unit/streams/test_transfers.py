"""Transfers between sites in the live twin: the site views agree with the twin's own.

Defect 7 of issue 16: the live site views zeroed the tonnes of transfers, so a steelworks
sending blast furnace gas to a power plant kept the gas's tonnes and the plant showed none.
Here one hour of every meter of the demo cluster goes through the worker's compute path
(site stage, cluster stage, the view's figures), and every site's figure, per scope, must
equal what ``EmissionsCalculator`` (what ``clustertwin twin show`` prints) gives for the same
readings; the cluster's total must stay what it was.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from streams.cluster_stage import ClusterStage
from streams.delivery import Topics
from streams.influx_schema import GAS_FIELDS, TCO2E_S1_GROSS
from streams.site_stage import SiteStage
from streams.twinlink import catalog_from_clusters
from streams.webview.figures import ClusterFacts, by_site
from streams.windows import NFIG, SiteState
from tests.unit.streams.dict_table import DictTable
from tests.unit.streams.linestore import LineStore, nano
from tests.unit.streams.test_pipeline_units import T0, reading, record
from twin.emissions import GASES, SCOPES, EmissionsCalculator
from twin.model import load_cluster

FIGS = (
    "energy_mwh",
    "tco2e_s1",
    "tco2e_s2_location",
    "tco2e_s2_market",
    "tco2e_s3_upstream",
    *GAS_FIELDS,
)


class _Live:
    def __init__(self, cluster: str, retention_ms: int) -> None:
        self.model = load_cluster(cluster)
        self.catalog = catalog_from_clusters([self.model])
        self.store = LineStore()
        self.site_table = DictTable()
        self.updates: list[tuple[int, bytes]] = []

        async def write(lines: Any) -> None:
            self.store.feed(list(lines))

        async def send(topic: str, key: Any, value: bytes, headers: Any) -> None:
            if topic == "cu":
                self.updates.append((0, value))

        self.sites = SiteStage(
            self.catalog,
            self.site_table,
            write,
            send,
            Topics("dl", "late", "cu"),
            "t",
            60_000,
            store=self.store,
        )
        self.clusters = ClusterStage(
            self.catalog, DictTable(), write, "t", retention_ms, store=self.store
        )

    async def play(self, quantities: np.ndarray, transfers_late: bool) -> None:
        """Each meter's reading at half past; with ``transfers_late``, the transfers' readings
        come after the others, for windows already closed (the restatement path)."""
        batches: list[dict[str, list[dict[str, Any]]]] = [defaultdict(list), defaultdict(list)]
        for q, (site, _asset, meter) in zip(quantities, self.model.meters(), strict=True):
            later = transfers_late and meter.to_site is not None
            ts = T0 + (5 if later else 50) * 60_000
            r = reading(meter.id, ts, float(q), meter.unit, meter.carrier.value)
            batches[1 if later else 0][site.id].append(r)
        sites = sorted({s.id for s in self.model.sites})
        for offset, per_site in enumerate(batches):
            records = [
                record(site, per_site[site], offset, partition=p, cluster=self.model.id)
                for p, site in enumerate(sites)
                if per_site.get(site)
            ]
            await self.sites.process(records)
            await self.clusters.process(self.updates)
            self.updates = []

    async def close_all(self) -> None:
        """A quiet month later: every window closed and written."""
        self.sites.first_batch = time.monotonic() - 1000
        for site in list(self.sites.last_activity):
            self.sites.last_activity[site] = time.monotonic() - 1000
        await self.sites.flush_idle(1, caught_up=lambda p: True, now_ms=T0 + 30 * 86_400_000)
        await self.clusters.process(self.updates)
        self.updates = []


def _transfers(calc: EmissionsCalculator) -> list[str]:
    return [m.id for _, _, m in calc.cluster.meters() if m.to_site is not None]


def _readings(calc: EmissionsCalculator) -> np.ndarray:
    """One hour of each meter's declared year (in its unit), or one unit if none."""
    q = [(m.annual_quantity or 8760.0) / 8760.0 for _, _, m in calc.cluster.meters()]
    return np.array(q, dtype=np.float64)


@pytest.mark.parametrize(
    ("transfers_late", "retention_ms"),
    # late transfers restate their site windows, and, past the cluster stage's retention,
    # the cluster windows from the stored site windows
    [(False, 6 * 3_600_000), (True, 6 * 3_600_000), (True, 60_000)],
)
@pytest.mark.parametrize("cluster", ["dunkirk", "rotterdam", "teda"])
def test_live_site_views_equal_the_twins_site_figures(
    cluster: str, transfers_late: bool, retention_ms: int
) -> None:
    live = _Live(cluster, retention_ms)
    calc = EmissionsCalculator(live.model)
    q = _readings(calc)
    asyncio.run(live.play(q, transfers_late))
    states = [SiteState.loads(live.site_table.get(s.encode()) or b"") for s in calc.site_ids]
    assert sum(s.late for s in states) == (
        sum(1 for _ in _transfers(calc)) if transfers_late else 0
    )
    want = calc.annual(q)
    tol = 1e-9 * len(q) + 1e-9 * float(np.abs(want.sites).max())

    # the cluster stage's year to date, site by site and scope by scope
    (ytd,) = live.clusters.twin_json(cluster)["year_to_date"].values()
    for site in calc.site_ids:
        got = ytd["by_site"].get(site, {})
        for k, scope in enumerate(SCOPES):
            assert got.get(FIGS[1 + k], 0.0) == pytest.approx(want.site(site)[scope], abs=tol), (
                site,
                scope,
            )
        for gas, name in zip(GASES, GAS_FIELDS, strict=True):  # and gas by gas
            assert got.get(name, 0.0) == pytest.approx(want.site_gases(site)[gas], abs=tol), (
                site,
                gas,
            )
        assert got.get(TCO2E_S1_GROSS, 0.0) == pytest.approx(
            want.site(site)["scope1"] + want.site_gases(site)["co2_captured"], abs=tol
        )
    # the cluster total is the twin's cluster view (transfers netted, energy eliminated)
    for k, scope in enumerate(SCOPES):
        assert ytd["total"][FIGS[1 + k]] == pytest.approx(want.cluster_dict()[scope], abs=tol)
    for gas, name in zip(GASES, GAS_FIELDS, strict=True):
        assert ytd["total"][name] == pytest.approx(want.cluster_gases()[gas], abs=tol)

    # the web view's site rows (scope 1 + 2 location-based)
    held = live.clusters.held(cluster, "ytd")
    facts = ClusterFacts(cluster, T0 + 3_600_000, calc.site_ids, {}, {}, held)
    for row in by_site(facts, live.catalog):
        w = want.site(row["site"])
        assert row["ytd_tco2e"] == pytest.approx(w["scope1"] + w["scope2_location"], abs=tol)
        for gas, name in zip(GASES, GAS_FIELDS, strict=True):
            assert row["ytd_by_gas"][name] == pytest.approx(
                want.site_gases(row["site"])[gas], abs=tol
            )

    # InfluxDB: the site windows of a site, summed over carriers (and transfers), are its view
    # (once closed: a site's windows are written then)
    asyncio.run(live.close_all())
    per_site: dict[str, list[int]] = defaultdict(lambda: [0] * NFIG)
    counted = 0
    for tags, _ts, f in live.store.series("site_window"):
        if tags["res"] == "1h":
            for k, name in enumerate(FIGS):
                per_site[tags["site"]][k] += nano(f[name])
            counted += int(f["readings"].rstrip("i"))
    assert counted == len(q)  # each reading counted once, transfers too
    for site in calc.site_ids:
        for k, gas in enumerate(GASES):
            assert per_site[site][1 + len(SCOPES) + k] / 1e9 == pytest.approx(
                want.site_gases(site)[gas], abs=tol
            ), (site, gas)
        for k, scope in enumerate(SCOPES):
            assert per_site[site][1 + k] / 1e9 == pytest.approx(want.site(site)[scope], abs=tol), (
                site,
                scope,
            )
    # ... and the cluster windows still hold the cluster view
    for res in ("1m", "1h"):  # 1m: past retention in the late case, from the stored windows
        total = [0] * NFIG
        for tags, _ts, f in live.store.series("cluster_window"):
            if tags["res"] == res:
                for k, name in enumerate(FIGS):
                    total[k] += nano(f[name])
        for k, scope in enumerate(SCOPES):
            assert total[1 + k] / 1e9 == pytest.approx(want.cluster_dict()[scope], abs=tol)
        for k, gas in enumerate(GASES):
            assert total[1 + len(SCOPES) + k] / 1e9 == pytest.approx(
                want.cluster_gases()[gas], abs=tol
            )
    if retention_ms < 3_600_000 and transfers_late:
        assert live.clusters.counters.cluster_late_updates > 0
