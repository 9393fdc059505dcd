"""A third-party connector, written from connectors/README.md, installed through an entry point.

The code and config are taken from the README's "Add a site connector" section itself, put in
a package of their own with a dist-info declaring the entry point, and found by ClusterTwin
without any change to this repository: the README cannot drift from what works.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from connectors.sdk.conformance import ConformanceKit, consume_all
from tests.conftest import StackHandle
from twin.readings import MeterIndex, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration
README = Path(__file__).parents[3] / "connectors" / "README.md"
CLI = str(Path(sys.executable).parent / "clustertwin")


def readme_block(lang: str, containing: str) -> str:
    section = README.read_text().split("## Add a site connector", 1)[1]
    for block in re.findall(rf"```{lang}\n(.*?)```", section, re.S):
        if containing in block:
            return str(block)
    raise AssertionError(f"no ```{lang} block with {containing!r} in the README section")


def install_tiny_package(root: Path, data: Path) -> Path:
    """What `pip install acme-connector` leaves on disk: the module and its dist-info."""
    pkg = root / "acme_connector"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(readme_block("python", "class AcmeConnector"))
    sample = yaml.safe_load(readme_block("yaml", "connector: acme"))
    sample.update(cluster=str(MINI), path=str(data), meters={"ch1": "bf-gas", "ch2": "mill-power"})
    (pkg / "sample.yaml").write_text(yaml.safe_dump(sample))
    (pkg / "README.md").write_text(
        "# acme connector\n\nReads the counters an Acme gateway appends to a JSON-lines file "
        "(one object per line: channel, t in epoch ms, v) and maps channels to meters with "
        "the `meters` table of the config. Positions survive reconnects, so no line is sent "
        "twice or skipped. See sample.yaml.\n"
    )
    entry = readme_block("toml", "clustertwin.connectors")
    dist = root / "acme_connector-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-connector\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        entry.replace(
            '[project.entry-points."clustertwin.connectors"]', "[clustertwin.connectors]"
        ).replace('"', "")
    )
    return pkg / "sample.yaml"


def write_counters(path: Path, n: int, t0: int) -> None:
    lines = []
    for i in range(n):
        channel = "ch1" if i % 2 == 0 else "ch2"
        lines.append(orjson.dumps({"channel": channel, "t": t0 + (i // 2) * 60_000, "v": 10.0 + i}))
        if i == n // 2:
            lines.append(b"garbage from a flaky gateway")
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    data = tmp_path / "counters.jsonl"
    write_counters(data, 400, 1_780_000_000_000)
    site = tmp_path / "site-packages"
    sample = install_tiny_package(site, data)
    monkeypatch.syspath_prepend(str(site))  # the test process sees the new distribution
    return site, sample


def test_cli_lists_lints_and_runs_the_installed_connector(
    stack: StackHandle, acme: tuple[Path, Path], tmp_path: Path, unique_name: str
) -> None:
    site, sample = acme
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}
    listed = subprocess.run([CLI, "connector", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^acme\s+Acme gateway JSON-lines counters", listed.stdout, re.M)

    linted = subprocess.run(
        [CLI, "connector", "lint", str(sample)], env=env, capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(sample.read_text().replace("mill-power", "no-such-meter"))
    linted = subprocess.run(
        [CLI, "connector", "lint", str(bad)], env=env, capture_output=True, text=True
    )
    assert linted.returncode == 1
    assert "meters: unknown meter 'no-such-meter'" in linted.stderr

    cfg = yaml.safe_load(sample.read_text())
    cfg.update(name=unique_name, poll_interval_s=0.05, kafka={"topic": unique_name})
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(yaml.safe_dump(cfg))
    ran = subprocess.run(
        [
            CLI,
            "connector",
            "run",
            str(run_cfg),
            "--max-readings",
            "401",
            "--bootstrap",
            stack.kafka_bootstrap,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    metrics = orjson.loads(ran.stdout.strip().splitlines()[-1])
    assert metrics["readings_sent"] == 400 and metrics["readings_rejected"] == 1

    from twin.model import load_cluster

    index = MeterIndex.from_cluster(load_cluster(MINI))
    records = consume_all(stack.kafka_bootstrap, unique_name, expect=1)
    values = [r["value"] for rec in records for r in validate_envelope(rec.value, index).accepted]
    assert values == [10.0 + i for i in range(400)]


def test_installed_connector_passes_the_conformance_kit(
    stack: StackHandle,
    acme: tuple[Path, Path],
    conformance: ConformanceKit,
    mini_index: MeterIndex,
) -> None:
    cls = conformance.check_package("acme")
    assert cls.__module__ == "acme_connector"
    _, sample = acme
    from connectors.sdk.registry import load_config

    _, cfg = load_config(sample)
    cfg = cfg.model_copy(update={"poll_interval_s": 0.02, "max_lines_per_poll": 50})
    report = asyncio.run(
        conformance.check_contract(lambda c: cls(c, mini_index), cfg, mini_index, min_readings=401)
    )
    assert [r["value"] for r in report.readings] == [10.0 + i for i in range(400)]
    assert len(report.deadletters) == 1
    assert report.deadletters[0].value == b"garbage from a flaky gateway"
    report = asyncio.run(
        conformance.check_buffering(lambda c: cls(c, mini_index), cfg, mini_index, min_readings=401)
    )
    assert len(report.readings) == 400


def test_the_readme_conformance_test_runs_as_written(
    stack: StackHandle, acme: tuple[Path, Path], conformance: ConformanceKit, tmp_path: Path
) -> None:
    """The README's step-5 test, imports and all, against the installed acme connector."""
    code = readme_block("python", "def test_acme_is_conformant")
    namespace: dict[str, object] = {}
    exec(compile(code, "connectors/README.md step 5", "exec"), namespace)
    test = namespace["test_acme_is_conformant"]
    assert callable(test)
    test(conformance, tmp_path)
    assert [r.name for r in conformance.results] == [
        "package acme",
        "contract+reconnect",
        "buffering",
    ]
    assert all(r.passed for r in conformance.results)
