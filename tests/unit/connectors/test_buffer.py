"""The on-disk buffer: ordered, bounded, persistent, and honest after a crash."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors.sdk.backoff import Backoff
from connectors.sdk.buffer import BufferFull, DiskBuffer, Record


def rec(i: int, size: int = 100) -> Record:
    return Record(
        topic="readings",
        key=f"site-{i % 3}".encode(),
        value=f"{i:08d}".encode() * (size // 8),
        headers=(("h", bytes([i % 256])),),
        n_readings=i,
        newest_ts=1_000 + i,
    )


def drain(buf: DiskBuffer) -> list[int]:
    out = []
    while batch := buf.read(7):
        out.extend(int(r.value[:8]) for _p, r in batch)
        buf.ack(batch[-1][0], len(batch))
    return out


def test_records_come_back_in_order_with_their_fields(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, segment_bytes=1000)  # many segments
    for i in range(50):
        buf.append(rec(i))
    first = buf.read(1)[0][1]
    assert first == rec(0)
    buf.rewind()
    assert drain(buf) == list(range(50))
    assert buf.pending == 0


def test_unacknowledged_records_survive_a_restart_and_acked_ones_do_not(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, segment_bytes=1000)
    for i in range(30):
        buf.append(rec(i))
    batch = buf.read(10)
    buf.ack(batch[-1][0], 10)
    buf.read(5)  # read but never acknowledged: must come again
    buf.close()
    again = DiskBuffer(tmp_path, segment_bytes=1000)
    assert again.pending == 20
    again.append(rec(30))
    assert drain(again) == list(range(10, 31))


def test_rewind_replays_everything_not_acknowledged(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path)
    for i in range(10):
        buf.append(rec(i))
    batch = buf.read(4)
    buf.ack(batch[1][0], 2)
    buf.read(100)
    buf.rewind()
    assert drain(buf) == list(range(2, 10))


def test_bound_raises_buffer_full_and_frees_space_once_acknowledged(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, max_bytes=5_000, segment_bytes=1_000)
    n = 0
    with pytest.raises(BufferFull, match="holds"):
        while True:
            buf.append(rec(n))
            n += 1
    assert 20 < n < 50
    assert buf.used_bytes <= 5_000
    buf.append(rec(n), force=True)  # shutdown path: over the bound rather than lost
    assert drain(buf) == list(range(n + 1))
    assert buf.used_bytes < 1_000
    buf.append(rec(999))  # room again


def test_torn_write_after_a_crash_is_cut_and_appends_continue(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path)
    for i in range(5):
        buf.append(rec(i))
    buf.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    with open(seg, "ab") as fh:
        fh.write(b"CT\x00\x00\x00\x00\xff\x00\x00\x00half a frame")
    again = DiskBuffer(tmp_path)
    again.append(rec(5))
    assert drain(again) == list(range(6))


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    b = Backoff(initial=1, maximum=8, jitter=0.1, rng=random.Random(3))
    delays = [b.next() for _ in range(6)]
    assert 0.9 <= delays[0] <= 1.1
    assert 1.8 <= delays[1] <= 2.2
    assert all(7.2 <= d <= 8.8 for d in delays[3:])
    b.reset()
    assert b.next() <= 1.1
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)
