"""The simulator through the SDK into the real Kafka of the local stack."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from connectors.sdk.conformance import ConformanceKit, consume_all
from connectors.sdk.registry import load_config
from connectors.simulator import SimulatorConfig, SimulatorConnector
from tests.conftest import StackHandle
from twin.model import load_cluster
from twin.readings import MeterIndex, validate_envelope

from .conftest import MINI

pytestmark = pytest.mark.integration


def config(**over: object) -> SimulatorConfig:
    base = {
        "connector": "simulator",
        "name": "it",
        "cluster": str(MINI),
        "speedup": 0,
        "step_s": 60,
        "start": "now-2d",
        "batch": {"max_readings": 500},
    }
    return SimulatorConfig.model_validate({**base, **over})


def make(index: MeterIndex):  # type: ignore[no-untyped-def]
    return lambda cfg: SimulatorConnector(cfg, index)


def test_simulator_package_is_conformant(stack: StackHandle, conformance: ConformanceKit) -> None:
    cls = conformance.check_package("simulator")
    assert cls is SimulatorConnector


def test_simulator_contract_ordering_and_reconnect(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    report = asyncio.run(
        conformance.check_contract(make(mini_index), config(), mini_index, min_readings=5_000)
    )
    assert len(report.readings) >= 5_000
    assert report.envelopes >= 10
    # The injected source failure cost nothing: each meter's series has no hole.
    for meter in {r["meter"] for r in report.readings}:
        ts = [r["ts"] for r in report.readings if r["meter"] == meter]
        assert all(b - a == 60_000 for a, b in itertools.pairwise(ts)), meter


def test_simulator_buffers_on_disk_while_kafka_is_unreachable(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    report = asyncio.run(
        conformance.check_buffering(make(mini_index), config(), mini_index, min_readings=3_000)
    )
    assert len(report.readings) >= 3_000


def test_bad_samples_go_to_dead_letter_with_reason_and_neighbours_pass(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex
) -> None:
    async def run() -> tuple[object, object]:
        return await conformance.run_connector(
            make(mini_index), config(fault_rate=0.02), min_readings=4_000, tag="faults"
        )

    cfg, metrics = asyncio.run(run())  # type: ignore[misc]
    report = conformance.collect(cfg, mini_index, metrics)  # type: ignore[arg-type]
    assert 40 < len(report.deadletters) < 200
    reasons = {dl.headers["clustertwin-reason"].decode() for dl in report.deadletters}
    assert any("finite" in r for r in reasons)
    assert any("negative" in r for r in reasons)
    assert any("ahead of the record time" in r for r in reasons)
    assert all(dl.headers["clustertwin-source"] == b"simulator/it" for dl in report.deadletters)
    assert len(report.readings) + len(report.deadletters) == metrics.samples_in  # type: ignore[attr-defined]


def test_sample_config_drives_dunkirk_into_kafka(
    stack: StackHandle, unique_name: str, tmp_path: Path
) -> None:
    """The demo's own config, on the real Dunkirk model, end to end through the CLI."""
    import subprocess
    import sys

    cls, _cfg = load_config(Path(__file__).parents[3] / "connectors/simulator/sample.yaml")
    assert cls is SimulatorConnector
    path = tmp_path / "dunkirk.yaml"
    path.write_text(
        f"connector: simulator\nname: {unique_name}\ncluster: dunkirk\nseed: 42\nspeedup: 0\n"
        f"start: now-1d\nkafka:\n  topic: {unique_name}\nbuffer:\n  dir: {tmp_path / 'buf'}\n"
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "clustertwin"),
            "connector",
            "run",
            str(path),
            "--max-readings",
            "2000",
            "--bootstrap",
            stack.kafka_bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    index = MeterIndex.from_cluster(load_cluster("dunkirk"))
    records = consume_all(stack.kafka_bootstrap, unique_name)
    readings = [r for rec in records for r in validate_envelope(rec.value, index).accepted]
    assert len(readings) >= 2000
    assert {r["meter"] for r in readings} == {m.meter for m in index}
    assert {rec.key.decode() for rec in records if rec.key} == set(index.sites)
