"""Shared fixtures.

Integration tests need the real local stack (Kafka, InfluxDB, Mosquitto). The ``stack``
fixture starts it once per test session — building it first on a fresh machine — and stops
what it started afterwards, unless CLUSTERTWIN_KEEP_STACK=1 (handy between local runs).
Nothing here stands in for a server: if one cannot be started, the tests error out.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from influxdb_client import InfluxDBClient

from clustertwin.stack import LocalStack, StackError
from clustertwin.stack.chart_tools import ensure_helm, ensure_strimzi_schemas
from clustertwin_base.kafka_topics import delete_topics
from clustertwin_base.settings import Settings


@dataclass
class StackHandle:
    """The running local stack and the settings its clients use."""

    local: LocalStack
    settings: Settings

    @property
    def kafka_bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def influx_url(self) -> str:
        return self.settings.influx_url

    @property
    def influx_token(self) -> str:
        return self.settings.require_influx_token()

    @property
    def influx_org(self) -> str:
        return self.settings.influx_org

    @property
    def influx_bucket(self) -> str:
        return self.settings.influx_bucket

    @property
    def mqtt_host(self) -> str:
        return self.settings.mqtt_host

    @property
    def mqtt_port(self) -> int:
        return self.settings.mqtt_port

    def influx_client(self) -> InfluxDBClient:
        return InfluxDBClient(
            url=self.influx_url, token=self.influx_token, org=self.influx_org, timeout=30_000
        )


# A build failure seen before the first test, raised again by the `stack` fixture.
_build_failures: list[StackError] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the stack's servers before the first test, when a collected test needs them.

    A first-time build is not a test: InfluxDB 2.7 compiles its Rust libflux and its Go server
    (6-20 minutes on 2 shared cores), which inside the session fixture would count against the
    first integration test's pytest-timeout and fail it. Installing is a no-op once built;
    starting stays with the ``stack`` fixture.
    """
    if session.config.option.collectonly:
        return
    _install_chart_tools(session)
    if not any("stack" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[stack] {message}")

    try:
        for service in LocalStack().select(None):
            service.install(progress)
    except StackError as exc:
        _build_failures.append(exc)


def _install_chart_tools(session: pytest.Session) -> None:
    """Helm (built from its Go module, minutes the first time) and the Strimzi schemas,
    before the chart's tests run, for the same reason as the stack's builds."""
    if not any("tests/deploy/" in item.nodeid for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[chart tools] {message}")

    try:
        ensure_helm(progress)
        ensure_strimzi_schemas(progress)
    except StackError as exc:  # the chart's fixtures try again, and fail with this message
        progress(f"failed: {exc}")


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    if _build_failures:
        raise _build_failures[0]
    local = LocalStack()
    started = local.up()
    # Take the settings from the stack just brought up, not the environment, so a stale
    # shell export of another stack's token cannot point the tests elsewhere.
    settings = Settings.from_stack_settings(local.settings())
    try:
        yield StackHandle(local=local, settings=settings)
    finally:
        if started and os.environ.get("CLUSTERTWIN_KEEP_STACK") != "1":
            local.down(started)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A name no other test (or earlier run) uses: topics and series stay isolated.

    The test's Kafka topics (those named after it) are deleted when it ends: a developer's
    broker kept between runs (CLUSTERTWIN_KEEP_STACK=1) otherwise grows by hundreds of
    topics, and every Faust worker reads the metadata of all of them when it starts.
    """
    name = f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
    yield name
    if "stack" in request.fixturenames:
        _drop_topics(request.getfixturevalue("stack"), (name, name.lower().replace("_", "-")))


def _drop_topics(stack: StackHandle, prefixes: tuple[str, ...]) -> None:
    try:
        delete_topics(stack.kafka_bootstrap, prefixes=prefixes)
    except Exception as exc:  # a fault test may leave the broker down; not the test's result
        warnings.warn(f"could not delete the topics of {prefixes[0]}: {exc!r}", stacklevel=1)
