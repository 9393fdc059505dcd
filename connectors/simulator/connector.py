"""The simulator connector: a whole cluster's meters from the example model, live or faster.

It drives the demo, so it behaves like a real site feed: one batch per metering interval,
in time order, catching up from a past start as fast as ``speedup`` allows and then
following the wall clock (a reading is never stamped in the future).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from connectors.sdk.base import Connector, ConnectorConfig, Item, MeterMapping, Sample
from connectors.sdk.runner import buffer_dir
from connectors.sdk.timespec import parse_time
from connectors.simulator.profiles import (
    YEAR_MS,
    MeterProfile,
    Shape,
    outage,
    raw_shape,
    seasonal,
    ship_at_berth,
    stable_hash,
)
from twin.model import load_cluster
from twin.readings import MeterIndex, now_ms

# the simulator's start/end and ``clustertwin backfill`` share one time syntax
parse_start = parse_time


class SimulatorConfig(ConnectorConfig):
    seed: int = Field(default=1, description="same seed, same readings")
    speedup: float = Field(
        default=1.0, ge=0, description="simulated seconds per wall second; 0 = as fast as possible"
    )
    step_s: int = Field(default=900, ge=1, le=86_400, description="metering interval")
    start: str = Field(default="now", description="now, now-7d, or ISO 8601")
    end: str | None = Field(default=None, description="stop here (ISO 8601 or now-...)")
    sites: list[str] | None = Field(default=None, description="only these sites")
    noise: float = Field(default=0.03, ge=0, le=0.5)
    outage_rate: float = Field(default=0.04, ge=0, le=1, description="per asset and week")
    gap_rate: float = Field(default=0.03, ge=0, le=1, description="comm gaps, per meter and day")
    fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of deliberately bad samples (demo dead-letter)"
    )
    max_chunk_steps: int = Field(default=96, ge=1, le=10_000)
    intervals: bool = Field(
        default=False,
        description="say which interval each reading measures (readings/2: its metering "
        "interval, ending at its time), so the twin spreads it over the minutes it covers",
    )
    resume: bool = Field(
        default=False,
        description="after a restart, continue after the last interval the previous run handed "
        "on (position kept beside the disk buffer) instead of going back to `start`, whose "
        "readings the worker would dead-letter as duplicates",
    )

    @field_validator("start", "end")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_start(v, 0)
        return v


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a counter -> well-spread 64-bit value (wrapping uint64 maths)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def _uniform(key: int, k: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = k.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key)
    return (_mix(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class ClusterSimulator:
    """Deterministic values for every meter of a cluster at any metering interval."""

    def __init__(self, cluster: object, config: SimulatorConfig) -> None:
        self.config = config
        self.step_ms = config.step_s * 1000
        wanted = set(config.sites) if config.sites else None
        self.profiles: list[MeterProfile] = []
        for site in cluster.sites:  # type: ignore[attr-defined]
            if wanted is not None and site.id not in wanted:
                continue
            for asset in site.assets:
                for meter in asset.meters:
                    self.profiles.append(
                        MeterProfile.build(
                            seed=config.seed,
                            meter=meter.id,
                            asset=asset.id,
                            site=site.id,
                            carrier=str(meter.carrier),
                            unit=meter.unit,
                            asset_kind=asset.kind or asset.id,
                            sector=site.sector,
                            annual_quantity=meter.annual_quantity,
                        )
                    )
        self._keys = [stable_hash(config.seed, p.meter) & 0xFFFFFFFFFFFF for p in self.profiles]

    def values(self, k0: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Intervals k0..k0+n-1 -> (ts[n], value[m, n], estimated[m, n], fault[m, n])."""
        cfg = self.config
        k = np.arange(k0, k0 + n, dtype=np.int64)
        ts = (k * self.step_ms).astype(np.float64)  # interval end
        mid = ts - self.step_ms / 2
        per_step = self.step_ms / YEAR_MS
        m = len(self.profiles)
        value = np.empty((m, n))
        estimated = np.zeros((m, n), dtype=bool)
        fault = np.zeros((m, n), dtype=np.int8)
        for i, p in enumerate(self.profiles):
            shape = raw_shape(p.shape, mid, p.phase)
            if p.shape is Shape.PORT:
                shape = shape + ship_at_berth(cfg.seed, p.asset, mid) * 1.0
            level = shape * p.norm
            if p.carrier in ("heat", "steam", "natural_gas"):
                level = level * seasonal(mid)
            if cfg.outage_rate:
                level = np.where(outage(cfg.seed, p.asset, mid, cfg.outage_rate), 0.03, level)
            key = self._keys[i]
            u1 = np.maximum(_uniform(key, k), 1e-12)
            u2 = _uniform(key ^ 0x5555, k)
            gauss = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
            drift = 0.03 * np.sin(2 * np.pi * mid / (3.7 * 86_400_000) + p.phase)
            expected = p.annual_quantity * per_step * level
            value[i] = np.maximum(0.0, expected * (1 + drift + cfg.noise * gauss))
            if cfg.gap_rate:
                day = (mid // 86_400_000).astype(np.int64)
                g = _uniform(key ^ 0xABCDEF, day)
                gap_start = (_uniform(key ^ 0x123457, day) * 20 * 3_600_000).astype(np.int64)
                in_day = (mid % 86_400_000).astype(np.int64)
                est = (
                    (g < cfg.gap_rate)
                    & (in_day >= gap_start)
                    & (in_day < gap_start + 3 * 3_600_000)
                )
                estimated[i] = est
                value[i] = np.where(est, expected, value[i])  # an estimate: the expected value
            if cfg.fault_rate:
                f = _uniform(key ^ 0xFA17, k)
                fault[i] = np.where(f < cfg.fault_rate, 1 + (k % 3), 0)
        return ts.astype(np.int64), value, estimated, fault

    def samples(self, k0: int, n: int) -> list[Item]:
        """Samples of intervals k0..k0+n-1 in time order (interval by interval), as a feed."""
        ts, value, estimated, fault = self.values(k0, n)
        # Transposed to (interval, meter): the output is in time order without sorting.
        vals, est = value.T.tolist(), estimated.T.tolist()
        meta = [(p.meter, p.unit, p.carrier) for p in self.profiles]
        quality = ("measured", "estimated")
        span = self.step_ms if self.config.intervals else None
        out: list[Item] = [
            Sample(meter, t, v, unit, carrier, quality[e], start=None if span is None else t - span)
            for t, vrow, erow in zip(ts.tolist(), vals, est, strict=True)
            for (meter, unit, carrier), v, e in zip(meta, vrow, erow, strict=True)
        ]
        if self.config.fault_rate:
            m = len(meta)
            for j, i in zip(*np.nonzero(fault.T), strict=True):
                s = out[int(j) * m + int(i)]
                assert isinstance(s, Sample)
                kind = fault[i, j]
                if kind == 1:
                    s.value = float("nan")
                elif kind == 2:
                    s.value = -abs(s.value) - 1.0
                else:
                    s.ts += 50 * 365 * 86_400_000  # a clock reset to the wrong century
                    if s.start is not None:
                        s.start += 50 * 365 * 86_400_000
        return out


class SimulatorConnector(Connector[SimulatorConfig]):
    """Simulated plant and port meters of a cluster (deterministic, any speed-up)."""

    config_model: ClassVar[type[ConnectorConfig]] = SimulatorConfig
    description: ClassVar[str] = "Simulated plant and port load profiles (seeded, any speed-up)"

    def __init__(self, config: SimulatorConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self.sim = ClusterSimulator(load_cluster(config.cluster), config)
        self._next_k: int | None = None  # survives reconnects: no gap, no repeat
        self._saved_at = 0.0

    @property
    def position_file(self) -> Path:
        return buffer_dir(self.config) / "simulator-position.json"

    def _identity(self) -> dict[str, Any]:
        return {"cluster": self.config.cluster, "step_ms": self.sim.step_ms}

    def load_position(self) -> int | None:
        """The next interval a previous run of this connector would have emitted, if any."""
        try:
            data = json.loads(self.position_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in self._identity().items()):
            return None  # another cluster or interval: the position means nothing here
        next_k = data.get("next_k")
        return next_k if isinstance(next_k, int) else None

    def save_position(self, force: bool = False) -> None:
        """Written at most once a second and at close, after the runner has taken the batch:
        a clean restart neither repeats nor skips an interval (a crash may repeat up to a
        second of readings, which the worker dead-letters as duplicates)."""
        if self._next_k is None or (not force and time.monotonic() - self._saved_at < 1.0):
            return
        path = self.position_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._identity(), "next_k": self._next_k}))
        tmp.replace(path)
        self._saved_at = time.monotonic()

    async def close(self) -> None:
        if self.config.resume:
            self.save_position(force=True)
        await super().close()

    @classmethod
    def mapped_meters(cls, config: SimulatorConfig, index: MeterIndex) -> list[MeterMapping]:
        wanted = set(config.sites or index.sites)
        return [MeterMapping(m.meter, None, f"sites {m.site!r}") for m in index if m.site in wanted]

    @classmethod
    def check_config(cls, config: SimulatorConfig, index: MeterIndex) -> list[str]:
        return [
            f"sites: unknown site {s!r} in cluster {index.cluster!r}"
            for s in config.sites or []
            if s not in index.sites
        ]

    reads_history: ClassVar[bool] = True

    async def history(self, start_ms: int, end_ms: int) -> AsyncIterator[Sequence[Item]]:
        """The intervals ending in ``[start_ms, end_ms)`` (never one not yet ended)."""
        step = self.sim.step_ms
        k = -(-start_ms // step)
        last = min((end_ms - 1) // step, now_ms() // step)
        while k <= last:
            n = min(self.config.max_chunk_steps, last - k + 1)
            yield self.sim.samples(k, n)
            k += n
            await asyncio.sleep(0)

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        step = self.sim.step_ms
        wall0 = now_ms()
        if self._next_k is None:
            self._next_k = parse_start(cfg.start, wall0) // step + 1
            saved = self.load_position() if cfg.resume else None
            if saved is not None and saved > self._next_k:
                self._next_k = saved
        end_k = None if cfg.end is None else parse_start(cfg.end, wall0) // step
        sim0_ms, loop0 = self._next_k * step, loop.time()
        while end_k is None or self._next_k <= end_k:
            k = self._next_k
            # Never stamp the future: at most the last interval that has ended.
            live_k = now_ms() // step
            if k > live_k:
                await asyncio.sleep((k * step - now_ms()) / 1000 + 0.001)
                continue
            if cfg.speedup > 0:
                due = loop0 + (k * step - sim0_ms) / 1000 / cfg.speedup
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                n = 1
            else:
                n = min(cfg.max_chunk_steps, live_k - k + 1)
            if end_k is not None:
                n = min(n, end_k - k + 1)
            batch = self.sim.samples(k, n)
            self._next_k = k + n
            yield batch
            if cfg.resume:
                self.save_position()
            if cfg.speedup == 0:
                await asyncio.sleep(0)


__all__ = ["ClusterSimulator", "SimulatorConfig", "SimulatorConnector"]
