"""Shared fixtures.

Integration tests need the real local stack (Kafka, InfluxDB, Mosquitto). The ``stack``
fixture starts it once per test session — building it first on a fresh machine — and stops
what it started afterwards, unless CLUSTERTWIN_KEEP_STACK=1 (handy between local runs).
Nothing here stands in for a server: if one cannot be started, the tests error out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from influxdb_client import InfluxDBClient

from clustertwin.settings import Settings
from clustertwin.stack import LocalStack


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


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
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
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test (or earlier run) uses: topics and series stay isolated."""
    return f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
