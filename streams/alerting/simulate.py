"""A seeded cluster of noisy meters with injectable faults, in accelerated event time.

The detectors judge event time, so hours of plant operation can be produced in seconds and the
alerts they cause are exactly those of a live run. Used by the alerting tests and benchmark
(and handy for demos); envelopes follow the ``readings/1`` contract of ``twin.readings``.

Readings are energy per interval (MWh), with independent multiplicative Gaussian noise.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.alerting.engine import AlertEngine
from streams.alerting.model import Alert
from streams.alerting.stage import AlertStage
from streams.delivery import Topics
from streams.envelope import Record
from streams.meter_vectors import MeterVectors
from streams.site_stage import SiteStage
from twin.readings import encode_envelope
from twin.targets import Pathway

#: tCO2e per MWh used by the simulated meters (natural gas combustion, grid electricity)
FACTORS = {"natural_gas": 0.2, "electricity": 0.05}


@dataclass(frozen=True)
class SimMeter:
    meter: str
    carrier: str  # natural_gas (scope 1) | electricity (scope 2)
    mwh_per_interval: float


@dataclass(frozen=True)
class SimSite:
    site: str
    meters: tuple[SimMeter, ...]

    def tco2e_per_interval(self) -> float:
        return sum(m.mwh_per_interval * FACTORS[m.carrier] for m in self.meters)


@dataclass(frozen=True)
class StepFault:
    """Every meter of ``site`` reads ``factor`` times its normal value in [start, end)."""

    site: str
    start: int
    end: int
    factor: float


@dataclass(frozen=True)
class StopFault:
    """``meter`` sends nothing in [start, end)."""

    meter: str
    start: int
    end: int


@dataclass(frozen=True)
class FlatFault:
    """``meter`` repeats its last value in [start, end)."""

    meter: str
    start: int
    end: int


Fault = StepFault | StopFault | FlatFault


@dataclass
class SimCluster:
    cluster: str
    sites: tuple[SimSite, ...]
    interval_ms: int = 60_000
    noise: float = 0.05
    seed: int = 7
    faults: Sequence[Fault] = field(default_factory=tuple)

    def catalog(self) -> MeterVectors:
        return MeterVectors.from_records(
            {
                "meter": m.meter,
                "site": s.site,
                "cluster": self.cluster,
                "carrier": m.carrier,
                "units": {
                    "MWh": [
                        1.0,
                        [FACTORS[m.carrier], 0.0, 0.0]
                        if m.carrier == "natural_gas"
                        else [0.0, FACTORS[m.carrier], FACTORS[m.carrier]],
                    ]
                },
            }
            for s in self.sites
            for m in s.meters
        )

    def envelopes(self, start_ms: int, n_intervals: int) -> Iterator[tuple[str, int, bytes]]:
        """(site, sent_at, envelope bytes), in time order: one envelope per site per interval."""
        rng = np.random.default_rng(self.seed)
        meters = [(s, m) for s in self.sites for m in s.meters]
        base = np.array([m.mwh_per_interval for _, m in meters])
        last = base.copy()
        for k in range(n_intervals):
            t = start_ms + k * self.interval_ms
            values = base * (1 + self.noise * rng.standard_normal(base.size))
            send = np.ones(base.size, dtype=bool)
            for f in self.faults:
                if not f.start <= t < f.end:
                    continue
                for j, (s, m) in enumerate(meters):
                    if isinstance(f, StepFault) and s.site == f.site:
                        values[j] *= f.factor
                    elif isinstance(f, StopFault) and m.meter == f.meter:
                        send[j] = False
                    elif isinstance(f, FlatFault) and m.meter == f.meter:
                        values[j] = last[j]
            last = np.where(send, values, last)
            for s in self.sites:
                readings = [
                    {
                        "meter": m.meter,
                        "ts": t,
                        "value": round(float(values[j]), 9),
                        "unit": "MWh",
                        "carrier": m.carrier,
                        "quality": "measured",
                    }
                    for j, (ss, m) in enumerate(meters)
                    if ss is s and send[j]
                ]
                if not readings:
                    continue
                yield (
                    s.site,
                    t,
                    encode_envelope(
                        cluster=self.cluster,
                        site=s.site,
                        source="alerting-sim",
                        readings=readings,
                        sent_at=t,
                    ),
                )


def demo_cluster(
    n_sites: int = 4,
    meters_per_site: int = 3,
    name: str = "simcluster",
    prefix: str = "",
    **kw: object,
) -> SimCluster:
    """A small cluster: per site, gas meters of 10-30 MWh per minute and one grid meter.

    Site ids are ``{prefix}site{i}``, meter ids ``{prefix}s{i}-gas{j}`` / ``{prefix}s{i}-grid``.
    """
    sites = []
    for i in range(n_sites):
        ms = [
            SimMeter(f"{prefix}s{i}-gas{j}", "natural_gas", 10.0 + 5.0 * ((i + j) % 5))
            for j in range(meters_per_site - 1)
        ]
        ms.append(SimMeter(f"{prefix}s{i}-grid", "electricity", 8.0 + i))
        sites.append(SimSite(f"{prefix}site{i}", tuple(ms)))
    return SimCluster(name, tuple(sites), **kw)  # type: ignore[arg-type]


def flat_pathway_tpy(site: SimSite, interval_ms: int, headroom: float) -> float:
    """A yearly pathway value that puts the site's normal rate ``headroom`` below it."""
    per_hour = site.tco2e_per_interval() * 3_600_000 / interval_ms
    return per_hour * 8760.0 / (1.0 - headroom)


HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Scenario:
    """A simulated cluster with injected faults, its pathways and the alerts it must raise."""

    sim: SimCluster
    start_ms: int
    n_intervals: int
    pathways: dict[str, tuple[list[float], list[float]]]
    #: (kind, scope label, fault start ms, fault end ms) of every alert that must open
    expected: tuple[tuple[str, str, int, int], ...]

    def pathway_objects(self) -> dict[str, Any]:
        return {
            k: Pathway(np.array(y, dtype=np.float64), np.array(v, dtype=np.float64))
            for k, (y, v) in self.pathways.items()
        }


def fault_scenario(start_ms: int, prefix: str = "f", hours: int = 60) -> Scenario:
    """Four sites; site0 steps up 15 % for 6 h (and runs 3 % under its pathway otherwise),
    one meter of site1 stops for 2 h, one meter of site2 flat-lines for 4 h."""
    h = HOUR_MS
    faults: list[Fault] = [
        StepFault(f"{prefix}site0", start_ms + 30 * h, start_ms + 36 * h, 1.15),
        StopFault(f"{prefix}s1-gas0", start_ms + 20 * h, start_ms + 22 * h),
        FlatFault(f"{prefix}s2-gas1", start_ms + 40 * h, start_ms + 44 * h),
    ]
    name = f"{prefix}cluster"
    sim = demo_cluster(name=name, prefix=prefix, faults=tuple(faults), seed=11)
    v = flat_pathway_tpy(sim.sites[0], sim.interval_ms, 0.03)
    expected = (
        ("meter_silent", f"{name}/{prefix}site1/{prefix}s1-gas0", faults[1].start, faults[1].end),
        ("emission_shift", f"{name}/{prefix}site0", faults[0].start, faults[0].end),
        ("pathway_drift_1h", f"{name}/{prefix}site0", faults[0].start, faults[0].end),
        ("emission_shift", name, faults[0].start, faults[0].end),
        ("meter_flatline", f"{name}/{prefix}site2/{prefix}s2-gas1", faults[2].start, faults[2].end),
    )
    return Scenario(
        sim, start_ms, hours * 60, {f"{name}/{prefix}site0": ([2020.0, 2030.0], [v, v])}, expected
    )


def noise_scenario(
    start_ms: int,
    prefix: str = "n",
    days: float = 7.0,
    seed: int = 3,
    meters_per_site: int = 3,
    interval_ms: int = 60_000,
) -> Scenario:
    """Plain noise, every site and the cluster 5 % under their pathways: nothing may fire."""
    name = f"{prefix}cluster"
    sim = demo_cluster(
        meters_per_site=meters_per_site,
        name=name,
        prefix=prefix,
        seed=seed,
        interval_ms=interval_ms,
    )
    paths = {}
    total = 0.0
    for s in sim.sites:
        v = flat_pathway_tpy(s, sim.interval_ms, 0.05)
        paths[f"{name}/{s.site}"] = ([2020.0, 2030.0], [v, v])
        total += v
    paths[name] = ([2020.0, 2030.0], [total, total])
    return Scenario(sim, start_ms, int(days * 86_400_000 / interval_ms), paths, ())


def records(
    scenarios: Sequence[Scenario], partitions: int = 4, topic: str = "readings"
) -> list[Any]:
    """The scenarios' envelopes as Kafka-like records (merged in time order, key = site)."""
    streams = [sc.sim.envelopes(sc.start_ms, sc.n_intervals) for sc in scenarios]
    offsets = [0] * partitions
    out = []
    for site, t, body in heapq.merge(*streams, key=lambda e: e[1]):
        p = zlib.crc32(site.encode()) % partitions
        out.append(Record(topic, p, offsets[p], t, site.encode(), body, []))
        offsets[p] += 1
    return out


class ReplayTable:
    """The alert stage's tables for a replay without servers: nothing outlives the replay,
    so a dict stands in for the changelogged Faust table (``streams.delivery.StateTable``)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value

    def delete(self, key: bytes, partition: int) -> None:
        self.data.pop(key, None)

    def all_keys(self) -> Iterable[bytes]:
        return list(self.data)


async def replay_in_memory(
    scenarios: Sequence[Scenario],
    config: Any = None,
    batch: int = 500,
    recs: list[Any] | None = None,
    via_priced: bool = False,
) -> list[Any]:
    """Run the alert stage over the scenarios without servers; returns the alert events.

    ``via_priced``: as in production, the readings go through the stream worker's site
    stage first and the alert stage reads the priced messages it publishes; otherwise the
    alert stage decodes and prices the readings itself.
    """
    catalog = MeterVectors([spec for sc in scenarios for spec in sc.sim.catalog().specs])
    pathways: dict[str, Any] = {}
    for sc in scenarios:
        pathways.update(sc.pathway_objects())
    engine = AlertEngine(catalog, config, pathways, twin="sim")
    events: list[Alert] = []
    cluster_msgs: list[tuple[int, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        if topic == "alerts":
            events.append(Alert.from_json(value))
        else:
            cluster_msgs.append((0, value))

    async def write(lines: Any) -> None:
        return None

    stage = AlertStage(engine, ReplayTable(), ReplayTable(), send, write)
    feed = stream_stage(catalog) if via_priced else None
    recs = records(scenarios) if recs is None else recs
    for i in range(0, len(recs), batch):
        if feed is None:
            await stage.process(recs[i : i + batch])
        else:
            await stage.process_priced(await feed(recs[i : i + batch]))
        if cluster_msgs:
            msgs = list(cluster_msgs)
            cluster_msgs.clear()
            await stage.process_cluster(msgs)
    return events


def stream_stage(
    catalog: MeterVectors, partitions: int = 4, grace_ms: int = 60_000, publish: bool = True
) -> Callable[[Sequence[Any]], Awaitable[list[tuple[int, bytes]]]]:
    """The stream worker's site stage in memory: a batch of ``readings`` records in, the
    (partition, payload) messages it publishes on the priced topic out (``publish=False``:
    none, the stage as it was before it published them)."""
    sent: list[tuple[int, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        if topic == "priced":
            sent.append((zlib.crc32(key or b"") % partitions, value))

    async def write(lines: Any) -> None:
        return None

    topics = Topics("deadletter", "late", "cluster-updates", "priced" if publish else None)
    site_stage = SiteStage(catalog, ReplayTable(), write, send, topics, "sim", grace_ms)

    async def feed(batch: Sequence[Any]) -> list[tuple[int, bytes]]:
        await site_stage.process(batch)
        out = list(sent)
        sent.clear()
        return out

    return feed
