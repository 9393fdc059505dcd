"""The typed fast decoder (msgspec) decides exactly as the plain-JSON path (orjson) does.

The worker decodes an envelope with msgspec and falls back to orjson plus field-by-field
checks only when msgspec refuses it. Both paths must accept the same readings, put the same
figures in the same order into the batch columns and reject the same things for the same
reasons, or a replay, or a change of decoder, would change the twin. The reliability
suite's 10,000 generated bad inputs, mixed into good envelopes as that suite sends them,
are decoded both ways and compared field by field.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import numpy as np
import pytest

from streams import envelope
from streams.envelope import Record, decode_batch
from tests.integration.streams.harness import Generator
from tests.reliability.badinput import METERS, SITES
from tests.unit.streams.conftest import BadPlan


class _RefusesEverything:
    def decode(self, raw: bytes) -> Any:
        raise msgspec.ValidationError("forced: judge it on plain JSON")


def _summary(records: list[Record], catalog: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"rejects": [], "columns": []}
    for start in range(0, len(records), 64):
        batch = decode_batch(records[start : start + 64], catalog)
        out["rejects"] += [(r.record.offset, r.index, r.reason, r.payload()) for r in batch.rejects]
        offsets = np.array([e.record.offset for e in batch.envelopes], np.int64)
        out["columns"].append(
            np.stack(
                [
                    offsets[batch.env] if batch.env.size else batch.env,
                    batch.reading_index,
                    batch.meter,
                    batch.row,
                    batch.ts,
                    batch.value.view(np.int64),  # bit for bit
                    batch.quality.astype(np.int64),
                ]
            )
        )
    return out


@pytest.fixture(scope="module")
def records(bad_plan: BadPlan) -> tuple[list[Record], Any]:
    now, plan = bad_plan.now, bad_plan.plan
    out = [Record("readings", 0, i, now, o.key, o.value, o.headers) for i, o in enumerate(plan)]
    return out, bad_plan.catalog


def test_both_decoders_accept_reject_and_order_alike(records, monkeypatch):
    recs, catalog = records
    fast = _summary(recs, catalog)
    monkeypatch.setattr(envelope, "_typed_decoder", lambda catalog: _RefusesEverything())
    plain = _summary(recs, catalog)
    assert len(fast["rejects"]) > 9_000  # the inputs really are bad, and judged
    # the order of dead letters is not part of the contract (they are sent concurrently)
    assert sorted(fast["rejects"]) == sorted(plain["rejects"])
    assert len(fast["columns"]) == len(plain["columns"])
    for a, b in zip(fast["columns"], plain["columns"], strict=True):
        assert np.array_equal(a, b)


def _count_plain_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time an envelope is decoded again as plain JSON."""
    calls: list[int] = []
    real = envelope.orjson.loads

    def counting(raw: Any) -> Any:
        calls.append(1)
        return real(raw)

    monkeypatch.setattr(envelope.orjson, "loads", counting)
    return calls


def test_the_fast_path_is_taken_for_good_envelopes(records, monkeypatch):
    """Guards the point of the fast path: a good envelope never needs its plain JSON."""
    _, catalog = records
    now = int(time.time() * 1000)
    gen = Generator(catalog, "rbad", start_ms=now - 600_000)
    good = [
        Record("readings", 0, i, now, site.encode(), raw)
        for i, (site, raw) in enumerate(e for _ in range(10) for e in gen.step())
    ]
    calls = _count_plain_decodes(monkeypatch)
    batch = decode_batch(good, catalog)
    assert not batch.rejects and batch.env.size == 10 * SITES * METERS
    assert calls == []


def test_escaped_strings_still_take_the_fast_path(records, monkeypatch):
    """The catalog literals are matched on the decoded string, not on its JSON spelling."""
    _, catalog = records
    now = int(time.time() * 1000)
    gen = Generator(catalog, "rbad", start_ms=now - 600_000)
    site, raw = gen.step()[0]
    meter = catalog.specs[catalog.sites[("rbad", site)][0]].meter
    escaped = meter[:-1] + f"\\u{ord(meter[-1]):04x}"
    spelt = raw.replace(f'"{meter}"'.encode(), f'"{escaped}"'.encode())
    spelt = spelt.replace(b'"measured"', b'"measur\\u0065d"')
    assert spelt != raw and b"\\u" in spelt
    calls = _count_plain_decodes(monkeypatch)
    plain = decode_batch([Record("readings", 0, 0, now, site.encode(), raw)], catalog)
    escaped_batch = decode_batch([Record("readings", 0, 0, now, site.encode(), spelt)], catalog)
    assert calls == []
    assert not escaped_batch.rejects
    assert np.array_equal(plain.meter, escaped_batch.meter)
    assert np.array_equal(plain.quality, escaped_batch.quality)
