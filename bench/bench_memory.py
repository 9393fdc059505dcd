"""Memory: RSS of one worker over a steady-rate run must stay flat (growth under 10%).

One worker consumes live envelopes (bench_pipeline's 20 sites x 50 meters, timestamps of
now) produced at a fixed rate; its RSS is read from /proc every ``--sample-s`` seconds.
Growth is measured from the end of the warm-up (``--warmup-minutes``: caches, open windows
and the first closed windows reach their steady size) to the end of the run, and the
maximum is printed too. Windows keep closing all along (1-min windows close 60 s after
their end), so a leak in window state, latency samples or caches shows as growth.

    .venv/bin/python bench/bench_memory.py [--minutes 10] [--rate 5000]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import (  # noqa: E402
    envelopes,
    get,
    prepare_run,
    produce,
    rss_mb,
    start_worker,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the steady run")
    ap.add_argument("--warmup-minutes", type=float, default=None, help="default: 10%% of run")
    ap.add_argument("--rate", type=float, default=5000.0, help="readings/s")
    ap.add_argument("--readings", type=int, default=500, help="readings per envelope")
    ap.add_argument("--sample-s", type=float, default=5.0)
    args = ap.parse_args()
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else args.minutes / 10)

    run = prepare_run("mem", "benchc", 20, 50, ["readings"])
    settings, env_base, name, cat, cat_file = (
        run.settings,
        run.env,
        run.name,
        run.cat,
        run.cat_file,
    )
    topic = f"{name}-readings"

    proc, port = start_worker(env_base, name, topic, cat_file)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - began, rss_mb(proc.pid)))
            stop.wait(args.sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        n_env = int(args.rate * args.minutes * 60 / args.readings)
        print(
            f"memory: 1 worker, {args.rate:,.0f} readings/s for {args.minutes:g} min "
            f"({n_env:,} envelopes), RSS every {args.sample_s:g} s, warm-up {warmup_s:.0f} s",
            flush=True,
        )
        produce(
            settings.kafka_bootstrap,
            topic,
            envelopes(cat, "benchc", n_env, args.readings, 0, live=True),
            rate_readings=args.rate,
        )
        time.sleep(2 * args.sample_s)
        stop.set()
        sampler.join()
        c = get(port, "/twin/")["counters"]
        lat = get(port, "/twin/")["latency_ms"]
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    steady = [(t, r) for t, r in samples if t >= warmup_s] or samples
    start_rss, end_rss = steady[0][1], steady[-1][1]
    peak = max(r for _, r in samples)
    growth = (end_rss - start_rss) / start_rss
    step = max(1, len(samples) // 12)
    print("t (s)  RSS (MB)")
    for t, r in samples[::step]:
        print(f"{t:6.0f} {r:8.1f}")
    print(
        f"processed {c['records']:,} envelopes, {c['accepted']:,} readings accepted, "
        f"{c['points']:,} points; latency p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms"
    )
    print(
        f"RSS after warm-up {start_rss:.1f} MB -> end {end_rss:.1f} MB (peak {peak:.1f} MB): "
        f"growth {growth:+.1%} (target < 10%)",
        flush=True,
    )


if __name__ == "__main__":
    main()
