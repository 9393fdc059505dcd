"""The native local stack: real Kafka, InfluxDB and Mosquitto without a Docker engine.

``LocalStack`` installs each server into ``~/.cache/clustertwin`` on first use, starts it
detached, waits until it answers its protocol and writes the settings file every client
reads (``clustertwin_base.settings``). Every step is idempotent: ``up`` on a running stack only
checks health.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from clustertwin.stack.base import Progress, Service, StackError
from clustertwin.stack.influxdb import InfluxDB
from clustertwin.stack.kafka import Kafka
from clustertwin.stack.mosquitto import Mosquitto
from clustertwin_base.settings import (
    cache_dir,
    local_stack_env_file,
    stack_port_offset,
    stack_run_root,
)

__all__ = ["LocalStack", "Service", "StackError"]

# Start order matters only for the user's patience: the slowest first-time build first.
SERVICE_NAMES: tuple[str, ...] = ("influxdb", "kafka", "mosquitto")
# No Grafana here: its source is AGPL and this project neither builds nor ships it. The
# operators' view on the local stack is the worker's own (/view/); production runs the
# official Grafana image (docker-compose.yml), provisioned from dashboards/.


def _print(message: str) -> None:
    print(f"[stack] {message}", flush=True)


class LocalStack:
    """The set of local servers, addressed by name."""

    def __init__(
        self,
        root: Path | None = None,
        influxdb_version: str | None = None,
        kafka_security: str | None = None,
    ) -> None:
        self.root = root or cache_dir()
        # A second stack beside the usual one (a cold-start check, a secured variant) moves
        # every port by the same offset rather than needing each one configured.
        offset = stack_port_offset()
        self.services: dict[str, Service] = {
            "influxdb": InfluxDB(version=influxdb_version, port=8086 + offset, root=self.root),
            "kafka": Kafka(
                port=9092 + offset,
                controller_port=9093 + offset,
                root=self.root,
                security=kafka_security,
            ),
            "mosquitto": Mosquitto(port=1883 + offset, root=self.root, tls_port=8883 + offset),
        }

    def select(self, names: Iterable[str] | None) -> list[Service]:
        chosen = list(names or SERVICE_NAMES)
        unknown = [n for n in chosen if n not in self.services]
        if unknown:
            raise StackError(
                f"unknown service(s) {', '.join(unknown)}; known: {', '.join(self.services)}"
            )
        return [self.services[n] for n in chosen]

    def up(self, names: Iterable[str] | None = None, progress: Progress = _print) -> list[str]:
        """Install, start and set up the services; returns the names that had to start."""
        started: list[str] = []
        for service in self.select(names):
            began = time.monotonic()
            service.install(progress)
            if service.start(progress):
                started.append(service.name)
                progress(f"{service.name} healthy after {time.monotonic() - began:.1f} s")
            service.first_start(progress)
        self.write_settings()
        return started

    def down(self, names: Iterable[str] | None = None, progress: Progress = _print) -> None:
        """Stop the named services, or every running one."""
        chosen = self.select(names) if names is not None else list(self.services.values())
        for service in reversed(chosen):
            if service.stop():
                progress(f"stopped {service.name}")

    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for service in self.services.values():
            pid = service.process.pid()
            rows.append(
                {
                    "service": service.name,
                    "installed": service.installed(),
                    "pid": pid,
                    "healthy": bool(pid) and service.healthy(),
                    "address": f"{service.host}:{service.port}",
                    "log": str(service.process.log_file),
                }
            )
        return rows

    def settings(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for service in self.services.values():
            merged.update(service.settings())
        return merged

    def write_settings(self) -> Path:
        """Write the settings of every service to the file clients read, readable by us only."""
        path = stack_run_root(self.root) / local_stack_env_file().name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in sorted(self.settings().items())]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# written by `clustertwin stack up`\n" + "\n".join(lines) + "\n")
        return path
