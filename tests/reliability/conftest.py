"""The reliability suite runs in plain ``pytest`` (CI); its marker lets it be chosen or left out."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability: minutes-long proof against the real stack under faults and bad input "
        "(select with -m reliability, leave out with -m 'not reliability')",
    )
