"""Hostile envelopes: one grouped dead letter each, exact counts, bounded work, no crash."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.envelope import (
    MAX_DEADLETTER_BYTES,
    MAX_EXPLAINED_READINGS,
    Record,
    decode_batch,
)
from tests.unit.streams.test_pipeline_units import NOW, T0, Harness, catalog, reading, record
from twin import deadletter


def _mixed(n: int, seed: int) -> tuple[list[object], dict[int, str]]:
    """``n`` readings, most of them bad in one of several ways; the bad ones' indices and
    a substring of the reason each must get (the offline verdict)."""
    rng = random.Random(seed)
    readings: list[object] = []
    bad: dict[int, str] = {}
    for i in range(n):
        kind = rng.choice(["good", "unknown", "negative", "shape", "future", "quality"])
        ts = T0 + i  # distinct per meter: no repeats among the good ones
        if kind == "good":
            readings.append(reading("gas-a", ts, 1.0))
            continue
        if kind == "unknown":
            readings.append(reading(f"ghost-{i}", ts, 1.0))
            bad[i] = "unknown meter"
        elif kind == "negative":
            readings.append(reading("gas-a", ts, -1.0 - i))
            bad[i] = "negative value"
        elif kind == "shape":
            readings.append({**reading("gas-a", ts, 1.0), "ts": str(ts)})
            bad[i] = "'ts' must be an integer"
        elif kind == "future":
            readings.append(reading("gas-a", NOW + 3_600_000 + i, 1.0))
            bad[i] = "ahead of the record time"
        else:
            readings.append({**reading("gas-a", ts, 1.0), "quality": "guessed"})
            bad[i] = "not one of"
    return readings, bad


def _rule_words(want: str) -> tuple[str, ...]:
    """What a reason past the explained ones says for ``want`` (the failed check's name)."""
    return {
        "unknown meter": ("unknown meter", "meter unknown here"),
        "not one of": ("not one of", "quality not accepted"),
        "ahead of the record time": ("ahead of the record time",),
        "negative value": ("negative value",),
        "'ts' must be an integer": ("'ts' must be an integer",),
    }[want]


def test_a_50000_reading_envelope_of_bad_readings_is_one_dead_letter_with_exact_counts():
    readings, bad = _mixed(50_000, seed=3)
    h = Harness()
    rec = record("a", readings, 0)
    h.run([rec])
    dl = h.topic("dl")
    assert len(dl) == 1
    _, key, payload, headers = dl[0]
    assert key == b"a" and payload == rec.value  # the original bytes, once
    raw = dict(headers)[deadletter.REJECTED_HEADER]
    assert len(raw) <= deadletter.MAX_REJECTED_BYTES
    got = deadletter.read(headers)
    assert (got.rejected, got.readings) == (len(bad), 50_000)
    assert h.state("a").accepted == 50_000 - len(bad)
    # what is listed is right: every listed index is a bad one, under a reason naming it
    listed = 0
    for why, indices in got.groups.items():
        for i in indices:
            assert any(w in why for w in _rule_words(bad[i])), (i, why)
        listed += len(indices)
    assert 0 < listed <= len(bad)
    assert f"{len(bad)} of 50000 readings rejected" in got.reason


def test_every_index_is_kept_in_the_worker_and_the_work_is_bounded():
    readings, bad = _mixed(50_000, seed=4)
    rec = record("a", readings, 0)
    batch = decode_batch([rec], catalog())
    # a Reject object (and a reason spelled out by the scalar rules) for at most the first
    # MAX_EXPLAINED_READINGS of each check family; the rest are index arrays
    assert len(batch.rejects) <= 2 * MAX_EXPLAINED_READINGS
    assert batch.rejected_readings() == len(bad)
    (letter,) = batch.deadletters()
    grouped = letter.grouped  # type: ignore[attr-defined]
    assert sorted(i for ix in grouped.groups.values() for i in ix) == sorted(bad)
    for why, indices in grouped.groups.items():
        assert all(any(w in why for w in _rule_words(bad[i])) for i in indices), why


def test_many_distinct_reasons_stay_within_the_header_limit_and_counts_stay_exact():
    group = deadletter.RejectedReadings(100_000)
    for i in range(100_000):
        group.add(i, f"reading {i} (meter 'ghost-{i}'): unknown meter 'ghost-{i}' in cluster 'c'")
    raw = group.encode()
    assert len(raw) <= deadletter.MAX_REJECTED_BYTES
    body = orjson.loads(raw)
    assert body["rejected"] == 100_000
    assert body["unlisted"] + sum(g["count"] for g in body["groups"]) == 100_000
    got = deadletter.read([(deadletter.REJECTED_HEADER, raw)])
    assert not got.complete and got.rejected == 100_000


def test_runs_of_indices_round_trip():
    group = deadletter.RejectedReadings(50)
    indices = [0, 1, 2, 3, 7, 9, 10, 20, 21, 22, 23, 24, 49]
    for i in indices:
        group.add(i, f"reading {i}: field 'ts' must be an integer (epoch ms UTC)")
    got = deadletter.read([(deadletter.REJECTED_HEADER, group.encode())])
    assert got.complete and got.groups == {"field 'ts' must be an integer (epoch ms UTC)": indices}


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"{" * 100_000,
        # a deep unknown field inside a reading: msgspec skipping it once raised RecursionError
        orjson.dumps(
            {"schema": "readings/1", "cluster": "c", "site": "a", "source": "t", "sent_at": NOW}
        )[:-1]
        + b',"readings":[{"meter":"gas-a","ts":1,"value":1,"unit":"MWh","carrier":"natural_gas",'
        b'"quality":"measured","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
    ],
)
def test_deep_nesting_is_malformed_json_not_a_crash(raw: bytes):
    batch = decode_batch([Record("readings", 0, 1, NOW, b"a", raw)], catalog())
    (reject,) = batch.deadletters()
    assert "malformed JSON" in reject.reason and reject.payload() == raw


def test_a_grouped_dead_letter_too_big_for_the_topic_keeps_its_head_and_says_so():
    pad = "x" * (MAX_DEADLETTER_BYTES + 1000)
    rec = record("a", [{**reading("nope", T0, 1.0), "pad": pad}, reading("gas-a", T0, 1.0)], 0)
    assert rec.value is not None
    (letter,) = decode_batch([rec], catalog()).deadletters()
    headers = dict(letter.headers())
    assert letter.payload() == rec.value[:MAX_DEADLETTER_BYTES]
    assert headers[deadletter.TRUNCATED_HEADER] == str(len(rec.value)).encode()
    got = deadletter.read(letter.headers())
    assert got.rejected == 1 and got.groups == {
        "meter 'nope': unknown meter 'nope' in cluster 'c'": [0]
    }


def test_every_shape_of_dead_letter_reads_alike():
    rec = record("a", [reading("gas-a", T0, 1.0), reading("nope", T0, 1.0)], 0)
    batch = decode_batch([rec], catalog())
    (one,) = batch.rejects  # the per-reading reject, as written one by one before grouping
    (letter,) = batch.deadletters()
    old, new = deadletter.read(one.headers()), deadletter.read(letter.headers())
    assert old.groups == new.groups == {"meter 'nope': unknown meter 'nope' in cluster 'c'": [1]}
    assert (old.rejected, new.rejected, new.readings) == (1, 1, 2)
    # an edge sample's dead letter: its reason, no readings listed
    edge = deadletter.read([(deadletter.REASON_HEADER, b"unknown meter 'x' in cluster 'c'")])
    assert (edge.reason, edge.groups, edge.rejected) == ("unknown meter 'x' in cluster 'c'", {}, 0)
