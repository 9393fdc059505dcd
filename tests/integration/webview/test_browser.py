"""The live view in a real browser, after the real worker has processed real readings.

Six hours of the Dunkirk cluster's readings (every meter, every 5 minutes, some estimated
or gap-filled) go through Kafka to a real worker with the twin's own factors and targets.
Debian's Chromium then opens each view; every number checked on the page must equal the
offline figure computed from the readings sent, the worker's twin JSON and InfluxDB; a new
reading must appear on the open page within 5 s; no view may log a console error.
Screenshots of each view are saved (the README's pictures are these).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from influxdb_client import InfluxDBClient
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from streams.sink import fields_line
from streams.twinlink import catalog_from_twin
from streams.windows import figures
from tests.integration.streams.harness import HEADERS, Expected, WorkerProc, producer

pytestmark = pytest.mark.integration

CLUSTER = "dunkirk"
STEP = 5 * 60_000
HOUR = 3_600_000
QUALITY_EVERY = {"estimated": 7, "gap_filled": 11}  # every 7th reading estimated, ...


def _quality(k: int) -> str:
    for quality, every in QUALITY_EVERY.items():
        if k % every == 0:
            return quality
    return "measured"


class Sent:
    """What the test published, and the figures an offline computation gives for it."""

    def __init__(self) -> None:
        self.catalog = catalog_from_twin([CLUSTER])
        self.expected = Expected()
        self.qualities: Counter[str] = Counter()
        self.newest: dict[str, tuple[int, float]] = {}
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
                    quality = _quality(k)
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
                    self.add(spec.meter, unit, t, value, quality)
                out.append((site, self.body(site, readings)))
        return out

    def add(self, meter: str, unit: str, ts: int, value: float, quality: str) -> None:
        self.expected.add(self.catalog, meter, unit, ts, value)
        self.qualities[quality] += 1
        self.newest[meter] = max(self.newest.get(meter, (-1, 0.0)), (ts, value))
        self.count += 1

    @staticmethod
    def body(site: str, readings: list[dict[str, Any]]) -> bytes:
        return orjson.dumps(
            {
                "schema": "readings/1",
                "cluster": CLUSTER,
                "site": site,
                "source": "browser-test",
                "sent_at": int(time.time() * 1000),
                "readings": readings,
            }
        )

    def hour(self, start: int) -> dict[str, Any]:
        vecs = [
            v
            for (level, _id, _c, res, s), v in self.expected.windows.items()
            if level == "cluster" and res == "1h" and s == start
        ]
        return figures([sum(col) for col in zip(*vecs, strict=True)])

    def ytd(self, year: int) -> dict[str, Any]:
        vecs = [v for (level, _id, _c, y), v in self.expected.ytd.items() if level == "cluster"]
        assert all(y == year for (_l, _i, _c, y) in self.expected.ytd)
        return figures([sum(col) for col in zip(*vecs, strict=True)])


def _get(worker: WorkerProc, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as r:
        return orjson.loads(r.read())


def _wait(what: str, check: Any, timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, AssertionError, KeyError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def _no_console_errors(browser: Any, view: str) -> None:
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, f"{view}: console errors {errors}"


def _read(fn: Any, tries: int = 20) -> Any:
    """``fn()`` retried while the page replaces the elements it reads: the page re-renders
    its figures on every pushed update, so an element found may be gone when read."""
    for _ in range(tries - 1):
        try:
            return fn()
        except StaleElementReferenceException:
            time.sleep(0.05)
    return fn()


def _until(browser: Any, timeout: float, poll: float = 0.5) -> WebDriverWait:
    return WebDriverWait(
        browser, timeout, poll_frequency=poll, ignored_exceptions=(StaleElementReferenceException,)
    )


def _value(browser: Any, css: str) -> float:
    raw = _read(lambda: browser.find_element(By.CSS_SELECTOR, css).get_attribute("data-value"))
    assert raw not in (None, ""), css
    return float(raw)


def _influx_rows(stack: Any, flux: str) -> list[dict[str, Any]]:
    with InfluxDBClient(
        url=stack.influx_url, token=stack.influx_token, org=stack.influx_org, timeout=30_000
    ) as client:
        return [r.values for t in client.query_api().query(flux) for r in t.records]


@pytest.fixture(scope="module")
def live(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A worker over the real twin (factors, targets) that has processed six hours."""
    name = f"t-webview-{int(time.time())}"
    worker = WorkerProc(stack, name, tmp_path_factory.mktemp("webview") / "unused.json")
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
        yield worker, sent, kafka, name
    finally:
        worker.stop()


def test_every_view_shows_the_twins_figures_and_a_new_reading_within_5_s(
    live: Any, stack: Any, browser: Any, screenshots: Path
) -> None:
    worker, sent, kafka, twin = live
    base = f"http://127.0.0.1:{worker.port}/view/"
    summary = _wait(
        "a complete hour in the cluster's figures",
        lambda: (s := _get(worker, f"/view/api/clusters/{CLUSTER}"))["now"]["hour_start"] and s,
    )
    hour, year = summary["now"]["hour_start"], summary["ytd"]["year"]
    twin_json = _get(worker, f"/twin/{CLUSTER}/")
    offline_ytd = sent.ytd(year)
    # the worker's figures are the offline ones, exactly (nano-unit sums)
    assert twin_json["year_to_date"][str(year)]["total"] == offline_ytd
    assert summary["ytd"]["figures"] == offline_ytd
    assert summary["now"]["tco2e_per_h"] == sent.hour(hour)["tco2e"]
    assert summary["ytd"]["scopes"] == "1"  # Dunkirk's plan counts scope 1

    # an open alert as the alerting worker stores it, so the alerts panel reads InfluxDB
    alert_line = fields_line(
        "alert_state",
        {"twin": twin, "cluster": CLUSTER, "kind": "pathway_drift_1h", "site": "steelworks"},
        {
            "open": 1,
            "severity": 2,
            "category": "emission",
            "value": 2.5,
            "threshold": 1.5,
            "alert_id": "a-browser-test",
            "event": "open",
        },
        hour,
    )
    with InfluxDBClient(
        url=stack.influx_url, token=stack.influx_token, org=stack.influx_org
    ) as client:
        client.write_api().write(
            stack.influx_bucket, record=alert_line.encode(), write_precision="ms"
        )
        client.write_api().flush()

    # -- network --------------------------------------------------------------------------------
    browser.get(base + "#/")
    row = f"#network tr[data-cluster={CLUSTER}]"
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    assert _value(browser, f"{row} [data-field=ytd_tco2e]") == offline_ytd["tco2e_s1"]
    browser.save_screenshot(str(screenshots / "network.png"))
    _no_console_errors(browser, "network")

    # -- cluster overview -------------------------------------------------------------------------
    browser.get(base + f"#/c/{CLUSTER}")
    ytd_css = "[data-figure=ytd_tco2e]"
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ytd_css))
    assert _value(browser, ytd_css) == offline_ytd["tco2e_s1"]
    # six hours of readings are not a year: the budget comparison says so
    assert "not comparable" in _read(lambda: browser.find_element(By.CSS_SELECTOR, ytd_css).text)
    assert _value(browser, "[data-figure=now_tco2e_per_h]") == sent.hour(hour)["tco2e"]
    sites_shown = _read(
        lambda: {
            tr.get_attribute("data-site"): float(
                tr.find_element(By.CSS_SELECTOR, "[data-field=ytd_tco2e]").get_attribute(
                    "data-value"
                )
            )
            for tr in browser.find_elements(By.CSS_SELECTOR, "#table-sites tr[data-site]")
        }
    )
    by_site = twin_json["year_to_date"][str(year)]["by_site"]
    assert sites_shown == {s: f["tco2e"] for s, f in by_site.items()}
    assert set(sites_shown) == set(sent.catalog.clusters[CLUSTER])
    # the chart: the hourly series from InfluxDB, its newest point the offline hour
    _until(browser, 20).until(
        lambda d: int(d.find_element(By.ID, "chart").get_attribute("data-points") or 0) > 0
    )
    series = _get(worker, f"/view/api/clusters/{CLUSTER}/series?hours=168")
    assert int(
        _read(lambda: browser.find_element(By.ID, "chart").get_attribute("data-points"))
    ) == len(series["t"])
    assert int(series["t"][-1] * 1000) == hour
    assert math.isclose(series["tco2e_per_h"][-1], sent.hour(hour)["tco2e"], rel_tol=1e-9)
    influx_hour = _influx_rows(
        stack,
        f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
        f' |> filter(fn: (r) => r._measurement == "cluster_window" and r.twin == "{twin}"'
        f' and r.res == "1h" and r._field == "tco2e")'
        f" |> filter(fn: (r) => r._time == time(v: {hour * 1_000_000})) |> group() |> sum()",
    )
    assert math.isclose(influx_hour[0]["_value"], sent.hour(hour)["tco2e"], rel_tol=1e-9)
    # a site's hours: its closed hourly windows, then (its hourly windows are written once
    # closed) the open hours summed from its 1-min windows; every hour is the sum of its
    # 1-min windows, none counted twice or left out at the seam
    for site in sorted(sent.catalog.clusters[CLUSTER])[:3]:
        got = _get(worker, f"/view/api/clusters/{CLUSTER}/series?hours=168&site={site}")
        minutes = _influx_rows(
            stack,
            f'from(bucket: "{stack.influx_bucket}") |> range(start: 0)'
            f' |> filter(fn: (r) => r._measurement == "site_window" and r.twin == "{twin}"'
            f' and r.site == "{site}" and r.res == "1m" and r._field == "tco2e")'
            f" |> group() |> aggregateWindow(every: 1h, fn: sum, createEmpty: false,"
            f' timeSrc: "_start")',
        )
        want = {
            int(r["_time"].timestamp()): r["_value"]
            for r in minutes
            if int(r["_time"].timestamp() * 1000) < got["stop_ms"]
        }
        shown = dict(zip((int(t) for t in got["t"]), got["tco2e_per_h"], strict=True))
        assert set(shown) == set(want), site
        for t, v in want.items():
            assert math.isclose(shown[t], v, rel_tol=1e-9, abs_tol=1e-9), (site, t)
    alert_css = "#table-alerts tr[data-alert=a-browser-test]"
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, alert_css))
    alert_text = _read(lambda: browser.find_element(By.CSS_SELECTOR, alert_css).text)
    assert "pathway drift 1h" in alert_text and "steelworks" in alert_text
    browser.save_screenshot(str(screenshots / "cluster.png"))

    # -- a figure explains itself ------------------------------------------------------------
    _read(lambda: browser.find_element(By.CSS_SELECTOR, "[data-explain=ytd]").click())
    _until(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#explain-quality li[data-quality]")
    )
    shown = {
        li.get_attribute("data-quality"): int(li.get_attribute("data-value"))
        for li in browser.find_elements(By.CSS_SELECTOR, "#explain-quality li[data-quality]")
    }
    assert {q: n for q, n in shown.items() if n} == dict(sent.qualities)
    factors = browser.find_elements(By.CSS_SELECTOR, "#explain-factors tr[data-factor]")
    assert any("Table 2.3" in f.text for f in factors), [f.text for f in factors]
    browser.save_screenshot(str(screenshots / "explain.png"))
    _no_console_errors(browser, "cluster")

    # -- site drill-down, and a new reading within 5 s ---------------------------------------
    site = "steelworks"
    browser.get(base + f"#/c/{CLUSTER}/s/{site}")
    rows_css = "#table-meters tr[data-meter]"
    _until(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, rows_css))
    meters = [sent.catalog.specs[i].meter for i in sent.catalog.sites[(CLUSTER, site)]]
    for meter in meters:
        css = f"#table-meters tr[data-meter='{meter}'] [data-field=value]"
        assert _value(browser, css) == sent.newest[meter][1], meter
    browser.save_screenshot(str(screenshots / "site.png"))

    meter = meters[0]
    spec = sent.catalog.specs[sent.catalog.index[meter]]
    ts = int(time.time() * 1000)
    value = 4.321987
    reading = {
        "meter": meter,
        "ts": ts,
        "value": value,
        "unit": next(iter(spec.units)),
        "carrier": spec.carrier,
        "quality": "measured",
    }
    kafka.send(
        worker.readings_topic, key=site.encode(), value=Sent.body(site, [reading]), headers=HEADERS
    )
    kafka.flush()
    sent_at = time.monotonic()
    css = f"#table-meters tr[data-meter='{meter}'] [data-field=value]"
    _until(browser, 5, 0.1).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).get_attribute("data-value") == str(value)
    )
    took = time.monotonic() - sent_at
    assert took < 5.0
    print(f"[browser] a new reading showed on the open page after {took:.2f} s")
    _no_console_errors(browser, "site")


def test_the_event_stream_pushes_the_figures_and_unknown_names_are_404(live: Any) -> None:
    worker = live[0]
    url = f"http://127.0.0.1:{worker.port}/view/api/events?cluster={CLUSTER}&site=steelworks"
    began = time.monotonic()
    events: dict[str, Any] = {}
    with urllib.request.urlopen(url, timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        name = None
        while len(events) < 2 and time.monotonic() - began < 10:
            line = stream.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name:
                events[name] = orjson.loads(line.removeprefix("data: "))
    assert set(events) == {"cluster", "site"}
    assert events["cluster"]["cluster"] == CLUSTER and events["site"]["site"] == "steelworks"
    for path in ("/view/api/clusters/nowhere", f"/view/api/clusters/{CLUSTER}/sites/nowhere"):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(worker, path)
        assert err.value.code == 404
        assert "unknown" in orjson.loads(err.value.read())["error"]
