"""What the annual inventory (``twin.inventory``) reads from InfluxDB, named by the schema.

The year to date the worker keeps (``twin_ytd``: the newest point of each site, carrier and
transfer side, and of each cluster carrier, with each data quality's share: measured,
estimated, gap filled) and the restatements stamped in the year.

Editions: the ``current`` edition is the worker's year to date plus the changes of the
year's factor revisions (``factor_restatement``, ``streams.factor_restate``), each added to
its site and carrier and to the cluster's carrier; the ``previous`` edition is the year to
date as the worker computed it, before any factor revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams import influx_schema as schema
from streams.editions import EDITIONS
from streams.sink import InfluxSink
from twin.contract import QUALITIES
from twin.inventory import Figures, Restatement

__all__ = ["EDITIONS", "FIELD_OF", "StoredYear", "load_year"]


# Figures attribute <- InfluxDB field: the one mapping between the schema and the inventory
FIELD_OF: Mapping[str, str] = {
    "energy_mwh": schema.ENERGY_MWH,
    "scope1_tco2e": schema.TCO2E_S1,
    "scope1_gross_tco2e": schema.TCO2E_S1_GROSS,
    "scope2_location_tco2e": schema.TCO2E_S2_LOCATION,
    "scope2_market_tco2e": schema.TCO2E_S2_MARKET,
    "scope3_upstream_tco2e": schema.TCO2E_S3_UPSTREAM,
    "co2_t": schema.CO2_T,
    "ch4_t": schema.CH4_T,
    "n2o_t": schema.N2O_T,
    "co2e_other_t": schema.CO2E_OTHER_T,
    "co2_biogenic_t": schema.CO2_BIOGENIC_T,
    "co2_captured_t": schema.CO2_CAPTURED_T,
    "readings": schema.READINGS,
}


class StoredYear:
    """One cluster's stored year: the inventory's inputs."""

    def __init__(self) -> None:
        self.site_rows: list[tuple[str, str, str, Figures]] = []
        self.cluster_rows: list[tuple[str, Figures]] = []
        # (site, carrier, transfer side) -> (MWh, readings) per data quality
        self.quality: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
        self.restatements: list[Restatement] = []


def _figures(values: Mapping[str, str]) -> Figures:
    return Figures(**{attr: float(values.get(f) or 0.0) for attr, f in FIELD_OF.items()})


def _year_range(year: int) -> tuple[str, str]:
    start = datetime(year, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    stop = datetime(year + 1, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return start, stop


async def load_year(
    sink: InfluxSink, bucket: str, twin: str, cluster: str, year: int, edition: str = "current"
) -> StoredYear:
    """The stored year of ``cluster`` in ``twin``, in ``edition`` (module docstring)."""
    if edition not in EDITIONS:
        raise ValueError(f"edition {edition!r}: must be one of {', '.join(EDITIONS)}")
    out = StoredYear()
    start, stop = _year_range(year)
    # the year to date is stamped with the time it was last written, which may be in the
    # next year for the last hours of December: so every point tagged with the year
    ytd = await sink.query(
        f"""
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "{schema.TWIN_YTD}" and r.{schema.TWIN} == "{twin}")
  |> filter(fn: (r) => r.{schema.CLUSTER} == "{cluster}" and r.{schema.YEAR} == "{year}")
  |> last()
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
"""
    )
    for row in ytd:
        figs = _figures(row)
        site = row.get(schema.SITE) or ""
        if site:
            key = (site, row[schema.CARRIER], row.get(schema.TRANSFER) or "")
            out.site_rows.append((*key, figs))
            if (mwh := _quality(row)) is not None:
                out.quality[key] = mwh
        else:
            out.cluster_rows.append((row[schema.CARRIER], figs))
    out.restatements = await _restatements(sink, bucket, twin, cluster, start, stop)
    if edition == "current":
        revised = await _factor_restatements(sink, bucket, twin, cluster, year)
        _apply(out, revised)
        out.restatements = sorted(
            [*out.restatements, *(r for _, _, _, r in revised)], key=lambda r: (r.hour_ms, r.site)
        )
    return out


# Figures attribute <- factor_restatement field of its change (energy and readings: none)
_DELTA_OF: Mapping[str, str] = {
    attr: schema.delta_field(f) for attr, f in FIELD_OF.items() if f in schema.DELTA_FIELDS_OF
}


async def _factor_restatements(
    sink: InfluxSink, bucket: str, twin: str, cluster: str, year: int
) -> list[tuple[str, str, Figures, Restatement]]:
    """(site, carrier, change, record) of each factor restatement of the year."""
    rows = await sink.query(
        f"""
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "{schema.FACTOR_RESTATEMENT}")
  |> filter(fn: (r) => r.{schema.TWIN} == "{twin}" and r.{schema.CLUSTER} == "{cluster}")
  |> filter(fn: (r) => r.{schema.YEAR} == "{year}")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
"""
    )
    out = []
    for row in rows:
        change = {attr: float(row.get(f) or 0.0) for attr, f in _DELTA_OF.items()}
        change["scope1_gross_tco2e"] = change["scope1_tco2e"] + change["co2_captured_t"]
        old, new = float(row[schema.OLD_TCO2E]), float(row[schema.NEW_TCO2E])
        reason = (
            f"factor {row[schema.FACTOR]} revised v{row[schema.OLD_VERSION]} -> "
            f"v{row[schema.NEW_VERSION]} for {row[schema.READINGS]} reading(s) from "
            f"{row[schema.PERIOD_FROM]} to {row[schema.PERIOD_TO]} (epoch ms): "
            f"{float(row[schema.TCO2E_CHANGED]):+.9f} tCO2e"
        )
        site = row[schema.SITE]
        record = Restatement(site, int(row[schema.PERIOD_FROM]), old, new, reason)
        out.append((site, row[schema.CARRIER], Figures(**change), record))
    return out


def _apply(year: StoredYear, revised: list[tuple[str, str, Figures, Restatement]]) -> None:
    """Add each change to its site's and its cluster's year to date (of that carrier)."""
    for site, carrier, change, _ in revised:
        year.site_rows = [
            (s, c, t, f + change if (s, c, t) == (site, carrier, "") else f)
            for s, c, t, f in year.site_rows
        ]
        year.cluster_rows = [(c, f + change if c == carrier else f) for c, f in year.cluster_rows]


def _quality(row: Mapping[str, str]) -> dict[str, tuple[float, float]] | None:
    """Each data quality's (MWh, readings) of a site's year-to-date point (the worker's
    completeness fields), or None when the point has none."""
    out = {
        q: (
            float(row.get(schema.quality_field(q, schema.ENERGY_MWH)) or 0.0),
            float(row.get(schema.quality_field(q, schema.READINGS)) or 0.0),
        )
        for q in QUALITIES
    }
    return out if any(m or n for m, n in out.values()) else None


async def _restatements(
    sink: InfluxSink, bucket: str, twin: str, cluster: str, start: str, stop: str
) -> list[Restatement]:
    rows = await sink.query(
        f"""
from(bucket: "{bucket}")
  |> range(start: {start}, stop: {stop})
  |> filter(fn: (r) => r._measurement == "{schema.RESTATEMENT}" and r.{schema.TWIN} == "{twin}")
  |> filter(fn: (r) => r.{schema.CLUSTER} == "{cluster}")
  |> pivot(
       rowKey: ["_time", "{schema.SITE}", "{schema.HOUR}"],
       columnKey: ["_field"],
       valueColumn: "_value",
     )
"""
    )

    def num(row: Mapping[str, Any], name: str) -> float:
        return float(row.get(name) or 0.0)

    return sorted(
        (
            Restatement(
                row.get(schema.SITE, ""),
                int(row.get(schema.HOUR) or 0),
                num(row, schema.OLD_TCO2E),
                num(row, schema.NEW_TCO2E),
                str(row.get(schema.REASON, "")),
            )
            for row in rows
        ),
        key=lambda r: (r.hour_ms, r.site),
    )
