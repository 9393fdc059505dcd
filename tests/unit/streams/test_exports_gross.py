"""An import meter's exports are not netted against scope 2 (GHG Protocol Scope 2 Guidance).

One cluster YAML declares a bidirectional grid connection (with a supplier contract, so the
market figure differs from the location one), a bidirectional hydrogen import (scope 3) and
a bidirectional gas import (scope 1). Readings of both signs go through the worker's real
stages (``catalog_from_clusters`` from the YAML, site stage, cluster stage), shuffled and
repeated in random envelopes; every year to date must equal the offline twin
(``EmissionsCalculator.compute_figures``), reading by reading rounded to the nano-unit, and
the scope 2 and 3 of the exports must be nothing: net metering would fail here.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pytest

import tests.unit.streams.test_arrival_orders as arrival
from streams.meter_vectors import NANO, MeterVectors, offline_price
from streams.twinlink import catalog_from_clusters
from streams.windows import NFIG, year_of
from tests.unit.streams.test_pipeline_units import T0, reading
from twin.emissions import EmissionsCalculator
from twin.model import Cluster, parse_cluster

PPA = 0.012  # tCO2e/MWh of the supplier contract


def _meter(mid: str, carrier: str, **over: Any) -> dict[str, Any]:
    return {"id": mid, "carrier": carrier, "unit": "MWh", "boundary": "import",
            "bidirectional": True, **over}  # fmt: skip


CLUSTER = {
    "id": "c",
    "name": "exports",
    "country": "FR",
    "grid_zone": "FR",
    "reference_year": 2026,
    "factors": [
        {"id": "supplier:test-ppa", "carrier": "electricity", "tco2e_per_unit": PPA,
         "kind": "supplier", "source": "test contract", "year": 2026},
    ],
    "sites": [
        {"id": "a", "name": "a", "assets": [{"id": "x", "meters": [
            _meter("elec-a", "electricity", supplier_factor_id="supplier:test-ppa"),
            _meter("h2-a", "hydrogen", route="smr"),
        ]}]},
        {"id": "b", "name": "b", "assets": [{"id": "y", "meters": [
            _meter("gas-b", "natural_gas"),
        ]}]},
    ],
}  # fmt: skip
METERS = {
    "elec-a": ("a", "electricity", "MWh"),
    "h2-a": ("a", "hydrogen", "MWh"),
    "gas-b": ("b", "natural_gas", "MWh"),
}


def _cluster() -> Cluster:
    return parse_cluster(CLUSTER, "inline")


def _readings(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(n):
        meter = rng.choice(list(METERS))
        _, carrier, unit = METERS[meter]
        ts = T0 + rng.randrange(0, 2 * 3_600_000, 1000)
        value = float(rng.randrange(-4_000, 10_000)) / 8  # about a third exports
        out.setdefault((meter, ts), reading(meter, ts, value, unit, carrier))
    return list(out.values())


def _twin_ytd(cluster: Cluster, readings: list[dict[str, Any]]) -> dict[tuple[str, ...], list[int]]:
    """The year to date per site and carrier, from the twin's calculator, reading by
    reading rounded to the nano-unit as the worker stores them."""
    calc = EmissionsCalculator(cluster)
    out: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * (NFIG + 1))
    for r in {(r["meter"], r["ts"]): r for r in readings}.values():
        site, carrier, _ = METERS[r["meter"]]
        i = calc.position(r["meter"])
        figures = calc.compute_figures([i], [r["value"] * float(calc.scale[i])])[:, 0]
        vec = [round(r["value"] * NANO), *(round(float(x) * NANO) for x in figures), 1]
        acc = out[("twin_ytd", site, carrier, str(year_of(r["ts"] - r["ts"] % 3_600_000)))]
        for k in range(NFIG + 1):
            acc[k] += vec[k]
    return dict(out)


def _play(
    monkeypatch: pytest.MonkeyPatch, catalog: MeterVectors, sent: list[dict[str, Any]]
) -> dict[tuple[str, ...], list[int]]:
    monkeypatch.setattr(arrival, "catalog", lambda: catalog)
    monkeypatch.setattr(arrival, "METERS", METERS)
    w = asyncio.run(arrival.play(random.Random(3), sent, 30_000, 6 * 3_600_000))
    return {k: v for k, v in arrival.stored(w.store).items() if k[0] == "twin_ytd"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exports_carry_no_scope2_or_3_on_both_paths_in_any_arrival_order(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    cluster = _cluster()
    catalog = catalog_from_clusters([cluster])
    rng = random.Random(seed)
    readings = _readings(rng, 300)
    sent = list(readings)
    rng.shuffle(sent)
    for r in rng.sample(readings, len(readings) // 4):  # repeats, anywhere
        sent.insert(rng.randrange(len(sent) + 1), dict(r))
    want = _twin_ytd(cluster, readings)
    assert _play(monkeypatch, catalog, sent) == want
    # each reading alike on the worker's slow path
    calc = EmissionsCalculator(cluster)
    for r in readings[:50]:
        i = calc.position(r["meter"])
        twin = calc.compute_figures([i], [r["value"]])[:, 0]
        worker = offline_price(catalog, r["meter"], "MWh", r["value"])
        assert worker[1:] == [round(float(x) * NANO) for x in twin]

    # by hand: scope 2 and 3 are the imports' alone; energy and scope 1 stay signed
    grid = float(calc.coef[1, calc.position("elec-a")])
    h2 = float(calc.coef[3, calc.position("h2-a")])
    gas = float(calc.coef[0, calc.position("gas-b")])
    distinct = {(r["meter"], r["ts"]): r["value"] for r in readings}
    imports = defaultdict(float)
    net = defaultdict(float)
    for (meter, _), v in distinct.items():
        imports[meter] += max(v, 0.0)
        net[meter] += v
    assert any(v < 0 for v in distinct.values())
    [elec] = [v for k, v in want.items() if k[2] == "electricity"]
    [hyd] = [v for k, v in want.items() if k[2] == "hydrogen"]
    [fuel] = [v for k, v in want.items() if k[2] == "natural_gas"]
    assert elec[0] == pytest.approx(net["elec-a"] * NANO, abs=len(distinct))  # MWh: net
    assert elec[2] == pytest.approx(imports["elec-a"] * grid * NANO, abs=len(distinct))
    assert elec[3] == pytest.approx(imports["elec-a"] * PPA * NANO, abs=len(distinct))
    assert hyd[4] == pytest.approx(imports["h2-a"] * h2 * NANO, abs=len(distinct))
    assert fuel[1] == pytest.approx(net["gas-b"] * gas * NANO, abs=len(distinct))
    # net metering would have credited the exports
    assert imports["elec-a"] * grid - net["elec-a"] * grid > 1.0


def test_a_compiled_catalog_and_a_converted_unit_keep_the_rule() -> None:
    """A deployment ships the index as JSON (``MeterVectors.to_json``), and a reading in
    another unit than the declared one gets a row made at run time: the rule holds in both."""
    catalog = catalog_from_clusters([_cluster()])
    again = MeterVectors.from_records(orjson.loads(catalog.to_json()))
    i = again.index["elec-a"]
    priced = again.price(np.array([i, i]), np.array([1.0, -0.5]))
    assert priced[0, 0] == NANO and priced[1, 0] == -NANO // 2  # MWh signed
    assert priced[0, 2] > 0 and priced[1, 2] == 0 and priced[1, 3] == 0
    row = catalog.resolve_unit(catalog.index["elec-a"], "kWh")
    assert row is not None
    priced = catalog.price(np.array([row, row]), np.array([1000.0, -500.0]))
    assert priced[0, 0] == NANO and priced[1, 0] == -NANO // 2
    assert priced[0, 2] > 0 and priced[1, 2] == 0 and priced[1, 3] == 0
