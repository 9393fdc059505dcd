"""CSV / historian export replay, with the column mapping in config, at a chosen speed.

Historian exports come in two shapes: *long* (one row per reading: time, tag, value) and
*wide* (one row per time, one column per tag). Both are mapped to meters by config, with the
export's own conventions (delimiter, decimal comma, timestamp format, time zone). A row that
cannot be parsed is a dead-letter record with its line number, not the end of the replay.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.sdk.base import BadSample, Connector, ConnectorConfig, Item, MeterMapping, Sample
from twin.readings import MeterIndex, now_ms


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: str = "ts"
    meter: str | None = Field(default="meter", description="long format: the tag column")
    value: str | None = Field(default="value", description="long format: the value column")
    unit: str | None = None
    quality: str | None = None


class CsvReplayConfig(ConnectorConfig):
    path: Path
    layout: Literal["long", "wide"] = "long"
    columns: Columns = Field(default_factory=Columns)
    meters: dict[str, str] = Field(
        default_factory=dict,
        description="long: tag -> meter id (tags not listed are used as meter ids); "
        "wide: column -> meter id (only these columns are read)",
    )
    units: dict[str, str] = Field(
        default_factory=dict, description="meter id -> unit of the export, if not the meter's"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    ts_format: str = Field(default="iso", description="iso, ms, s, or a strptime format")
    timezone: str = Field(default="UTC", description="for timestamps without an offset")
    speed: float = Field(default=0.0, ge=0, description="x real time; 0 = as fast as possible")
    time_shift: Literal["none", "to_now"] = Field(
        default="none", description="to_now: move the first row to the start of the replay"
    )
    rows_per_batch: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _layout_needs(self) -> CsvReplayConfig:
        if self.layout == "wide" and not self.meters:
            raise ValueError("meters: a wide layout needs the column -> meter id table")
        if self.layout == "long" and (self.columns.meter is None or self.columns.value is None):
            raise ValueError("columns.meter and columns.value are required for a long layout")
        ZoneInfo(self.timezone)
        return self


class CsvReplayConnector(Connector[CsvReplayConfig]):
    """Replay of a CSV/historian export (long or wide), mapped by config, at any speed."""

    config_model: ClassVar[type[ConnectorConfig]] = CsvReplayConfig

    def __init__(self, config: CsvReplayConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._tz = ZoneInfo(config.timezone)
        self._done_rows = 0  # survives reconnects: resume where we were
        self._shift: int | None = None
        self._pace: tuple[float, int] | None = None  # (loop time, source ts) at replay start

    @classmethod
    def mapped_meters(cls, config: CsvReplayConfig, index: MeterIndex) -> list[MeterMapping]:
        # long layout: tags not in ``meters`` name meters in the file; only the config's count
        meters = set(config.meters.values()) | set(config.units)
        return [MeterMapping(m, config.units.get(m), f"meters/units {m!r}") for m in sorted(meters)]

    @classmethod
    def check_config(cls, config: CsvReplayConfig, index: MeterIndex) -> list[str]:
        problems = [
            f"meters.{k}: unknown meter {v!r} in cluster {index.cluster!r}"
            for k, v in config.meters.items()
            if v not in index
        ]
        problems += [
            f"units.{k}: unknown meter {k!r} in cluster {index.cluster!r}"
            for k in config.units
            if k not in index
        ]
        if not config.path.is_file():
            problems.append(f"path: no such file {config.path}")
            return problems
        with open(config.path, newline="", encoding=config.encoding) as fh:
            header = next(csv.reader(fh, delimiter=config.delimiter), [])
        cols = config.columns
        needed = [cols.ts, cols.unit, cols.quality]
        needed += [cols.meter, cols.value] if config.layout == "long" else list(config.meters)
        problems += [
            f"columns: {c!r} is not in the header of {config.path}"
            for c in needed
            if c is not None and c not in header
        ]
        return problems

    def _ts(self, text: str) -> int:
        fmt = self.config.ts_format
        if fmt == "ms":
            return int(float(text))
        if fmt == "s":
            return int(float(text) * 1000)
        dt = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self._tz)
        return int(dt.timestamp() * 1000)

    def _number(self, text: str) -> float:
        if self.config.decimal == ",":
            text = text.replace(".", "").replace(",", ".")
        return float(text)

    def _rows(self) -> Iterator[tuple[int, dict[str, str], bytes]]:
        cfg = self.config
        with open(cfg.path, newline="", encoding=cfg.encoding) as fh:
            reader = csv.DictReader(fh, delimiter=cfg.delimiter)
            for n, row in enumerate(reader):
                raw = cfg.delimiter.join(v or "" for v in row.values()).encode()
                yield n, row, raw

    def _items(self, line: int, row: dict[str, str], raw: bytes) -> list[Item]:
        cfg, cols = self.config, self.config.columns
        try:
            ts = self._ts(row[cols.ts])
            if self._shift is None:
                self._shift = (now_ms() - ts) if cfg.time_shift == "to_now" else 0
            ts += self._shift
            unit = row[cols.unit] if cols.unit else None
            quality = row[cols.quality] if cols.quality else "measured"
            if cfg.layout == "long":
                assert cols.meter is not None and cols.value is not None
                tag = row[cols.meter]
                meter = cfg.meters.get(tag, tag)
                return [
                    Sample(
                        meter,
                        ts,
                        self._number(row[cols.value]),
                        unit or cfg.units.get(meter),
                        quality=quality,
                        raw=raw,
                    )
                ]
            out: list[Item] = []
            for column, meter in cfg.meters.items():
                text = row.get(column)
                if text in (None, ""):
                    continue  # a hole in a wide export is no reading, not a zero
                try:
                    out.append(
                        Sample(
                            meter,
                            ts,
                            self._number(text),
                            unit or cfg.units.get(meter),
                            quality=quality,
                            raw=raw,
                        )
                    )
                except ValueError as exc:
                    out.append(BadSample(f"{cfg.path} row {line + 2} {column}: {exc}", raw, meter))
            return out
        except (KeyError, ValueError, TypeError) as exc:
            return [BadSample(f"{cfg.path} row {line + 2}: {exc!r}", raw)]

    async def _pace_to(self, ts: int) -> None:
        if self.config.speed <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._pace is None:
            self._pace = (loop.time(), ts)
        due = self._pace[0] + (ts - self._pace[1]) / 1000 / self.config.speed
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    reads_history: ClassVar[bool] = True

    async def history(self, start_ms: int, end_ms: int) -> AsyncIterator[Sequence[Item]]:
        """The export's readings stamped in ``[start_ms, end_ms)``, as fast as it reads,
        in its own time (``time_shift`` is for replays, not backfills). Rows that cannot
        be read still go to the dead-letter topic."""
        if self.config.time_shift != "none":
            raise ValueError("time_shift: a backfill loads the export's own times; set none")
        self._shift = 0
        batch: list[Item] = []
        for n, row, raw in self._rows():
            for item in self._items(n, row, raw):
                if isinstance(item, BadSample) or start_ms <= item.ts < end_ms:
                    batch.append(item)
            if len(batch) >= self.config.rows_per_batch:
                yield batch
                batch = []
                await asyncio.sleep(0)
        if batch:
            yield batch

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        # ``_done_rows`` moves only when a batch is handed over: a file error mid-batch
        # re-reads those rows after the reconnect instead of losing them.
        batch: list[Item] = []
        batch_ts: int | None = None
        upto = self._done_rows
        for n, row, raw in self._rows():
            if n < self._done_rows:
                continue
            items = self._items(n, row, raw)
            first_ts = next((i.ts for i in items if isinstance(i, Sample)), None)
            if self.config.speed > 0 and first_ts is not None and first_ts != batch_ts:
                if batch:  # paced: one batch per source instant
                    self._done_rows = upto
                    yield batch
                    batch = []
                await self._pace_to(first_ts)
                batch_ts = first_ts
            batch.extend(items)
            upto = n + 1
            if len(batch) >= self.config.rows_per_batch:
                self._done_rows = upto
                yield batch
                batch = []
                await asyncio.sleep(0)
        if batch:
            self._done_rows = upto
            yield batch
