"""Run a dashboard's queries the way Grafana would: directly against InfluxDB, or through Grafana.

Both return the same plain shape, :class:`Series` (a name and its points), so a test can
check a panel's data whichever way it was fetched and the README pictures are drawn from
exactly what the panel would show.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from influxdb_client import InfluxDBClient

from dashboards.flux import DATASOURCE_UID, interpolate_variables, standalone


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


def grafana_query_payload(
    query: str,
    *,
    start: datetime,
    stop: datetime,
    variables: Mapping[str, str],
    datasource_uid: str = DATASOURCE_UID,
    interval: timedelta = timedelta(minutes=1),
    max_data_points: int = 1000,
) -> dict[str, Any]:
    """The body Grafana's frontend posts to ``/api/ds/query`` for this target."""
    return {
        "queries": [
            {
                "refId": "A",
                "datasource": {"type": "influxdb", "uid": datasource_uid},
                "query": interpolate_variables(query, variables),
                "intervalMs": int(interval.total_seconds() * 1000),
                "maxDataPoints": max_data_points,
            }
        ],
        "from": str(int(start.astimezone(UTC).timestamp() * 1000)),
        "to": str(int(stop.astimezone(UTC).timestamp() * 1000)),
    }


def frames_to_series(response: Mapping[str, Any], ref_id: str = "A") -> list[Series]:
    """Grafana's data frames (JSON, columnar) to :class:`Series`, one per numeric field."""
    result = response.get("results", {}).get(ref_id, {})
    if result.get("error"):
        raise RuntimeError(f"Grafana query error: {result['error']}")
    out: list[Series] = []
    for frame in result.get("frames", []):
        fields = frame["schema"]["fields"]
        columns = frame["data"]["values"]
        times: list[datetime | None] = []
        for f, col in zip(fields, columns, strict=False):
            if f.get("type") == "time":
                times = [datetime.fromtimestamp(v / 1000, tz=UTC) if v else None for v in col]
        for f, col in zip(fields, columns, strict=False):
            if f.get("type") == "time":
                continue
            name = (f.get("config") or {}).get("displayNameFromDS") or f.get("name", "")
            labels = f.get("labels") or {}
            series = Series(str(name), times=list(times) or [None] * len(col), values=list(col))
            series.columns.update({k: [v] * len(col) for k, v in labels.items()})
            out.append(series)
    return out


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
    from dashboards import schema
    from dashboards.flux import Flux

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
