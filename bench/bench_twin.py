"""Benchmark: recompute the twin of 33 clusters x 100 sites x 50 meters (165,000 meters).

Prints, side by side in one run:
  * build time (YAML-equivalent validation + per-meter factor resolution), paid once per
    cluster load, not per recompute;
  * full recompute of every cluster (annual quantity per meter -> site views, cluster view,
    eliminations) with the vectorised EmissionsCalculator, and the same with a plain Python
    per-meter loop, and their ratio;
  * envelope-style batch throughput (readings/s) and to_canonical conversion throughput.

Run: .venv/bin/python bench/bench_twin.py [--clusters 33 --sites 100 --meters 50 --repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from twin.carriers import Carrier, to_canonical
from twin.emissions import EmissionsCalculator
from twin.model import Cluster, parse_cluster

ZONES = ("FR", "NL", "CN")

# (carrier, unit, boundary, extra) cycled over a site's meters: every carrier and boundary kind.
TEMPLATES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("natural_gas", "MWh", "import", {}),
    ("electricity", "kWh", "import", {}),
    ("coal", "t", "import", {}),
    ("diesel", "L", "import", {}),
    ("steam", "MWh", "transfer", {"to": 1}),
    ("process_co2", "t", "onsite_generation", {}),
    ("hydrogen", "kg", "import", {"route": "smr"}),
    ("electricity", "MWh", "transfer", {"to": 2}),
    ("fuel_oil", "t", "import", {}),
    ("shore_power", "MWh", "import", {"supplier_factor_id": "supplier:renewable-eac-shore"}),
    ("process_co2", "t", "export", {}),
    # A fuel may not go round (twin.model): blast-furnace gas only flows to higher sites.
    ("blast_furnace_gas", "GJ", "transfer", {"to": 3, "forward": True}),
    ("lpg", "t", "import", {}),
    ("heat", "GJ", "import", {}),
    ("electricity", "MWh", "onsite_generation", {}),
    ("coke", "t", "import", {}),
    ("naphtha", "t", "import", {}),
    ("electricity", "MWh", "import", {"supplier_factor_id": "supplier:renewable-eac"}),
)


def synthetic_cluster(k: int, n_sites: int, n_meters: int, rng: np.random.Generator) -> Cluster:
    return parse_cluster(synthetic_raw(k, n_sites, n_meters, rng), f"bench-{k}")


def synthetic_raw(k: int, n_sites: int, n_meters: int, rng: np.random.Generator) -> dict[str, Any]:
    """The cluster file (as data) of synthetic cluster ``bench-<k>``; bench_scale writes it
    out for the worker and the simulator."""
    sites = []
    for s in range(n_sites):
        meters = []
        for m in range(n_meters):
            carrier, unit, boundary, extra = TEMPLATES[(s + m) % len(TEMPLATES)]
            meter: dict[str, Any] = {
                "id": f"c{k}-s{s}-m{m}",
                "carrier": carrier,
                "unit": unit,
                "boundary": boundary,
                "annual_quantity": float(rng.uniform(10, 10_000)),
            }
            if "to" in extra and extra.get("forward") and s + extra["to"] >= n_sites:
                meter["boundary"] = "import"  # no higher site to send it to: bought in
            elif "to" in extra:
                meter["to_site"] = f"s{(s + extra['to']) % n_sites}"
            for key in ("route", "supplier_factor_id"):
                if key in extra:
                    meter[key] = extra[key]
            meters.append(meter)
        sites.append(
            {"id": f"s{s}", "name": f"site {s}", "assets": [{"id": "a", "meters": meters}]}
        )
    raw = {
        "id": f"bench-{k}",
        "name": f"bench cluster {k}",
        "country": ZONES[k % 3],
        "grid_zone": ZONES[k % 3],
        "reference_year": 2022,
        "sites": sites,
    }
    return raw


def naive_recompute(calc: EmissionsCalculator, q: list[float]) -> tuple[list[float], list[float]]:
    """What the twin would do without numpy: per meter, look its coefficients up, attribute
    to a site, skip eliminated rows for the cluster total."""
    coef = calc.coef.T.tolist()
    site_of = calc.site_of.tolist()
    credit = calc.credit_site.tolist()
    moves = calc.moves.tolist()
    counts = calc.counts_in_cluster.tolist()
    scale = calc.scale.tolist()
    sites = [0.0] * calc.n_sites
    cluster = [0.0, 0.0, 0.0, 0.0]
    for i in range(calc.n_meters):
        qc = q[i] * scale[i]
        c = coef[i]
        e = [c[0] * qc, c[1] * qc, c[2] * qc, c[3] * qc]
        sites[site_of[i]] += e[0]
        if moves[i]:
            sites[credit[i]] -= e[0]
        if counts[i]:
            for s in range(4):
                cluster[s] += e[s]
    return sites, cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=33)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--meters", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    total_meters = args.clusters * args.sites * args.meters
    print(
        f"twin: {args.clusters} clusters x {args.sites} sites x {args.meters} meters "
        f"= {total_meters:,} meters"
    )

    t0 = time.perf_counter()
    clusters = [synthetic_cluster(k, args.sites, args.meters, rng) for k in range(args.clusters)]
    t1 = time.perf_counter()
    calcs = [EmissionsCalculator(c) for c in clusters]
    t2 = time.perf_counter()
    print(f"build (once per load): validate {t1 - t0:.2f} s, resolve factors {t2 - t1:.2f} s")

    quantities = [np.array([m.annual_quantity or 0.0 for _, _, m in c.meters()]) for c in clusters]
    idxs = [np.arange(c.n_meters, dtype=np.intp) for c in calcs]

    def vectorised() -> list[np.ndarray]:
        return [
            calc.aggregate(idx, calc.compute_in_meter_units(idx, q)).cluster
            for calc, idx, q in zip(calcs, idxs, quantities, strict=True)
        ]

    times = []
    for _ in range(args.repeat):
        a = time.perf_counter()
        vec = vectorised()
        times.append(time.perf_counter() - a)
    vec_median = statistics.median(times)

    qlists = [q.tolist() for q in quantities]
    naive_times = []
    for _ in range(max(1, args.repeat // 5)):
        a = time.perf_counter()
        naive = [naive_recompute(calc, q) for calc, q in zip(calcs, qlists, strict=True)]
        naive_times.append(time.perf_counter() - a)
    naive_median = statistics.median(naive_times)
    for v, (_, ncl) in zip(vec, naive, strict=True):
        np.testing.assert_allclose(v, ncl, rtol=1e-9)  # same answer both ways

    print(
        f"full recompute, vectorised : median {vec_median * 1e3:8.1f} ms "
        f"(min {min(times) * 1e3:.1f} ms, {args.repeat} runs)"
    )
    print(f"full recompute, Python loop: median {naive_median * 1e3:8.1f} ms")
    print(
        f"speed-up: {naive_median / vec_median:.1f}x; "
        f"{total_meters / vec_median / 1e6:.1f} M meters/s"
    )
    grand = np.sum(vec, axis=0)
    print(
        f"network totals: scope1 {grand[0] / 1e6:.2f} Mt, scope2 loc {grand[1] / 1e6:.2f} Mt, "
        f"scope2 mkt {grand[2] / 1e6:.2f} Mt, H2 upstream {grand[3] / 1e6:.2f} Mt"
    )

    # Envelope batches as the stream processor sees them: 10,000 readings of one cluster.
    calc = calcs[0]
    n = 10_000
    b_idx = rng.integers(0, calc.n_meters, n)
    b_q = rng.uniform(0, 100, n)
    reps = 200
    a = time.perf_counter()
    for _ in range(reps):
        calc.aggregate(b_idx, calc.compute_in_meter_units(b_idx, b_q))
    per_batch = (time.perf_counter() - a) / reps
    print(
        f"batch of {n:,} readings (compute + site/cluster aggregate): "
        f"{per_batch * 1e3:.2f} ms -> {n / per_batch / 1e6:.2f} M readings/s"
    )

    values = rng.uniform(0, 1e3, 1_000_000)
    a = time.perf_counter()
    for _ in range(20):
        to_canonical(Carrier.DIESEL, values, "L")
    conv = (time.perf_counter() - a) / 20
    print(f"to_canonical, 1,000,000 values (diesel L -> MWh): {conv * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
