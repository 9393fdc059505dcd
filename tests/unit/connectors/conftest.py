from __future__ import annotations

from pathlib import Path

import pytest

from twin.model import load_cluster
from twin.readings import MeterIndex

MINI = Path(__file__).with_name("mini-cluster.yaml")


@pytest.fixture(scope="session")
def mini_index() -> MeterIndex:
    return MeterIndex.from_cluster(load_cluster(MINI))
