"""Deleting the Kafka topics a run made: benches, test fixtures, the conformance kit.

Each of them makes private topics (a unique name per run) so runs never see each other's
records. Left behind, they pile up on a developer's broker, and every Faust worker reads the
metadata of all topics while it starts.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka.admin import KafkaAdminClient


def delete_topics(
    bootstrap: str, *, prefixes: tuple[str, ...] = (), names: Iterable[str] = ()
) -> list[str]:
    """Delete the existing topics named in ``names`` or starting with one of ``prefixes``;
    returns them. Errors (a broker down) are the caller's to judge."""
    wanted = set(names)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        doomed = [
            t for t in admin.list_topics() if t in wanted or (prefixes and t.startswith(prefixes))
        ]
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30_000)
        return doomed
    finally:
        admin.close()
