"""The OPC UA backfill's knobs and arithmetic: chunks that tile the range, durations,
exact millisecond times, and config errors that name the bad item."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from connectors.opcua import OpcUaConfig, OpcUaConnector
from connectors.opcua.history import chunks, from_ms, to_ms
from connectors.sdk.timespec import parse_duration

REPO = Path(__file__).resolve().parents[3]
MINI = Path(__file__).parent / "mini-cluster.yaml"
BASE = {
    "connector": "opcua",
    "name": "x",
    "cluster": str(MINI),
    "endpoint": "opc.tcp://127.0.0.1:4840",
    "nodes": [{"node_id": "ns=2;s=A", "meter": "bf-gas"}],
}


def test_chunks_tile_the_range_exactly() -> None:
    rng = random.Random(1)
    for _ in range(300):
        start = rng.randrange(0, 10**13)
        end = start + rng.randrange(1, 10**9)
        size = rng.randrange(1000, 10**8)
        got = chunks(start, end, size)
        assert got[0][0] == start and got[-1][1] == end
        assert all(b == a2 for (_, b), (a2, _) in itertools.pairwise(got))
        assert all(0 < b - a <= size for a, b in got)
        assert len(got) == -(-(end - start) // size)
    assert chunks(5, 5, 1000) == []


def test_durations_use_the_units_of_relative_times() -> None:
    assert parse_duration("90s") == 90_000
    assert parse_duration("1.5h") == 5_400_000
    assert parse_duration(" 1d ") == 86_400_000
    assert parse_duration("2w") == 14 * 86_400_000
    for bad in ("6 hours", "", "h", "-1d", "1y"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_times_convert_to_milliseconds_exactly() -> None:
    rng = random.Random(2)
    for ms in [0, 1, 1_767_225_600_123, *(rng.randrange(0, 4 * 10**12) for _ in range(2000))]:
        assert to_ms(from_ms(ms)) == ms
        assert to_ms(from_ms(ms) + timedelta(microseconds=999)) == ms  # floor, as ms stamps
    assert to_ms(datetime(2026, 1, 1)) == to_ms(datetime(2026, 1, 1, tzinfo=UTC))  # naive: UTC


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ({"chunk": "6 hours"}, "history.chunk"),
        ({"chunk": "0.5s"}, "history.chunk"),
        ({"chunk": "40d"}, "history.chunk"),
        ({"max_values_per_read": 0}, "history.max_values_per_read"),
        ({"max_values_per_read": 10**6}, "history.max_values_per_read"),
        ({"chunks": "1d"}, "history.chunks"),
    ],
)
def test_history_config_errors_name_the_item(history: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        OpcUaConfig.model_validate({**BASE, "history": history})
    assert expected in str(err.value), str(err.value)


def test_defaults_and_the_sample_config() -> None:
    cfg = OpcUaConfig.model_validate(BASE)
    assert cfg.history.chunk_ms == 86_400_000 and cfg.history.max_values_per_read == 1000
    sample = yaml.safe_load((REPO / "connectors/opcua/sample.yaml").read_text())
    cfg = OpcUaConfig.model_validate(sample)
    assert cfg.history.chunk_ms == parse_duration(sample["history"]["chunk"])
    assert OpcUaConnector.reads_history
