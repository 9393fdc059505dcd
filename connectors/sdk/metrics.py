"""Counters an operator needs to trust a connector: is data flowing, how late, what is refused."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from twin.readings import now_ms


@dataclass
class ConnectorMetrics:
    """Updated from the event loop (intake) and the sender thread (acks); read anywhere."""

    samples_in: int = 0  # every item the source yielded
    readings_accepted: int = 0  # passed validation, queued for Kafka
    readings_rejected: int = 0  # sent to the dead-letter topic with a reason
    readings_sent: int = 0  # acknowledged by Kafka (acks=all)
    envelopes_sent: int = 0
    deadletters_sent: int = 0
    source_reconnects: int = 0
    kafka_failures: int = 0
    buffer_full_waits: int = 0
    newest_sent_ts: int | None = None  # source timestamp of the newest reading Kafka has
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def sent(self, n_readings: int, newest_ts: int | None, *, deadletter: bool) -> None:
        with self._lock:
            if deadletter:
                self.deadletters_sent += 1
                return
            self.envelopes_sent += 1
            self.readings_sent += n_readings
            if newest_ts is not None and (
                self.newest_sent_ts is None or newest_ts > self.newest_sent_ts
            ):
                self.newest_sent_ts = newest_ts

    def lag_ms(self, now: int | None = None) -> int | None:
        """Wall-clock age of the newest reading Kafka acknowledged (None before the first)."""
        if self.newest_sent_ts is None:
            return None
        return (now_ms() if now is None else now) - self.newest_sent_ts

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["lag_ms"] = self.lag_ms()
        return out
