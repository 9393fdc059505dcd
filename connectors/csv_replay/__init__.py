"""CSV / historian export replay connector."""

from connectors.csv_replay.connector import Columns, CsvReplayConfig, CsvReplayConnector

__all__ = ["Columns", "CsvReplayConfig", "CsvReplayConnector"]
