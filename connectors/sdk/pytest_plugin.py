"""pytest plugin of the conformance kit: ``pytest_plugins = ["connectors.sdk.pytest_plugin"]``.

Gives a ``conformance`` fixture (a ConformanceKit on a real Kafka). The Kafka comes from the
suite's ``stack`` fixture when it has one (ClusterTwin's own suite starts the local stack),
otherwise from the ClusterTwin settings (CLUSTERTWIN_KAFKA_BOOTSTRAP).

At the end of the session the terminal summary lists every check the kit ran, one line per
check (name, PASS/FAIL, the figure) after the test that ran it. A suite that imports the
fixture into a conftest instead of naming the plugin imports ``pytest_terminal_summary``
too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustertwin_base.settings import Settings
from connectors.sdk.conformance import CheckResult, ConformanceKit

_RESULTS = pytest.StashKey[list[tuple[str, CheckResult]]]()


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
    results = request.config.stash.setdefault(_RESULTS, [])
    results += [(request.node.nodeid, r) for r in kit.results]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    terminalreporter.section("conformance kit")
    test = None
    for nodeid, result in results:
        if nodeid != test:
            terminalreporter.line(nodeid)
            test = nodeid
        terminalreporter.line(f"  {result.line()}")
