"""Drive a real stream worker (a subprocess, so SIGKILL is real) against the local stack.

The generator knows every reading it produced, so the expected value of every window can be
computed offline, reading by reading, and compared with what the worker left in InfluxDB.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.influx_schema import (
    CO2_CAPTURED_T,
    GAS_FIELDS,
    METER_RESOLUTIONS,
    SITE_OPEN_RESOLUTIONS,
    TCO2E_S1_GROSS,
)
from streams.meter_vectors import NANO, MeterSpec, MeterVectors, offline_price
from streams.transfers import cluster_share, site_views
from streams.windows import NFIG, RESOLUTIONS
from tests.unit.streams.test_intervals import reference_parts

REPO = Path(__file__).resolve().parents[3]

CARRIERS = {
    # carrier: (unit, MWh per unit, (s1, s2 location, s2 market, s3) tCO2e per unit, then
    # t per unit of each gas of GASES: co2, ch4, n2o, co2e_other, co2_biogenic, co2_captured)
    "natural_gas": (
        "MWh",
        1.0,
        (0.20196, 0.0, 0.0, 0.0, 0.20198, 3.6e-6, 3.6e-7, 0.0, 0.0, 0.000121),
    ),
    "electricity": ("kWh", 0.001, (0.0, 0.0000569, 0.000021, 0.0)),
    # a biodiesel blend: its biogenic CO2 a memo line
    "diesel": ("t", 11.944, (3.186, 0.0, 0.0, 0.0, 3.1, 0.00013, 0.00026, 0.0, 0.35, 0.0)),
    "hydrogen": ("MWh", 1.0, (0.0, 0.0, 0.0, 0.3)),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_catalog(cluster: str, sites: int, meters_per_site: int) -> MeterVectors:
    specs = []
    names = list(CARRIERS)
    for s in range(sites):
        for m in range(meters_per_site):
            carrier = names[(s + m) % len(names)]
            unit, mwh, f = CARRIERS[carrier]
            specs.append(
                MeterSpec(
                    meter=f"{cluster}-s{s}-m{m}",
                    site=f"{cluster}-s{s}",
                    cluster=cluster,
                    carrier=carrier,
                    units={unit: (mwh, f)},
                    provenance="test factors",
                )
            )
    return MeterVectors(specs)


def _carrier_key(carrier: str, transfer: str) -> str:
    """A site window's identity in the comparisons: its carrier, and the transfer side its
    point stands for (``streams.transfers.site_views``), since a site may hold both."""
    return f"{carrier}|{transfer}" if transfer else carrier


@dataclass
class Expected:
    """Offline totals: (level, id, carrier, res, start) -> [mwh, s1, s2l, s2m, s3, *gases, n]
    nano-units.

    Also the year-to-date per (level, id, carrier, year) and each meter's last reading, which
    the worker writes as ``twin_ytd`` and the newest ``meter_reading``.
    """

    windows: dict[tuple[str, str, str, str, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * (NFIG + 1))
    )
    ytd: dict[tuple[str, str, str, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * (NFIG + 1))
    )
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)
    readings: int = 0
    meter_site: dict[str, str] = field(default_factory=dict)

    def add(
        self, catalog: MeterVectors, meter: str, unit: str, ts: int, value: float, start: int = -1
    ) -> None:
        """One distinct reading; with ``start``, of the interval [start, ts), shared among
        its minutes by the stated rule (``reference_parts``)."""
        spec = catalog.specs[catalog.index[meter]]
        figures = offline_price(catalog, meter, unit, value)
        self.readings += 1
        self.meter_site[meter] = spec.site
        for minute, part in reference_parts(start, ts, figures).items():
            for res, width in RESOLUTIONS.items():
                w = minute - minute % width
                key = spec.window_key or spec.carrier
                keyed = [
                    # a transfer counts its energy only at cluster level
                    (("cluster", spec.cluster, spec.carrier, res, w), cluster_share(key, part)),
                ]
                if res in METER_RESOLUTIONS:
                    keyed.append((("meter", meter, spec.carrier, res, w), part))
                # a transfer's site window is the sender's and the receiver's view
                keyed += [
                    (("site", site, _carrier_key(carrier, tag), res, w), view)
                    for site, carrier, tag, view in site_views(
                        spec.site, spec.window_key or spec.carrier, part
                    )
                ]
                for key, add in keyed:
                    vec = self.windows[key]
                    for k in range(NFIG + 1):
                        vec[k] += add[k]
            year = datetime.fromtimestamp(minute / 1000, tz=UTC).year
            ykeyed = [
                (
                    ("cluster", spec.cluster, spec.carrier, year),
                    cluster_share(spec.window_key or spec.carrier, part),
                )
            ]
            ykeyed += [
                (("site", site, _carrier_key(carrier, tag), year), view)
                for site, carrier, tag, view in site_views(
                    spec.site, spec.window_key or spec.carrier, part
                )
            ]
            for ykey, add in ykeyed:
                yvec = self.ytd[ykey]
                for k in range(NFIG + 1):
                    yvec[k] += add[k]
        if ts > self.latest.get(meter, (-1, 0.0))[0]:
            self.latest[meter] = (ts, value)


class Generator:
    """Envelopes for every site, one per step, timestamps strictly increasing per meter."""

    def __init__(self, catalog: MeterVectors, cluster: str, start_ms: int, step_ms: int = 5000):
        self.catalog = catalog
        self.cluster = cluster
        self.t = start_ms
        self.start = start_ms
        self.step_ms = step_ms
        self.rng = random.Random(42)
        self.expected = Expected()

    def step(self) -> list[tuple[str, bytes]]:
        out = []
        for site in self.catalog.clusters[self.cluster]:
            readings = []
            for i in self.catalog.sites[(self.cluster, site)]:
                spec = self.catalog.specs[i]
                unit = next(iter(spec.units))
                value = round(self.rng.uniform(0.0, 50.0), self.rng.choice([1, 3, 6, 9]))
                # jitter within the step keeps meters of one site slightly apart in time
                ts = self.t + (i % 7) * 11
                readings.append(
                    {
                        "meter": spec.meter,
                        "ts": ts,
                        "value": value,
                        "unit": unit,
                        "carrier": spec.carrier,
                        "quality": "measured",
                    }
                )
                self.expected.add(self.catalog, spec.meter, unit, ts, value)
            body = {
                "schema": "readings/1",
                "cluster": self.cluster,
                "site": site,
                "source": "test-generator",
                "sent_at": int(time.time() * 1000),
                "readings": readings,
            }
            out.append((site, orjson.dumps(body)))
        self.t += self.step_ms
        return out


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        retries=2_147_483_647,
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=30_000,
        delivery_timeout_ms=600_000,
        reconnect_backoff_max_ms=1000,
    )


HEADERS = [("content-type", b"application/json"), ("clustertwin-schema", b"readings/1")]


class WorkerProc:
    """The worker as a child process with its own names (app id, topics, twin tag, port)."""

    def __init__(self, stack: Any, name: str, catalog_file: Path, **overrides: str) -> None:
        self.port = free_port()
        self.name = name
        self.log_path = Path(f"/tmp/{name}-worker.log")
        self.env = {
            **os.environ,
            **{k: v for k, v in stack.local.settings().items()},
            "CLUSTERTWIN_READINGS_TOPIC": f"{name}-readings",
            "CLUSTERTWIN_DEADLETTER_TOPIC": f"{name}-deadletter",
            "CLUSTERTWIN_STREAMS_LATE_TOPIC": f"{name}-late",
            "CLUSTERTWIN_STREAMS_APP_ID": name,
            "CLUSTERTWIN_STREAMS_TWIN": name,
            "CLUSTERTWIN_STREAMS_CATALOG_FILE": str(catalog_file),
            "CLUSTERTWIN_STREAMS_WEB_PORT": str(self.port),
            "CLUSTERTWIN_STREAMS_GRACE_S": "20",
            "CLUSTERTWIN_STREAMS_IDLE_FLUSH_S": "8",
            "CLUSTERTWIN_STREAMS_PROGRESS_EVERY_S": "2",
            "CLUSTERTWIN_STREAMS_STALL_S": "20",
            # twin_ytd rewritten at most every 3 s (600 s in production): the waiting path
            "CLUSTERTWIN_STREAMS_YTD_EVERY_S": "3",
            **overrides,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def readings_topic(self) -> str:
        return self.env["CLUSTERTWIN_READINGS_TOPIC"]

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                self.get("/twin/")
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.tail()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return orjson.loads(r.read())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def topic_size(bootstrap: str, topic: str) -> int:
    """Records ever written to ``topic`` (end offsets summed over its partitions)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def influx_windows(
    client: Any, bucket: str, twin: str
) -> dict[tuple[str, str, str, str, int], dict[str, Any]]:
    """Every window point of ``twin`` as {key: {field: value}} (fields pivoted)."""
    query = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r.twin == "{twin}")
  |> filter(fn: (r) => r._measurement == "meter_window" or r._measurement == "site_window"
                    or r._measurement == "cluster_window")
'''
    out: dict[tuple[str, str, str, str, int], dict[str, Any]] = defaultdict(dict)
    for table in client.query_api().query(query):
        for rec in table.records:
            m = rec.get_measurement()
            level = m.split("_")[0]
            ident = {
                "meter": rec.values.get("meter"),
                "site": rec.values.get("site"),
                "cluster": rec.values.get("cluster"),
            }[level]
            ts = int(rec.get_time().timestamp() * 1000)
            carrier = _carrier_key(rec.values["carrier"], rec.values.get("transfer") or "")
            key = (level, ident, carrier, rec.values["res"], ts)
            out[key][rec.get_field()] = rec.get_value()
    return out


def _window_owner(site: str, carrier_key: str) -> str:
    """The site whose state holds a site window: a receiver's view of a transfer
    ("<mode><<sender>") is its sender's window."""
    tag = carrier_key.partition("|")[2]
    return tag.rsplit("<", 1)[1] if "<" in tag else site


def compare(expected: Expected, actual: dict[Any, dict[str, Any]]) -> list[str]:
    """Every expected window present with exactly the offline figures, and nothing extra.

    A meter window is written once closed (``influx_schema.METER_WINDOW``): it must be
    there when its site's windows of that hour are complete, and absent until then. A site
    window (of a resolution not in ``SITE_OPEN_RESOLUTIONS``) is written once closed too: it
    must be there when a later 1-min window of its site is complete (the site's watermark
    has then passed it by the grace period), and written only complete."""
    problems = []
    closed = {
        (k[1], k[4])
        for k, v in actual.items()
        if k[0] == "site" and k[3] == "1h" and v.get("complete") is True
    }
    # per site, the end of its newest complete 1-min window: what has surely closed
    minute_closed: dict[str, int] = {}
    for k, v in actual.items():
        if k[0] == "site" and k[3] == "1m" and v.get("complete") is True:
            minute_closed[k[1]] = max(minute_closed.get(k[1], -1), k[4] + RESOLUTIONS["1m"])
    for key, vec in expected.windows.items():
        got = actual.get(key)
        if key[0] == "meter" and (expected.meter_site[key[1]], key[4]) not in closed:
            if got is not None:
                problems.append(f"{key} written while its hour is open")
            continue
        if key[0] == "site" and key[3] not in SITE_OPEN_RESOLUTIONS:
            if got is not None and got.get("complete") is not True:
                problems.append(f"{key} written while open")
            owner = _window_owner(key[1], key[2])
            if got is None and minute_closed.get(owner, -1) <= key[4] + RESOLUTIONS[key[3]]:
                continue  # not closed yet, or not known to be
        if got is None:
            problems.append(f"missing {key}")
            continue
        for f, v in _want(vec).items():
            if got.get(f) != v:
                problems.append(f"{key} {f}: InfluxDB {got.get(f)!r} != offline {v!r}")
    extra = set(actual) - set(expected.windows)
    problems.extend(f"unexpected window {k}" for k in sorted(extra, key=str)[:20])
    return problems


def _want(vec: list[int]) -> dict[str, Any]:
    return {
        "energy_mwh": vec[0] / NANO,
        "tco2e_s1": vec[1] / NANO,
        "tco2e_s2_location": vec[2] / NANO,
        "tco2e_s2_market": vec[3] / NANO,
        "tco2e_s3_upstream": vec[4] / NANO,
        "tco2e": (vec[1] + vec[2]) / NANO,
        # scope 1 by gas, the biogenic memo, CO2 captured and gross scope 1 (issue 16)
        **{name: vec[5 + k] / NANO for k, name in enumerate(GAS_FIELDS)},
        TCO2E_S1_GROSS: (vec[1] + vec[5 + GAS_FIELDS.index(CO2_CAPTURED_T)]) / NANO,
        "readings": vec[NFIG],
    }


def compare_ytd_latest(
    expected: Expected, client: Any, bucket: str, twin: str, timeout: float = 45.0
) -> list[str]:
    """The newest ``twin_ytd`` point of every site and cluster equals the offline
    year-to-date, and every meter's newest ``meter_reading`` point is its last reading,
    within ``timeout``: a site's year to date is rewritten at most every ``YTD_EVERY_S``, its
    last change by the idle flush once the site has been silent ``IDLE_FLUSH_S``."""
    deadline = time.monotonic() + timeout
    while True:
        problems = _ytd_latest_problems(expected, client, bucket, twin)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(2)


def _ytd_latest_problems(expected: Expected, client: Any, bucket: str, twin: str) -> list[str]:
    query = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r.twin == "{twin}")
  |> filter(fn: (r) => r._measurement == "twin_ytd"
                    or (r._measurement == "meter_reading" and r._field == "value"))
  |> last()
'''
    ytd: dict[tuple[str, str, str, int], dict[str, Any]] = defaultdict(dict)
    latest: dict[str, dict[str, Any]] = defaultdict(dict)
    for table in client.query_api().query(query):
        for rec in table.records:
            v = rec.values
            if rec.get_measurement() == "meter_reading":
                latest[v["meter"]][rec.get_field()] = rec.get_value()
                latest[v["meter"]]["ts"] = int(rec.get_time().timestamp() * 1000)
            else:
                site = v.get("site")
                key = (
                    "site" if site else "cluster",
                    site or v["cluster"],
                    _carrier_key(v["carrier"], v.get("transfer") or ""),
                    int(v["year"]),
                )
                ytd[key][rec.get_field()] = rec.get_value()
    problems = []
    for ykey, vec in expected.ytd.items():
        got = ytd.get(ykey, {})
        for f, want in _want(vec).items():
            if got.get(f) != want:
                problems.append(f"ytd {ykey} {f}: InfluxDB {got.get(f)!r} != offline {want!r}")
    problems.extend(f"unexpected ytd {k}" for k in sorted(set(ytd) - set(expected.ytd), key=str))
    for meter, (ts, value) in expected.latest.items():
        got = latest.get(meter, {})
        if (got.get("ts"), got.get("value")) != (ts, value):
            problems.append(
                f"latest {meter}: InfluxDB {got.get('ts')!r} {got.get('value')!r} "
                f"!= offline {ts} {value!r}"
            )
    problems.extend(f"unexpected latest {m}" for m in sorted(set(latest) - set(expected.latest)))
    return problems


def summarize(problems: list[str]) -> str:
    """The first problems, and how many there are per level and resolution."""
    from collections import Counter

    counts = Counter()
    for p in problems:
        parts = p.split("'")
        level = parts[1] if len(parts) > 1 else "?"
        res = next((r for r in RESOLUTIONS if f"'{r}'" in p), "?")
        counts[(level, res)] += 1
    fine = [p for p in problems if "'1m'" in p and "readings" in p][:10]
    head = "\n".join(problems[:6] + fine)
    return f"{len(problems)} problems by (level, res): {dict(counts)}\n{head}"


def wait_equal(
    client: Any,
    bucket: str,
    twin: str,
    expected: Expected,
    timeout: float,
    supervise: WorkerProc | None = None,
) -> list[str]:
    """Poll InfluxDB until it matches (windows, then the year to date and latest readings:
    a site's ``twin_ytd`` may wait ``YTD_EVERY_S`` and the idle flush after its windows);
    meanwhile restart the worker if it exited, as the production supervisor (compose
    restart policy) does."""
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not checked"]
    while time.monotonic() < deadline:
        proc = supervise.proc if supervise is not None else None
        if supervise is not None and proc is not None and proc.poll() is not None:
            supervise.restarts += 1
            supervise.start()
            supervise.wait_ready()
        problems = compare(expected, influx_windows(client, bucket, twin))
        if not problems:
            problems = _ytd_latest_problems(expected, client, bucket, twin)
        if not problems:
            return []
        time.sleep(2)
    return problems


def all_complete(
    actual: dict[Any, dict[str, Any]],
    levels: Iterable[str] = ("meter", "site"),
    passed_by: int | None = None,
    grace_ms: int = 20_000,
) -> bool:
    """Every window is final; with ``passed_by`` (the newest reading time), every window
    that event time has passed by the grace period (the later ones wait for event time to
    pass them: the wall clock does not close a replay's windows)."""
    return all(
        v.get("complete") is True
        for k, v in actual.items()
        if k[0] in levels
        and (passed_by is None or k[4] + RESOLUTIONS[k[3]] + grace_ms <= passed_by)
    )
