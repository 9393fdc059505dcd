"""CSV / historian replay into the real Kafka."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.csv_replay import CsvReplayConfig, CsvReplayConnector
from connectors.sdk.conformance import ConformanceKit
from connectors.sdk.registry import ConfigError, lint
from tests.conftest import StackHandle
from twin.readings import MeterIndex

from .conftest import MINI

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[3]


def long_csv(path: Path, n: int) -> Path:
    # 1 March of last year: an export always within the restatement horizon, never ahead
    day = f"{datetime.now(UTC).year - 1}-03-01"
    lines = ["time,tag,val,q"]
    for i in range(n):
        tag = "BF_GAS" if i % 2 == 0 else "mill-power"
        lines.append(f"{day}T00:{(i // 2) // 60:02d}:{(i // 2) % 60:02d}Z,{tag},{i}.5,measured")
        if i == 10:
            lines.append(f"{day}T00:00:99Z,BF_GAS,1.0,measured")  # bad second
        if i == 11:
            lines.append(f"{day}T00:00:06Z,BF_GAS,n/a,measured")  # bad number
    path.write_text("\n".join(lines) + "\n")
    return path


def config(path: Path, **over: object) -> CsvReplayConfig:
    return CsvReplayConfig.model_validate(
        {
            "connector": "csv",
            "name": "it-csv",
            "cluster": str(MINI),
            "path": str(path),
            "columns": {"ts": "time", "meter": "tag", "value": "val", "quality": "q"},
            "meters": {"BF_GAS": "bf-gas"},
            "rows_per_batch": 100,
            **over,
        }
    )


def test_csv_package_is_conformant(conformance: ConformanceKit) -> None:
    assert conformance.check_package("csv") is CsvReplayConnector


def test_csv_long_replay_contract_resume_and_dead_letters(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, tmp_path: Path
) -> None:
    cfg = config(long_csv(tmp_path / "export.csv", 1000))
    report = asyncio.run(
        conformance.check_contract(
            lambda c: CsvReplayConnector(c, mini_index), cfg, mini_index, min_readings=1002
        )
    )
    # The injected failure after the second batch neither repeated nor skipped a row.
    assert [r["value"] for r in report.readings] == [i + 0.5 for i in range(1000)]
    reasons = sorted(dl.headers["clustertwin-reason"].decode() for dl in report.deadletters)
    assert len(reasons) == 2
    assert "row 13" in reasons[0] and "second must be in 0..59" in reasons[0]
    assert "row 15" in reasons[1] and "could not convert string to float" in reasons[1]


def test_csv_buffering(
    stack: StackHandle, conformance: ConformanceKit, mini_index: MeterIndex, tmp_path: Path
) -> None:
    cfg = config(long_csv(tmp_path / "export.csv", 300))
    report = asyncio.run(
        conformance.check_buffering(
            lambda c: CsvReplayConnector(c, mini_index), cfg, mini_index, min_readings=302
        )
    )
    assert len(report.readings) == 300


def test_csv_paced_replay_takes_source_time_over_speed(
    mini_index: MeterIndex, tmp_path: Path
) -> None:
    # 20 instants one second apart at 10x: about 1.9 s, one batch per instant.
    cfg = config(long_csv(tmp_path / "export.csv", 40), speed=10.0)
    conn = CsvReplayConnector(cfg, mini_index)

    async def replay() -> list[int]:
        sizes = []
        async for batch in conn.stream():
            sizes.append(len(batch))
        return sizes

    started = time.monotonic()
    sizes = asyncio.run(replay())
    elapsed = time.monotonic() - started
    assert 1.7 < elapsed < 4.0
    assert sum(sizes) == 42 and len(sizes) >= 20


def test_wide_sample_config_lints_and_reads_the_french_export() -> None:
    _cls, cfg, index = lint(REPO / "connectors/csv_replay/sample.yaml")
    assert isinstance(cfg, CsvReplayConfig)
    cfg = cfg.model_copy(update={"path": REPO / cfg.path, "speed": 0.0, "time_shift": "none"})
    conn = CsvReplayConnector(cfg, index)

    async def first() -> list[object]:
        async for batch in conn.stream():
            return list(batch)
        return []

    items = asyncio.run(first())
    kwh = [s for s in items if getattr(s, "meter", "") == "cm-grid-power"]
    assert kwh[0].value == 4200.0 and kwh[0].unit == "kWh"  # type: ignore[attr-defined]
    assert kwh[0].ts == 1_740_783_600_000  # 2025-03-01 00:00 Paris = 23:00 UTC the day before  # type: ignore[attr-defined]
    assert len(items) == 96 * 3


def test_lint_names_the_bad_column_and_meter(tmp_path: Path) -> None:
    path = long_csv(tmp_path / "export.csv", 4)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"connector: csv\nname: x\ncluster: {MINI}\npath: {path}\n"
        "columns: {ts: when, meter: tag, value: val}\nmeters: {BF_GAS: bf-gaz}\n"
    )
    with pytest.raises(ConfigError) as err:
        lint(bad)
    assert "meters.BF_GAS: unknown meter 'bf-gaz'" in str(err.value)
    assert "columns: 'when' is not in the header" in str(err.value)
