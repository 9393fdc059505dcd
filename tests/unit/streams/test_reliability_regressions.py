"""Edge cases the reliability suite (tests/reliability) found, pinned down without a broker."""

from __future__ import annotations

from streams.envelope import MAX_DEADLETTER_BYTES, Record, decode_batch
from tests.unit.streams.test_pipeline_units import (
    NOW,
    T0,
    Harness,
    catalog,
    reading,
    record,
)


def test_a_huge_float_beside_an_integer_value_is_rejected_alone():
    # the batch's int-range check once saw the float's size and sent the envelope to the
    # slow path, which found it well-formed: an assertion there crashed the worker's agent
    rec = record("a", [reading("gas-a", T0 + 1000, 0), reading("gas-a", T0 + 2000, 1e300)], 0)
    batch = decode_batch([rec], catalog())
    assert len(batch.env) == 1 and batch.value.tolist() == [0.0]
    assert [r.index for r in batch.rejects] == [1]
    assert "plausible maximum" in batch.rejects[0].reason


def test_a_dead_letter_too_big_for_the_topic_keeps_its_head_and_says_so():
    raw = b"x" * (MAX_DEADLETTER_BYTES + 10)
    reject = decode_batch([Record("readings", 0, 3, NOW, b"a", raw)], catalog()).rejects[0]
    assert reject.payload() == raw[:MAX_DEADLETTER_BYTES]
    assert dict(reject.headers())["clustertwin-dl-truncated"] == str(len(raw)).encode()
    small = decode_batch([Record("readings", 0, 4, NOW, b"a", b"{bad")], catalog()).rejects[0]
    assert small.payload() == b"{bad" and "clustertwin-dl-truncated" not in dict(small.headers())


def test_stale_records_after_a_seek_do_not_use_up_the_gap_tries():
    # records fetched before the seek keep coming for a moment: one attempt, not five, so
    # the gap is not given up (and its records skipped for good) within a second
    h = Harness()
    h.run([record("a", [reading("gas-a", T0, 1.0)], 0)])
    for offset in range(2, 12):
        held, seeks = h.run([record("a", [reading("gas-a", T0 + offset * 1000, 1.0)], offset)])
        assert [r.offset for r in held] == [offset] and seeks == {0: 1}
    assert h.stage.gap_tries == {(0, 1): 1}
    held, seeks = h.run([record("a", [reading("gas-a", T0 + 1000, 1.0)], 1)])
    assert not held and not seeks
