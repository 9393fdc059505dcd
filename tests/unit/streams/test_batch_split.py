"""A batch taken is stored in runs bounded by bytes: huge envelopes cannot make one long batch."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

from streams.runtime.agents import Batch


def _events(sizes: list[int]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(message=SimpleNamespace(value=b"x" * n, offset=i))
        for i, n in enumerate(sizes)
    ]


def test_runs_keep_order_stay_under_the_bound_and_a_big_record_goes_alone():
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.choice([0, 10, 100, 999, 1000, 5000]) for _ in range(rng.randint(1, 40))]
        events = _events(sizes)
        parts = Batch(None, events).split(1000)
        assert [e for p in parts for e in p.events] == events  # all of them, in order
        for p in parts:
            total = sum(len(e.message.value) for e in p.events)
            assert total <= 1000 or len(p.events) == 1
        # runs are as long as the bound allows: the next record would not have fitted
        for a, b in itertools.pairwise(parts):
            total = sum(len(e.message.value) for e in a.events)
            assert total + len(b.events[0].message.value) > 1000


def test_a_small_batch_is_not_cut():
    batch = Batch(None, _events([10, 20, 30]))
    assert batch.split(1000) == [batch]
