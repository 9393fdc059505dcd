"""The live view's scope 1 by gas, its biogenic memo and its data-quality shares, in a browser.

Six hours of the Rotterdam cluster (a biomass co-firing meter: a biogenic CO2 memo; a CO2
export to storage: CO2 captured; two transfers between sites) go through Kafka to a real
worker. The refineries (the biggest site, about 300 times the coal plant's tonnes) report
mostly measured readings; the coal plant mostly gap-filled and estimated ones; the others a
mix. Debian's Chromium then opens the cluster and a site: every gas, gross scope 1, the CO2
captured, the biogenic memo and each quality's tonnes and share shown must equal the offline
computation from the readings sent, the view's JSON, and InfluxDB's ``twin_ytd``. The
cluster's shares are the shares of the sums, which two sites this different in size set
visibly apart from the mean of the sites' shares.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium.webdriver.common.by import By

from streams import influx_schema as schema
from streams.meter_vectors import NANO, QUALITIES, offline_price
from streams.transfers import cluster_share
from streams.twinlink import catalog_from_twin
from streams.windows import NFIG, figures
from tests.integration.streams.harness import HEADERS, Expected, WorkerProc, producer
from tests.integration.webview.test_browser import (
    _get,
    _influx_rows,
    _no_console_errors,
    _read,
    _until,
    _value,
    _wait,
)

pytestmark = pytest.mark.integration

CLUSTER = "rotterdam"
STEP = 5 * 60_000
HOUR = 3_600_000
BIG, SMALL = "refineries", "coal-power"
GAS_KEYS = (*schema.GAS_FIELDS, schema.TCO2E_S1_GROSS)


def _quality(site: str, k: int) -> str:
    """``k`` counts the readings sent (21 a step: periods prime to 21 reach every meter)."""
    if site == BIG:
        return "estimated" if k % 10 == 0 else "measured"
    if site == SMALL:
        return "measured" if k % 5 == 0 else "estimated" if k % 8 == 0 else "gap_filled"
    return "estimated" if k % 13 == 0 else "gap_filled" if k % 11 == 0 else "measured"


class Sent:
    """What the test published, and the offline figures: the site views and the cluster
    (``Expected``), and each site's tCO2e by quality in nano-units (a transfer's readings
    count where metered, without their tonnes: ``streams.transfers.cluster_share``)."""

    def __init__(self) -> None:
        self.catalog = catalog_from_twin([CLUSTER])
        self.expected = Expected()
        self.quality: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(QUALITIES, 0))
        self.count = 0

    def envelopes(self, start: int, stop: int) -> list[tuple[str, bytes]]:
        out = []
        k = 0
        for t in range(start, stop, STEP):
            for site in self.catalog.clusters[CLUSTER]:
                readings = []
                for i in self.catalog.sites[(CLUSTER, site)]:
                    spec = self.catalog.specs[i]
                    unit = next(iter(spec.units))
                    k += 1
                    value = round(1.0 + (k % 37) / 9.0, 6)
                    quality = _quality(site, k)
                    readings.append(
                        {
                            "meter": spec.meter,
                            "ts": t,
                            "value": value,
                            "unit": unit,
                            "carrier": spec.carrier,
                            "quality": quality,
                        }
                    )
                    self.expected.add(self.catalog, spec.meter, unit, t, value)
                    vec = cluster_share(
                        spec.window_key or spec.carrier,
                        offline_price(self.catalog, spec.meter, unit, value),
                    )
                    self.quality[site][quality] += vec[1] + vec[2]
                    self.count += 1
                body = {
                    "schema": "readings/1",
                    "cluster": CLUSTER,
                    "site": site,
                    "source": "browser-test",
                    "sent_at": int(time.time() * 1000),
                    "readings": readings,
                }
                out.append((site, orjson.dumps(body)))
        return out

    def _sum(self, level: str, ident: str | None = None) -> dict[str, Any]:
        total = [0] * (NFIG + 1)
        for (lvl, who, _carrier, _year), vec in self.expected.ytd.items():
            if lvl == level and (ident is None or who == ident):
                total = [a + b for a, b in zip(total, vec, strict=True)]
        return figures(total)

    def cluster_ytd(self) -> dict[str, Any]:
        return self._sum("cluster")

    def site_ytd(self, site: str) -> dict[str, Any]:
        return self._sum("site", site)

    def quality_ytd(self, site: str | None = None) -> dict[str, dict[str, Any]]:
        sites = [site] if site else list(self.quality)
        tonnes = {q: sum(self.quality[s][q] for s in sites) for q in QUALITIES}
        total = sum(tonnes.values())
        return {q: {"tco2e": t / NANO, "share": t / total} for q, t in tonnes.items()}


@pytest.fixture(scope="module")
def live(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = f"t-webgas-{int(time.time())}"
    worker = WorkerProc(stack, name, tmp_path_factory.mktemp("webgas") / "unused.json")
    worker.env.pop("CLUSTERTWIN_STREAMS_CATALOG_FILE")
    worker.env["CLUSTERTWIN_STREAMS_CLUSTERS"] = CLUSTER
    sent = Sent()
    now = int(time.time() * 1000)
    year_start = int(datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC).timestamp() * 1000)
    start = max(now - now % STEP - 6 * HOUR, year_start)
    envelopes = sent.envelopes(start, now - now % STEP - STEP)
    worker.start()
    try:
        worker.wait_ready()
        kafka = producer(stack.kafka_bootstrap)
        for site, body in envelopes:
            kafka.send(worker.readings_topic, key=site.encode(), value=body, headers=HEADERS)
        kafka.flush()
        _wait(
            "the worker accepted every reading",
            lambda: _get(worker, "/twin/")["counters"]["accepted"] == sent.count,
        )
        yield worker, sent, name
    finally:
        worker.stop()


def _twin_ytd(stack: Any, twin: str, year: int) -> dict[str, dict[str, float]]:
    """Site -> field -> the sum over its newest twin_ytd points (per carrier and transfer
    side); the cluster's own points under ``""``."""
    fields = [*GAS_KEYS, *(schema.quality_field(q, schema.TCO2E) for q in QUALITIES)]
    wanted = " or ".join(f'r._field == "{f}"' for f in fields)
    rows = _influx_rows(
        stack,
        f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
        f' |> filter(fn: (r) => r._measurement == "{schema.TWIN_YTD}" and r.twin == "{twin}"'
        f' and r.cluster == "{CLUSTER}" and r.year == "{year}")'
        f" |> filter(fn: (r) => {wanted}) |> last()",
    )
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        out[row.get(schema.SITE) or ""][row["_field"]] += float(row["_value"])
    return out


def _shown(browser: Any, css: str, field: str) -> dict[str, float]:
    """``data-value`` of each row's ``field`` cell, by the row's site (or quality)."""
    key = "data-site" if css == "#table-site-gases" else "data-quality"
    return _read(
        lambda: {
            tr.get_attribute(key): float(
                tr.find_element(By.CSS_SELECTOR, f"[data-field={field}]").get_attribute(
                    "data-value"
                )
            )
            for tr in browser.find_elements(By.CSS_SELECTOR, f"{css} tr[{key}]")
        }
    )


def test_the_page_shows_scope_1_by_gas_the_memo_and_quality_shares_of_the_sums(
    live: Any, stack: Any, browser: Any, screenshots: Path
) -> None:
    worker, sent, twin = live
    offline = sent.cluster_ytd()
    # the cluster stage has the sites' year to date once their summaries came through Kafka
    summary = _wait(
        "the cluster's year to date",
        lambda: (
            (s := _get(worker, f"/view/api/clusters/{CLUSTER}"))["ytd"]["figures"] == offline and s
        ),
    )
    year = summary["ytd"]["year"]
    # the view's JSON is the offline computation, exactly (nano-unit sums)
    assert summary["by_gas"] == {k: offline[k] for k in GAS_KEYS}
    assert offline[schema.CO2_BIOGENIC_T] > 0 and offline[schema.CO2_CAPTURED_T] > 0
    assert offline[schema.CH4_T] > 0 and offline[schema.N2O_T] > 0
    assert summary["ytd_quality"] == sent.quality_ytd()
    for row in summary["by_site"]:
        assert row["ytd_by_gas"] == {k: sent.site_ytd(row["site"])[k] for k in GAS_KEYS}
        assert row["ytd_quality"] == sent.quality_ytd(row["site"]), row["site"]
    # two sites of very different size: share of the sums, not the mean of the shares
    assert sent.site_ytd(BIG)["tco2e"] > 100 * sent.site_ytd(SMALL)["tco2e"]
    gap = summary["ytd_quality"]["gap_filled"]["share"]
    mean = sum(r["ytd_quality"]["gap_filled"]["share"] for r in summary["by_site"]) / len(
        summary["by_site"]
    )
    assert abs(mean - gap) > 0.05, (mean, gap)

    # InfluxDB's twin_ytd holds the same: the sites' quality fields sum to the cluster's
    # (once written: a site's twin_ytd waits up to YTD_EVERY_S and the idle flush)
    def _stored_sums() -> Any:
        stored = _twin_ytd(stack, twin, year)
        fields = [schema.quality_field(q, schema.TCO2E) for q in summary["ytd_quality"]]
        sums = [sum(f.get(x, 0.0) for site, f in stored.items() if site) for x in fields]
        wants = [w["tco2e"] for w in summary["ytd_quality"].values()]
        ok = all(math.isclose(g, w, rel_tol=1e-9) for g, w in zip(sums, wants, strict=True))
        return ok and "" in stored and stored

    stored = _wait("the sites' twin_ytd", _stored_sums)
    for q, want in summary["ytd_quality"].items():
        field = schema.quality_field(q, schema.TCO2E)
        got = sum(f.get(field, 0.0) for site, f in stored.items() if site)
        assert math.isclose(got, want["tco2e"], rel_tol=1e-9), q
    for k in GAS_KEYS:
        assert math.isclose(stored[""][k], summary["by_gas"][k], rel_tol=1e-9, abs_tol=1e-9), k

    # -- the cluster overview ---------------------------------------------------------------
    # the session's browser may still have had a page of a worker gone: forget its log
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get(f"http://127.0.0.1:{worker.port}/view/#/c/{CLUSTER}")
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#table-gases td"))
    for k in GAS_KEYS:
        assert _value(browser, f"#table-gases [data-field={k}]") == offline[k], k
    assert _value(browser, "#table-gases [data-field=tco2e_s1]") == offline["tco2e_s1"]
    # the biogenic CO2 is shown apart, as a memo, after every total
    memo = _read(lambda: browser.find_element(By.CSS_SELECTOR, "#table-gases tbody.memo").text)
    assert "outside the scopes" in memo and "Biogenic" in memo
    assert not browser.find_elements(
        By.CSS_SELECTOR, "#table-gases tbody:not(.memo) [data-field=co2_biogenic_t]"
    )
    want_q = sent.quality_ytd()
    assert _shown(browser, "#table-quality", "share") == {q: v["share"] for q, v in want_q.items()}
    assert _shown(browser, "#table-quality", "tco2e") == {q: v["tco2e"] for q, v in want_q.items()}
    text = _read(lambda: browser.find_element(By.ID, "table-quality").text)
    assert f"{100 * want_q['measured']['share']:.1f} %" in text  # what a reader sees
    sites = "#table-site-gases"
    for k in GAS_KEYS:
        shown = _shown(browser, sites, k)
        assert shown == {s: sent.site_ytd(s)[k] for s in sent.catalog.clusters[CLUSTER]}, k
    for q in QUALITIES:
        shown = _shown(browser, sites, f"{q}_share")
        assert shown == {s: sent.quality_ytd(s)[q]["share"] for s in sent.quality}, q
    browser.save_screenshot(str(screenshots / "cluster-gases.png"))
    browser.execute_script("document.getElementById('site-gases').scrollIntoView()")
    browser.save_screenshot(str(screenshots / "cluster-site-gases.png"))
    _no_console_errors(browser, "cluster")

    # -- the coal plant's drill-down: its biogenic memo and its own shares -----------------
    browser.get(f"http://127.0.0.1:{worker.port}/view/#/c/{CLUSTER}/s/{SMALL}")
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#table-gases td"))
    site_json = _get(worker, f"/view/api/clusters/{CLUSTER}/sites/{SMALL}")
    own = sent.site_ytd(SMALL)
    assert {k: site_json["ytd"]["figures"][k] for k in GAS_KEYS} == {k: own[k] for k in GAS_KEYS}
    assert own[schema.CO2_BIOGENIC_T] > 0
    for k in GAS_KEYS:
        assert _value(browser, f"#table-gases [data-field={k}]") == own[k], k
    want_small = sent.quality_ytd(SMALL)
    assert site_json["ytd"]["quality"] == want_small
    assert _shown(browser, "#table-quality", "share") == {
        q: v["share"] for q, v in want_small.items()
    }
    browser.save_screenshot(str(screenshots / "site-gases.png"))
    _no_console_errors(browser, "site")
