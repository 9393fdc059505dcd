"""A requested stop is bounded: Faust can wait forever for its last offset commit."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from streams.worker import bounded_stop_worker


def test_the_deadline_ends_a_hung_stop():
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; from streams.worker import arm_stop_deadline; "
            "arm_stop_deadline(0.3); time.sleep(60); print('not stopped')",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - started < 20
    assert proc.returncode == 0 and "not stopped" not in proc.stdout
    assert "stop still not finished after 0 s" in proc.stderr


def test_the_worker_arms_the_deadline_once_when_asked_to_stop():
    calls: list[Any] = []

    class FakeFaustWorker:  # mode's Worker: SIGTERM/SIGINT end in _schedule_shutdown
        def _schedule_shutdown(self, signal: Any) -> None:
            calls.append(signal)

    worker = bounded_stop_worker(FakeFaustWorker, 3600)()
    worker._schedule_shutdown("SIGTERM")
    timer = worker._stop_deadline
    worker._schedule_shutdown("SIGINT")
    try:
        assert calls == ["SIGTERM", "SIGINT"]
        assert worker._stop_deadline is timer and timer.is_alive()
    finally:
        timer.cancel()
