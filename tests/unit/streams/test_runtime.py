"""The worker runtime's parts on their own: the shared Faust settings, the watchdog, the idle timer.

Both workers are built from these parts, and the integration tests run them on the real
stack; these pin the decisions (when to exit, when silence may be acted on) with a consumer
whose answers the test chooses, so a change in one part shows here and not as a flaky run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from clustertwin_base.settings import Settings
from streams.end_offsets import EndOffsets
from streams.envelope import MAX_DEADLETTER_BYTES
from streams.runtime import (
    AppSpec,
    IdleTimer,
    Liveness,
    QuietWorker,
    StallWatchdog,
    create_faust_app,
)


class _Consumer:
    def __init__(self, ends: dict[int, int], committed: dict[int, int] | None = None) -> None:
        self.ends = ends
        self.fail = False
        self._committed_offset = {TP("readings", p): o for p, o in (committed or {}).items()}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        if self.fail:
            raise ConnectionError("broker down")
        return {tp: self.ends[tp.partition] for tp in tps}

    def assignment(self) -> set[TP]:
        return {TP("readings", p) for p in self.ends}


class _Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def _exit(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr("streams.runtime.liveness.os._exit", _exit)
    monkeypatch.setattr("streams.runtime.liveness.logging.shutdown", lambda: None)
    return codes


def _watchdog(consumer: _Consumer, liveness: Liveness, outage: bool = False) -> StallWatchdog:
    return StallWatchdog(lambda: consumer, "readings", 2, liveness, 10.0, lambda: outage)


def test_both_apps_get_the_shared_settings(tmp_path: Path) -> None:
    spec = AppSpec("rt-test", 3, batch_max=5000, web_port=6099, datadir=tmp_path / "d")
    conf = create_faust_app(spec, Settings(kafka_bootstrap="127.0.0.1:9")).conf
    assert conf.consumer_max_fetch_size == 16 * 1024 * 1024
    assert conf.producer_max_request_size == MAX_DEADLETTER_BYTES + 64 * 1024
    assert conf.processing_guarantee.value == "at_least_once"
    assert conf.topic_partitions == 3
    assert conf.stream_buffer_maxsize == 10_000
    assert conf.Worker is QuietWorker


def test_a_batch_taking_too_long_exits_70_at_the_second_check(exits: list[int]) -> None:
    liveness = Liveness(busy_since=time.monotonic() - 11)
    watchdog = _watchdog(_Consumer({0: 0, 1: 0}), liveness)
    asyncio.run(watchdog.check())
    assert exits == []
    with pytest.raises(_Exited):
        asyncio.run(watchdog.check())
    assert exits == [70]


def test_an_idle_worker_exits_only_if_records_wait(exits: list[int]) -> None:
    liveness = Liveness(processed={0: 9, 1: 4}, last_progress=time.monotonic() - 11)
    caught_up = _watchdog(_Consumer({0: 10, 1: 5}), liveness)
    for _ in range(3):
        asyncio.run(caught_up.check())
    assert exits == []
    # partition 1 was committed up to 7 by another worker before: its 5 is nothing waiting
    behind = _watchdog(_Consumer({0: 12, 1: 7}, committed={1: 7}), liveness)
    asyncio.run(behind.check())
    with pytest.raises(_Exited):
        asyncio.run(behind.check())


def test_no_exit_during_an_influxdb_outage_and_unknown_ends_count_as_stalled(
    exits: list[int],
) -> None:
    liveness = Liveness(last_progress=time.monotonic() - 11)
    consumer = _Consumer({0: 0, 1: 0})
    consumer.fail = True
    waiting = _watchdog(consumer, liveness, outage=True)
    for _ in range(3):
        asyncio.run(waiting.check())
    assert exits == [] and waiting.stalls == 0
    blind = _watchdog(consumer, liveness)
    asyncio.run(blind.check())
    with pytest.raises(_Exited):
        asyncio.run(blind.check())


def test_liveness_keeps_the_highest_offset_and_a_stored_batch_ends_busy() -> None:
    liveness = Liveness()
    liveness.started()
    first = liveness.busy_since
    liveness.started()
    assert liveness.busy_since == first
    liveness.stored(0, 5)
    liveness.stored(0, 3)
    liveness.progressed()
    assert liveness.processed == {0: 5}
    assert liveness.busy_since is None and liveness.idle_for() < 1


def test_the_idle_timer_acts_only_once_the_broker_has_answered_long_enough() -> None:
    now = [100.0]
    consumer = _Consumer({0: 6, 1: 0})
    offsets = EndOffsets(lambda: consumer, "readings", 2, clock=lambda: now[0])
    liveness = Liveness(processed={0: 5})
    lock = asyncio.Lock()
    seen: list[tuple[bool, bool, bool]] = []
    ready = [True]

    async def act(caught_up: Any) -> None:
        seen.append((lock.locked(), caught_up(0), caught_up(1)))

    timer = IdleTimer(offsets, liveness, 30.0, lock, act, ready=lambda: ready[0])
    asyncio.run(timer.tick())  # first answer: the broker answers since now
    now[0] += 29
    asyncio.run(timer.tick())
    assert seen == []
    now[0] += 2
    asyncio.run(timer.tick())
    assert seen == [(True, True, False)]  # partition 1: nothing processed, nothing committed
    ready[0] = False
    asyncio.run(timer.tick())
    assert len(seen) == 1


def test_the_worker_class_keeps_the_libraries_quiet_under_a_debug_root() -> None:
    libraries = [logging.getLogger(n) for n in ("aiokafka", "kafka", "faust", "mode")]
    before = [lib.level for lib in libraries]
    worker: Any = QuietWorker.__new__(QuietWorker)
    worker.spinner = None
    try:
        worker.on_setup_root_logger(logging.getLogger(), logging.DEBUG)
        assert [lib.level for lib in libraries] == [logging.WARNING] * 4
        worker.on_setup_root_logger(logging.getLogger(), logging.ERROR)
        assert logging.getLogger("aiokafka").level == logging.ERROR
    finally:
        for lib, level in zip(libraries, before, strict=True):
            lib.setLevel(level)
