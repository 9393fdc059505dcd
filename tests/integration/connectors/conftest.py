"""Connector integration tests: the conformance kit against real servers and a real Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.sdk.pytest_plugin import (  # noqa: F401 - the kit's fixture and summary
    conformance,
    pytest_terminal_summary,
)
from twin.model import load_cluster
from twin.readings import MeterIndex

MINI = Path(__file__).parents[2] / "unit" / "connectors" / "mini-cluster.yaml"


@pytest.fixture(scope="session")
def mini_index() -> MeterIndex:
    return MeterIndex.from_cluster(load_cluster(MINI))
