"""The SDK without a Kafka: registry, config errors, CLI, and what the runner writes to disk.

The runner here points at a Kafka port nobody listens on, so every envelope and dead-letter
record it produces stays in the on-disk buffer, where the test reads it back.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from click.testing import CliRunner

from clustertwin.commands.connector import connector as cli
from connectors.sdk import (
    BadSample,
    Connector,
    ConnectorConfig,
    ConnectorMetrics,
    ConnectorRunner,
    DiskBuffer,
    Item,
    Record,
    Sample,
    SourceUnavailable,
    available,
    make_publisher,
    parse_config,
)
from connectors.sdk.registry import ConfigError
from twin.readings import MeterIndex, now_ms, validate_envelope

from .conftest import MINI

REPO = Path(__file__).parents[3]
BUILTIN = {"simulator", "csv", "mqtt", "opcua", "modbus", "http", "http_poll"}


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scripted(Connector[ConnectorConfig]):
    """A source that plays a script of batches and failures."""

    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    script: ClassVar[list[list[Item] | Exception]] = []

    def __init__(self, config: ConnectorConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self.pos = 0
        self.opened = 0

    async def open(self) -> None:
        self.opened += 1

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        while self.pos < len(self.script):
            step = self.script[self.pos]
            self.pos += 1
            if isinstance(step, Exception):
                raise step
            yield step


def test_every_builtin_is_registered_and_loads() -> None:
    names = {c.name for c in available()}
    assert names >= BUILTIN
    for info in available():
        if info.name in BUILTIN:
            assert issubclass(info.load(), Connector)


@pytest.mark.parametrize(
    "sample",
    sorted(str(p.relative_to(REPO)) for p in (REPO / "connectors").glob("*/sample.yaml")),
)
def test_every_sample_config_lints(sample: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("DUNKIRK_LNG_PUSH_TOKEN", "x" * 24)  # the http sample's token variable
    result = CliRunner().invoke(cli, ["lint", sample])
    assert result.exit_code == 0, result.output
    assert "ok (" in result.output


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "connector": "simulator",
                "name": "x",
                "cluster": "c",
                "speedup": -1,
                "batch": {"max_readings": 0},
                "colour": "red",
            },
            "site.yaml",
        )
    text = str(err.value)
    assert text.startswith("site.yaml: invalid simulator connector config:")
    assert "speedup: Input should be greater than or equal to 0" in text
    assert "batch.max_readings: Input should be greater than or equal to 1" in text
    assert "colour: Extra inputs are not permitted" in text
    with pytest.raises(ConfigError, match="connector 'nope' is not installed"):
        parse_config({"connector": "nope"})
    with pytest.raises(ConfigError, match="connector: required"):
        parse_config({"name": "x"})


def test_cli_list_and_lint_failures(tmp_path: Path) -> None:
    listed = CliRunner().invoke(cli, ["list", "--json"])
    assert listed.exit_code == 0
    assert {row["name"] for row in orjson.loads(listed.output)} >= BUILTIN
    bad = tmp_path / "bad.yaml"
    bad.write_text("connector: simulator\nname: x\ncluster: atlantis\n")
    result = CliRunner().invoke(cli, ["lint", str(bad)])
    assert result.exit_code == 1
    assert "cluster: cannot load 'atlantis'" in result.output
    bad.write_text(f"connector: simulator\nname: x\ncluster: {MINI}\nsites: [moon]\n")
    result = CliRunner().invoke(cli, ["lint", str(bad)])
    assert "sites: unknown site 'moon' in cluster 'minicluster'" in result.output


def test_runner_validates_groups_by_site_reconnects_and_buffers(
    tmp_path: Path, mini_index: MeterIndex
) -> None:
    t = now_ms() - 60_000
    Scripted.script = [
        [
            Sample("bf-gas", t, 1.0),
            Sample("berth1-shore", t, 2.0),
            Sample("bf-gas", t + 1, float("nan")),
            Sample("ghost", t, 1.0),
            BadSample("gateway sent garbage", b"\x00garbage", "mill-power"),
        ],
        SourceUnavailable("cable pulled"),
        [Sample("bf-gas", t + 2, 3.0, unit="kWh"), Sample("bf-coke", t + 2, 4.0, unit="MWh")],
    ]
    cfg = ConnectorConfig(
        connector="scripted",
        name="unit",
        cluster=str(MINI),
        kafka={"bootstrap": f"127.0.0.1:{dead_port()}"},
        batch={"max_readings": 10, "max_delay_ms": 50},
        buffer={"dir": tmp_path / "buf"},
    )
    metrics = ConnectorMetrics()
    source = Scripted(cfg, mini_index)
    runner = ConnectorRunner(source, make_publisher(cfg, metrics), metrics=metrics)
    runner.backoff.initial = runner.backoff.maximum = 0.05
    asyncio.run(runner.run(drain_timeout=0.5))

    assert source.opened == 2 and metrics.source_reconnects == 1
    assert (metrics.samples_in, metrics.readings_accepted, metrics.readings_rejected) == (7, 4, 3)
    assert metrics.readings_sent == 0 and metrics.kafka_failures >= 1

    buf = DiskBuffer(tmp_path / "buf")
    records = [r for _pos, r in buf.read(100)]
    envelopes = [r for r in records if r.topic == "readings"]
    dead = [r for r in records if r.topic == "readings-deadletter"]
    by_site: dict[str, list[tuple[str, float]]] = {}
    for rec in envelopes:
        result = validate_envelope(rec.value, mini_index)
        assert not result.rejected and rec.key == (result.site or "").encode()
        assert dict(rec.headers)["clustertwin-schema"] == b"readings/1"
        by_site.setdefault(result.site or "", []).extend(
            (r["meter"], r["value"]) for r in result.accepted
        )
    assert by_site == {
        "steelworks": [("bf-gas", 1.0), ("bf-gas", 3.0), ("bf-coke", 4.0)],
        "port": [("berth1-shore", 2.0)],
    }
    reasons = {dict(r.headers)["clustertwin-reason"].decode(): r for r in dead}
    assert any("finite" in k for k in reasons)
    assert any("unknown meter 'ghost'" in k for k in reasons)
    assert reasons["gateway sent garbage"].value == b"\x00garbage"
    assert reasons["gateway sent garbage"].key == b"steelworks"
    assert len(dead) == 3


def test_a_sample_with_an_interval_goes_out_as_readings_2(
    tmp_path: Path, mini_index: MeterIndex
) -> None:
    t = now_ms() - 60_000
    Scripted.script = [[Sample("bf-gas", t, 1.0, start=t - 900_000), Sample("bf-coke", t, 2.0)]]
    cfg = ConnectorConfig(
        connector="scripted",
        name="unit2",
        cluster=str(MINI),
        kafka={"bootstrap": f"127.0.0.1:{dead_port()}"},
        batch={"max_readings": 10, "max_delay_ms": 50},
        buffer={"dir": tmp_path / "buf"},
    )
    metrics = ConnectorMetrics()
    runner = ConnectorRunner(
        Scripted(cfg, mini_index), make_publisher(cfg, metrics), metrics=metrics
    )
    asyncio.run(runner.run(drain_timeout=0.5))
    (rec,) = [r for _pos, r in DiskBuffer(tmp_path / "buf").read(100) if r.topic == "readings"]
    assert dict(rec.headers)["clustertwin-schema"] == b"readings/2"
    result = validate_envelope(rec.value, mini_index)
    assert not result.rejected
    assert [r.get("start") for r in result.accepted] == [t - 900_000, None]


class Paced(Connector[ConnectorConfig]):
    """Yields a reading every few ms, and checks each durability call against the buffer."""

    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: ConnectorConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self.yielded = 0
        self.appended = 0
        self.confirmed: list[int] = []
        self.early: list[tuple[int, int]] = []  # (appended, yielded) at a premature call

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        t = now_ms() - 60_000
        for i in range(40):
            self.yielded += 1
            yield [Sample("bf-gas", t + i, 1.0)]
            await asyncio.sleep(0.004 * (i % 5))  # bursts and pauses
            if i % 10 == 9:
                # a pause longer than the batch delay, even on a loaded machine: the runner
                # empties its queue here, so it confirms mid-stream, not only at the end
                await asyncio.sleep(0.15)

    def readings_durable(self) -> None:
        if self.appended != self.yielded:
            self.early.append((self.appended, self.yielded))
        self.confirmed.append(self.yielded)


def test_the_runner_confirms_durability_only_once_all_yielded_is_on_disk(
    tmp_path: Path, mini_index: MeterIndex
) -> None:
    cfg = ConnectorConfig(
        connector="paced",
        name="unit3",
        cluster=str(MINI),
        kafka={"bootstrap": f"127.0.0.1:{dead_port()}"},
        batch={"max_readings": 7, "max_delay_ms": 20},
        buffer={"dir": tmp_path / "buf"},
    )
    metrics = ConnectorMetrics()
    source = Paced(cfg, mini_index)
    publisher = make_publisher(cfg, metrics)
    append = publisher.append

    def counting(rec: Record, *, force: bool = False) -> None:
        append(rec, force=force)
        source.appended += rec.n_readings

    publisher.append = counting  # type: ignore[method-assign]
    asyncio.run(ConnectorRunner(source, publisher, metrics=metrics).run(drain_timeout=0.5))
    assert source.early == [], "confirmed before what was yielded reached the disk buffer"
    assert len(source.confirmed) > 2 and source.confirmed[-1] == 40
