"""A ``StateTable`` test double over a dict: lets the stages be tested without a broker.

It keeps each key's partition too, as a Faust table's changelog would, so a test can see
where a stage put a state.
"""

from __future__ import annotations

from collections.abc import Iterable


class DictTable:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.partition: dict[bytes, int] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self.partition[key] = partition

    def delete(self, key: bytes, partition: int) -> None:
        self.data.pop(key, None)
        self.partition.pop(key, None)

    def all_keys(self) -> Iterable[bytes]:
        return list(self.data)
