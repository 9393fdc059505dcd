"""Benchmark: load 33 clusters x 100 sites x 50 meters (165,000 meters) from YAML files.

Writes the synthetic network of ``bench_twin`` as cluster files to a temporary directory,
then prints, side by side in one run:
  * YAML parsing alone with PyYAML's pure-Python ``SafeLoader`` (the old loader) and with
    the project's loader (``twin.yaml_loader``: libyaml's ``CSafeLoader``), and their ratio;
  * the whole load as the twin does it (``load_cluster``: read, parse, validate), then the
    emission calculator's construction, and their total; with ``--old-total`` the same with
    the old loader (``yaml.safe_load``, collector running) first, side by side;
  * with ``--profile``, the top functions of that whole load under cProfile.

Run: .venv/bin/python bench/bench_load.py [--clusters 33 --sites 100 --meters 50 --profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from bench_twin import synthetic_raw  # noqa: E402

from twin.emissions import EmissionsCalculator  # noqa: E402
from twin.model import load_cluster  # noqa: E402
from twin.yaml_loader import FAST, load_yaml  # noqa: E402


def write_network(root: Path, clusters: int, sites: int, meters: int) -> list[Path]:
    rng = np.random.default_rng(16)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    paths = []
    for k in range(clusters):
        path = root / f"bench-{k}.yaml"
        raw = synthetic_raw(k, sites, meters, rng)
        path.write_text(yaml.dump(raw, Dumper=dumper, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def _timed_parse(paths: list[Path], new: bool) -> float:
    t0 = time.perf_counter()
    for p in paths:
        text = p.read_text(encoding="utf-8")
        load_yaml(text) if new else yaml.safe_load(text)
    return time.perf_counter() - t0


def _old_load_all(paths: list[Path]) -> tuple[float, float]:
    """The whole load as it was: ``yaml.safe_load`` in ``load_cluster``."""
    import twin.model

    twin.model.load_yaml = yaml.safe_load  # type: ignore[assignment]
    try:
        return _load_all(paths)
    finally:
        twin.model.load_yaml = load_yaml


def _load_all(paths: list[Path]) -> tuple[float, float]:
    t0 = time.perf_counter()
    clusters = [load_cluster(p) for p in paths]
    t1 = time.perf_counter()
    for c in clusters:
        EmissionsCalculator(c)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=33)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--meters", type=int, default=50)
    ap.add_argument("--profile", action="store_true", help="cProfile the whole load")
    ap.add_argument("--old-total", action="store_true", help="also the whole load as it was")
    args = ap.parse_args()
    n = args.clusters * args.sites * args.meters
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_network(Path(tmp), args.clusters, args.sites, args.meters)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        size = f"{args.clusters} clusters x {args.sites} sites x {args.meters} meters"
        print(f"{size} = {n:,} meters")
        print(f"{len(paths)} YAML files, {mb:.1f} MB")
        old = _timed_parse(paths, new=False)
        new = _timed_parse(paths, new=True)
        label = "CSafeLoader" if FAST else "SafeLoader (no libyaml)"
        print(f"{'':<28}{'old safe_load':>16}{'new ' + label:>24}{'ratio':>8}")
        print(f"{'YAML parse':<28}{old:>15.2f}s{new:>23.2f}s{old / new:>7.1f}x")
        if args.old_total:
            was = sum(_old_load_all(paths))
            print(f"{'(old) total load':<28}{was:>15.2f}s")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
        load_s, calc_s = _load_all(paths)
        if args.profile:
            prof.disable()
        print(f"{'load_cluster (all files)':<28}{load_s:>15.2f}s")
        print(f"{'EmissionsCalculator build':<28}{calc_s:>15.2f}s")
        total = load_s + calc_s
        print(f"{'total load':<28}{total:>15.2f}s  ({n / total:,.0f} meters/s)")
        if args.profile:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
            print(out.getvalue())


if __name__ == "__main__":
    main()
