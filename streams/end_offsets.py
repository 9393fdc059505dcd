"""Whether a worker has really read everything: end offsets asked of the broker now.

A consumer's high watermark is the one it last fetched. While the broker is down it stays
where it was, so a worker that processed everything it fetched looks caught up, and the
silence of an outage looks like the silence of the plants. Decisions that give silence a
meaning (closing the windows of idle sites, alerting on silent meters) are taken only on end
offsets read now, and only once the broker has answered for a while: producers (connectors
buffer to disk) deliver what they held during the outage, with its old timestamps, once it
is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)


class EndOffsets:
    """End offsets of one topic's partitions, and how long the broker has answered.

    ``consumer`` returns the running Faust consumer (it exists only once the app runs).
    How long the broker has answered is counted from the first read that succeeded after
    one that failed (or after the process started), not from the last failure: with reads
    seconds apart, the broker may have come back only just before that first success.
    """

    def __init__(
        self,
        consumer: Callable[[], Any],
        topic: str,
        partitions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._tps = [TP(topic, p) for p in range(partitions)]
        self._clock = clock
        self._answering_since: float | None = None

    async def read(self, timeout_s: float) -> dict[int, int] | None:
        """End offset by partition, asked now; None (and trouble noted) if the broker does
        not answer within ``timeout_s``."""
        try:
            ends = await asyncio.wait_for(self._consumer().highwaters(*self._tps), timeout_s)
        except Exception as exc:
            log.debug("no end offsets (%r)", exc)
            self._answering_since = None
            return None
        if self._answering_since is None:
            self._answering_since = self._clock()
        return {tp.partition: end for tp, end in ends.items() if end is not None}

    def answering_for(self) -> float:
        """Seconds the broker has surely been answering: since the first of the reads that
        succeeded in a row (0 before any)."""
        if self._answering_since is None:
            return 0.0
        return self._clock() - self._answering_since

    def caught_up(
        self, partition: int, ends: Mapping[int, int], processed: Mapping[int, int]
    ) -> bool:
        """Whether every record of ``partition`` below its end offset has been processed.

        ``processed``: the highest offset processed per partition by this process. A
        partition it has not consumed from since starting is caught up if the group's
        committed offset already reaches the end (a restarted worker with nothing new).
        """
        high = ends.get(partition)
        if high is None:
            return False
        position = processed.get(partition)
        if position is not None:
            return position + 1 >= high
        committed = getattr(self._consumer(), "_committed_offset", {}).get(self._tps[partition])
        return committed is not None and committed >= high
