"""The http_poll ``history`` block: config errors name the item, ranges are written as the
gateway wants them and tile the asked range, pages are followed, and ``clustertwin
backfill`` refuses a config without the block before it touches Kafka."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from yarl import URL

from clustertwin.cli import main
from connectors.csv_replay.connector import CsvReplayConnector
from connectors.http_poll import HttpPollConfig, HttpPollConnector
from connectors.http_poll.history import (
    HistorySettings,
    Reading,
    chunks,
    distinct,
    format_range,
    next_url,
    request_url,
)
from connectors.mqtt.connector import MqttConnector
from connectors.sdk.base import BadSample
from connectors.simulator.connector import SimulatorConnector

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "connectors" / "http_poll" / "sample.yaml"


def sample() -> dict[str, Any]:
    raw = yaml.safe_load(SAMPLE.read_text())
    assert isinstance(raw, dict)
    return raw


def test_the_sample_config_has_a_history_block_and_validates() -> None:
    cfg = HttpPollConfig.model_validate(sample())
    assert cfg.history is not None and cfg.history.next == "links.next"
    assert HttpPollConnector.history_refusal(cfg) is None


def test_history_config_errors_name_the_item() -> None:
    base = sample()
    hist = base["history"]
    cases: dict[str, dict[str, Any]] = {
        "history: {from}": {"history": {**hist, "params": {"to": "{to}"}}},
        "history: {to}": {"history": {**hist, "params": {"from": "{from}"}}},
        "history.next": {"history": {**hist, "next": "links.[next"}},
        "history.items": {"history": {**hist, "items": "rows[?"}},
        "history.cursor_param": {"history": {**hist, "next": None, "cursor_param": "c"}},
        "history.range_format": {"history": {**hist, "range_format": "rfc822"}},
        "history.max_span_s": {"history": {**hist, "max_span_s": 0}},
        "history.url": {"history": {**hist, "url": "ftp://gw/history"}},
        "history: needs select.time": {"select": {"items": "channels", "id": "id", "value": "v"}},
    }
    for where, over in cases.items():
        with pytest.raises(ValueError) as err:
            HttpPollConfig.model_validate({**base, **over})
        text = str(err.value).replace("\n  ", ": ").replace("\n", " ")
        assert where in text, (where, text)


def test_range_bounds_in_each_format() -> None:
    ms = 1_767_225_600_250  # 2026-01-01T00:00:00.250Z
    assert format_range(ms, "iso8601") == "2026-01-01T00:00:00.250Z"
    assert format_range(ms - 250, "iso8601") == "2026-01-01T00:00:00Z"
    assert format_range(ms, "epoch_ms") == str(ms)
    # whole seconds round outwards, so the request covers the range
    assert format_range(ms, "epoch_s") == "1767225600"
    assert format_range(ms, "epoch_s", end=True) == "1767225601"
    assert format_range(ms - 250, "epoch_s", end=True) == "1767225600"


def test_chunks_tile_the_range() -> None:
    rng = random.Random(3)
    for _ in range(200):
        start = rng.randint(0, 10**12)
        end = start + rng.randint(1, 10**8)
        span = rng.randint(1, 10**7)
        got = list(chunks(start, end, span))
        assert got[0][0] == start and got[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(got))
        assert all(0 < hi - lo <= span for lo, hi in got)


def test_the_request_carries_the_range_and_the_pages_follow() -> None:
    hist = HistorySettings(
        url="https://gw/api/v1/history/{from}", params={"to": "{to}", "ch": "all"}
    )
    first = request_url("https://gw/live", hist, 0, 1000)
    assert first == URL(
        "https://gw/api/v1/history/1970-01-01T00:00:00Z?to=1970-01-01T00:00:01Z&ch=all"
    )
    link = next_url(first, first, "history?page=2", hist)
    assert link == URL("https://gw/api/v1/history/history?page=2")
    assert next_url(first, first, "https://other/p?x=1", hist) == URL("https://other/p?x=1")
    for last in (None, "", []):
        assert next_url(first, first, last, hist) is None
    cursor = HistorySettings(params={"from": "{from}", "to": "{to}"}, next="n", cursor_param="c")
    base = request_url("http://gw/h", cursor, 0, 1000)
    page2 = next_url(base, base, "abc", cursor)
    assert (
        page2 is not None
        and page2.query["c"] == "abc"
        and page2.query["from"] == "1970-01-01T00:00:00Z"
    )
    page3 = next_url(base, page2, 17, cursor)
    assert page3 is not None and page3.query.getall("c") == ["17"]  # replaced, not added


def test_distinct_keeps_each_item_of_the_range_once_sorted_per_meter() -> None:
    rng = random.Random(5)
    truth = [Reading(m, ts, float(ts % 7), b"") for m in ("a", "b") for ts in range(0, 100, 5)]
    shuffled = truth * 3 + [Reading("a", 100, 1.0, b""), Reading("b", -5, 1.0, b"")]
    bad = BadSample("http_poll.field: x", b"{}")
    shuffled += [bad, BadSample("http_poll.field: x", b"{}")]
    rng.shuffle(shuffled)
    got = distinct(shuffled, 0, 100)
    assert got[:-1] == sorted(truth, key=lambda r: (r.meter, r.ts)) and got[-1] == bad


def test_who_can_read_history_is_decided_per_config() -> None:
    cfg = HttpPollConfig.model_validate({**sample(), "history": None})
    refusal = HttpPollConnector.history_refusal(cfg)
    assert refusal is not None and "`history` block" in refusal
    assert HttpPollConnector.reads_history is False  # the class alone cannot
    assert CsvReplayConnector.history_refusal(None) is None  # type: ignore[arg-type]
    assert SimulatorConnector.history_refusal(None) is None  # type: ignore[arg-type]
    assert MqttConnector.history_refusal(None) is not None  # type: ignore[arg-type]


def test_backfill_of_a_config_without_history_exits_2_naming_the_block(tmp_path: Path) -> None:
    raw = sample()
    del raw["history"]
    path = tmp_path / "no-history.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["backfill", str(path), "--from", "now-1d"])
    assert result.exit_code == 2
    assert "cannot read its source's past" in result.output
    assert "no `history` block" in result.output
