"""Debian's Chromium driven headless through Debian's chromedriver (Selenium).

Installed by the test itself when missing (the Debian packages ``chromium`` and
``chromium-driver``), so a fresh machine needs nothing done by hand. Chromium starts with
the flags this machine's closed network needs (no background networking, no component
updates), and a fresh profile each time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clustertwin.stack.base import require_tool
from clustertwin_base.settings import cache_dir

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1600",
)


def _progress(message: str) -> None:
    print(f"[browser] {message}", flush=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = require_tool("chromedriver", "chromium-driver", _progress)
    chromium = require_tool("chromium", "chromium", _progress)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="clustertwin-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the screenshots go: ``CLUSTERTWIN_SCREENSHOTS`` (the README's pictures are made
    with ``CLUSTERTWIN_SCREENSHOTS=docs/img``), else the cache."""
    target = Path(os.environ.get("CLUSTERTWIN_SCREENSHOTS") or cache_dir() / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target
