"""Gap filling on the real stack (issue 16, "What to build" 2).

One meter of a small cluster falls silent while the others go on. The worker (its gap-fill
file declares the MRR conservative substitute on a 1-min grid, 5 minutes' delay) fills the
missing minutes as ``gap_filled`` readings through Kafka: each fill must be the offline
mean + 2 sample σ of the meter's measured readings in the day before it (or, declared
``profile``, the mean of its readings of the same minute on the two days before), and every
window must equal the offline figures of the real readings plus those fills. Then the meter's data
is recovered, shuffled and hours late, with a fill sent again on top (a replay): every
window, the year to date and the latest readings must equal the offline figures of the real
readings alone, as if they had come on time, and the site's gap-filled share must be zero.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from tests.integration.streams.harness import (
    HEADERS,
    Expected,
    WorkerProc,
    compare_ytd_latest,
    make_catalog,
    producer,
    summarize,
    wait_equal,
)
from twin.gapfill import GapFill, RefReading, fill_values

pytestmark = pytest.mark.integration

MIN = 60_000
DAY = 24 * 60 * MIN
DECL = {"method": "mrr_conservative", "every": "1m", "after": "5m", "reference_days": 1}
#: the same minutes of the two days before: the profile's reference (``twin.gapfill``)
PROFILE = {"method": "profile", "every": "1m", "after": "5m", "reference_days": 2}


def _envelope(cluster: str, site: str, items: list[dict[str, Any]]) -> bytes:
    body = {
        "schema": "readings/2",
        "cluster": cluster,
        "site": site,
        "source": "gapfill-test",
        "sent_at": int(time.time() * 1000),
        "readings": items,
    }
    return orjson.dumps(body)


def _item(spec: Any, ts: int, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "meter": spec.meter,
        "ts": ts,
        "value": value,
        "unit": next(iter(spec.units)),
        "carrier": spec.carrier,
        "quality": "measured",
        **extra,
    }


def _stored_fills(client: Any, bucket: str, twin: str, meter: str) -> dict[int, float]:
    query = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "meter_reading" and r.twin == "{twin}"
                    and r.meter == "{meter}")
  |> filter(fn: (r) => r._field == "value" or r._field == "quality")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
'''
    out = {}
    for table in client.query_api().query(query):
        for rec in table.records:
            if rec.values.get("quality") == "gap_filled":
                out[int(rec.get_time().timestamp() * 1000)] = float(rec.values["value"])
    return out


def _ytd_field(client: Any, bucket: str, twin: str, spec: Any, field: str) -> Any:
    """A field of the newest twin_ytd point of the meter's site and carrier."""
    query = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "twin_ytd" and r.twin == "{twin}"
                    and r.site == "{spec.site}" and r.carrier == "{spec.carrier}"
                    and r._field == "{field}")
  |> last()
'''
    for table in client.query_api().query(query):
        for rec in table.records:
            return rec.get_value()
    return None


@pytest.mark.parametrize("declared", [DECL, PROFILE], ids=lambda d: d["method"])
def test_a_silent_meter_is_filled_then_its_recovered_readings_replace_the_fills(
    stack: Any, unique_name: str, tmp_path: Path, declared: dict[str, Any]
) -> None:
    cluster = unique_name.replace("_", "")[:20] + "c"
    catalog = make_catalog(cluster, 2, 2)
    (tmp_path / "catalog.json").write_text(catalog.to_json())
    silent = catalog.specs[0]  # a natural-gas meter of site 0
    (tmp_path / "gapfill.yaml").write_text(
        orjson.dumps({"meters": {silent.meter: declared}}).decode()
    )
    now = int(time.time() * 1000)
    base = now - 3 * 60 * MIN
    base -= base % MIN
    rng = random.Random(16)
    real: list[tuple[Any, int, float]] = []  # spec, ts, value: every real reading
    for k in range(1, 91):  # 90 minutes of minute readings
        for spec in catalog.specs:
            real.append((spec, base + k * MIN, round(rng.uniform(10.0, 20.0), 3)))
    cut = base + 60 * MIN  # the silent meter's readings after this come only at the end
    if declared is PROFILE:  # the silent meter's minutes of the gap, one and two days before
        for day in (2, 1):
            for k in range(61, 91):
                real.append((silent, base - day * DAY + k * MIN, round(rng.uniform(10, 20), 3)))
    withheld = [r for r in real if r[0] is silent and r[1] > cut]
    first = [r for r in real if not (r[0] is silent and r[1] > cut)]

    worker = WorkerProc(
        stack,
        unique_name,
        tmp_path / "catalog.json",
        CLUSTERTWIN_STREAMS_GAPFILL_FILE=str(tmp_path / "gapfill.yaml"),
    )
    prod = producer(stack.kafka_bootstrap)

    def send(readings: list[tuple[Any, int, float]], **extra: Any) -> None:
        by_site: dict[str, list[dict[str, Any]]] = {}
        for spec, ts, value in readings:
            by_site.setdefault(spec.site, []).append(_item(spec, ts, value, **extra))
        for site, items in by_site.items():
            for i in range(0, len(items), 25):
                prod.send(
                    worker.readings_topic,
                    key=site.encode(),
                    value=_envelope(cluster, site, items[i : i + 25]),
                    headers=HEADERS,
                )
        prod.flush(timeout=60)

    try:
        worker.start()
        worker.wait_ready()
        send(sorted(first, key=lambda r: r[1]))
        # the clock is the newest reading (90 min) plus the time since: at least the
        # minutes 61..85 are due (5 min delay); wait until they are filled and stored
        with stack.influx_client() as client:
            deadline = time.monotonic() + 90
            fills: dict[int, float] = {}
            while time.monotonic() < deadline:
                fills = _stored_fills(client, stack.influx_bucket, unique_name, silent.meter)
                if len(fills) >= 25:
                    break
                time.sleep(2)
            assert len(fills) >= 25, worker.tail()
            ends = sorted(fills)
            assert ends[0] == cut + MIN and ends == [cut + MIN * (k + 1) for k in range(len(ends))]
            decl = TypeAdapter(GapFill).validate_python(declared)
            reference = [RefReading(ts, v, "measured") for s, ts, v in first if s is silent]
            assert [fills[t] for t in ends] == fill_values(decl, ends, reference)
            expected = Expected()
            for spec, ts, value in first:
                expected.add(catalog, spec.meter, next(iter(spec.units)), ts, value)
            for ts in ends:
                expected.add(catalog, silent.meter, "MWh", ts, fills[ts], ts - MIN)
            problems = wait_equal(client, stack.influx_bucket, unique_name, expected, 60)
            assert not problems, summarize(problems) + "\n" + worker.tail()
            n_filled = _ytd_field(
                client, stack.influx_bucket, unique_name, silent, "gap_filled_readings"
            )
            assert n_filled == len(ends)

            # recovered: the real readings of the gap, shuffled, hours late, and a fill
            # sent again after them (a replay of the filler's message)
            late = list(withheld)
            rng.shuffle(late)
            send(late)
            again = [(silent, ends[0], fills[ends[0]])]
            send(again, quality="gap_filled", start=ends[0] - MIN)
            expected = Expected()
            for spec, ts, value in real:
                expected.add(catalog, spec.meter, next(iter(spec.units)), ts, value)
            problems = wait_equal(client, stack.influx_bucket, unique_name, expected, 90)
            assert not problems, summarize(problems) + "\n" + worker.tail()
            problems = compare_ytd_latest(expected, client, stack.influx_bucket, unique_name)
            assert not problems, "\n".join(problems[:20])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                left = _ytd_field(
                    client, stack.influx_bucket, unique_name, silent, "gap_filled_readings"
                )
                if left == 0:
                    break
                time.sleep(1)
            assert left == 0
        view = worker.get(f"/twin/{cluster}/{silent.site}/")
        assert view["fills_replaced"] == len(ends), view
        year = next(iter(view["completeness"]))
        assert view["completeness"][year]["gap_filled"]["readings"] == 0
        assert view["completeness"][year]["measured"]["share_tco2e"] == 1.0
        whole = worker.get(f"/twin/{cluster}/")
        assert whole["completeness"]["by_year"][year]["gap_filled"]["tco2e"] == 0.0
    finally:
        prod.close()
        worker.stop()
