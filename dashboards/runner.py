"""Run a dashboard's or an alert rule's queries directly against InfluxDB, as Grafana would.

Panel queries come back as :class:`Series` (a name and its points), so a test can check a
panel's data and the README pictures are drawn from exactly what the panel would show; alert
queries come back as labelled :class:`dashboards.expressions.Frame` for the expressions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from influxdb_client import InfluxDBClient

from dashboards.expressions import Frame, labels
from dashboards.flux import Flux, standalone
from streams import influx_schema as schema


@dataclass
class Series:
    """One series of a panel's result: what a legend entry, a bar or a stat shows."""

    name: str
    times: list[datetime | None] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    # Extra columns (a table panel's meter, quality ...), column -> values.
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def numbers(self) -> list[float]:
        return [float(v) for v in self.values if isinstance(v, int | float) and v is not None]


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel of one dashboard."""

    dashboard_uid: str
    panel_title: str
    panel_type: str
    ref_id: str
    query: str


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every Flux target of a dashboard's JSON, rows included."""

    def walk(panels: list[Mapping[str, Any]]) -> Iterator[PanelQuery]:
        for panel in panels:
            yield from walk(panel.get("panels") or [])
            for target in panel.get("targets") or []:
                if "query" in target:
                    yield PanelQuery(
                        dashboard_uid=str(dashboard["uid"]),
                        panel_title=str(panel.get("title", "")),
                        panel_type=str(panel.get("type", "")),
                        ref_id=str(target.get("refId", "A")),
                        query=str(target["query"]),
                    )

    yield from walk(list(dashboard.get("panels") or []))


def _tables_to_series(tables: Any) -> list[Series]:
    out: dict[str, Series] = {}
    for table in tables:
        for record in table.records:
            values = record.values
            name = str(values.get("_field") or values.get("_measurement") or "value")
            series = out.setdefault(name, Series(name))
            series.times.append(values.get("_time"))
            series.values.append(values.get("_value"))
            for key, value in values.items():
                if key in ("result", "table", "_start", "_stop", "_time", "_value", "_field"):
                    continue
                series.columns.setdefault(key, []).append(value)
    return list(out.values())


def run_direct(
    client: InfluxDBClient,
    query: str,
    *,
    org: str,
    bucket: str,
    start: datetime,
    stop: datetime,
    variables: Mapping[str, str],
    window: timedelta = timedelta(minutes=1),
) -> list[Series]:
    """Execute a panel's query on InfluxDB exactly as Grafana would have it executed."""
    text = standalone(
        query,
        start=start,
        stop=stop,
        bucket=_bucket_for_flux(bucket),
        organization=org,
        window=window,
        variables=variables,
    )
    return _tables_to_series(client.query_api().query(text, org=org))


def _bucket_for_flux(bucket: str) -> str:
    # InfluxDB 1.8 names a bucket database/retention-policy; both forms work in from().
    return bucket


_NOT_LABELS = frozenset({"_start", "_stop", "_field", "_measurement", "result", "table"})


def query_frames(
    client: InfluxDBClient,
    query: str,
    *,
    org: str,
    bucket: str,
    start: datetime,
    stop: datetime,
) -> list[Frame]:
    """An alert rule's query on InfluxDB: one labelled series per Flux table, as Grafana reads it.

    Grafana's Flux backend makes a data frame of each table and labels it with the table's
    group key (``_start``/``_stop`` dropped, ``_field``/``_measurement`` naming the frame); the
    alert's expressions then work on those labels (one alert instance per ``cluster``).
    """
    text = standalone(query, start=start, stop=stop, bucket=bucket, organization=org)
    frames: list[Frame] = []
    for table in client.query_api().query(text, org=org):
        keys = [c.label for c in table.get_group_key() if c.label not in _NOT_LABELS]
        records = table.records
        values = tuple(
            None if r.get_value() is None else float(r.get_value())
            for r in sorted(records, key=lambda r: r.get_time())
        )
        first = records[0].values if records else {}
        frames.append(Frame(labels=labels(**{k: str(first.get(k)) for k in keys}), values=values))
    return frames


def first_tag_value(
    client: InfluxDBClient,
    *,
    tag: str,
    org: str,
    bucket: str,
    start: datetime,
    stop: datetime,
    twin: str,
    cluster: str,
    carrier: str | None = None,
) -> str | None:
    """The first value of a tag in the cluster's site windows (a Grafana variable's default)."""
    flux = (
        Flux.bucket()
        .measurement(schema.SITE_WINDOW)
        .where(schema.TWIN, twin)
        .where(schema.CLUSTER, cluster)
    )
    if carrier is not None:
        flux = flux.where(schema.CARRIER, carrier)
    flux = flux.keep(tag).group()._then(f'distinct(column: "{tag}")').sort("_value")
    text = standalone(str(flux), start=start, stop=stop, bucket=bucket, organization=org)
    for table in client.query_api().query(text, org=org):
        for record in table.records:
            return str(record.get_value())
    return None
