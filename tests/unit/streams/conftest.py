"""The reliability suite's 10,000 generated bad inputs, generated once per test session.

Generating them takes hypothesis some twenty seconds; the decoder tests and the contract's
two-path test judge the same inputs, so they share one generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from streams.meter_vectors import MeterVectors
from tests.integration.streams.harness import Generator, make_catalog
from tests.reliability import badinput
from tests.reliability.badinput import METERS, SITES, Outgoing, assemble


@dataclass(frozen=True)
class BadPlan:
    cluster: str
    catalog: MeterVectors
    now: int
    #: good envelopes carrying bad readings, bad messages between them, re-sent envelopes
    plan: list[Outgoing]


@pytest.fixture(scope="session")
def bad_plan() -> BadPlan:
    cluster = "rbad"
    catalog = make_catalog(cluster, SITES, METERS)
    now = int(time.time() * 1000)
    messages, bad_readings = badinput.generate(catalog, cluster, now)
    start = now - 3600_000
    gen = Generator(catalog, cluster, start_ms=start - start % 60_000 + 1234)
    return BadPlan(cluster, catalog, now, assemble(gen, messages, bad_readings, seed=8))
