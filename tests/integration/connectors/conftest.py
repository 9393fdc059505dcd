"""Connector integration tests: the conformance kit against real servers and a real Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from clustertwin.stack.pki import Authority
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


@dataclass
class PkiFiles:
    """Certificates made for one test, written under its tmp dir (the stack's helper)."""

    directory: Path
    ca: Authority
    other_ca: Authority  # a CA nobody trusts: what an attacker's certificate chains to

    def server(
        self, stem: str = "server", hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    ) -> tuple[Path, Path]:
        return self.ca.issue(stem, hosts=hosts, usage="server").write(self.directory, stem)

    def client(self, stem: str = "client", ca: Authority | None = None) -> tuple[Path, Path]:
        return (ca or self.ca).issue(stem, usage="client").write(self.directory, stem)

    @property
    def ca_file(self) -> Path:
        return self._ca_file(self.ca, "ca")

    @property
    def other_ca_file(self) -> Path:
        return self._ca_file(self.other_ca, "other-ca")

    def _ca_file(self, ca: Authority, stem: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{stem}.pem"
        if not path.exists():
            path.write_bytes(ca.credential.cert_pem())
        return path


@pytest.fixture
def pki(tmp_path: Path) -> PkiFiles:
    return PkiFiles(tmp_path / "pki", Authority.create("test CA"), Authority.create("rogue CA"))
