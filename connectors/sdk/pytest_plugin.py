"""pytest plugin of the conformance kit: ``pytest_plugins = ["connectors.sdk.pytest_plugin"]``.

Gives a ``conformance`` fixture (a ConformanceKit on a real Kafka). The Kafka comes from the
suite's ``stack`` fixture when it has one (ClusterTwin's own suite starts the local stack),
otherwise from the ClusterTwin settings (CLUSTERTWIN_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustertwin_base.settings import Settings
from connectors.sdk.conformance import ConformanceKit


@pytest.fixture
def conformance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConformanceKit]:
    """The kit; the private topics of its runs are deleted after the test."""
    try:
        stack = request.getfixturevalue("stack")
        bootstrap = str(stack.kafka_bootstrap)
    except pytest.FixtureLookupError:
        bootstrap = Settings.load().kafka_bootstrap
    kit = ConformanceKit(bootstrap, tmp_path / "conformance")
    yield kit
    kit.drop_topics()
