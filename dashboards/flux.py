"""A small typed Flux query model: the one place where ClusterTwin writes Flux.

grafana-foundation-sdk has builders for panels, variables and alert rules and for many
datasources, but none for InfluxDB. Hand-written Flux strings scattered over panels would be
the usual source of dashboard bugs (a misspelt field, a filter that silently matches nothing),
so every query is composed here from the names in :mod:`streams.influx_schema`, and
:class:`FluxQuery` implements the SDK's ``cog.variants.Dataquery`` so panels and alert rules
take it like any built-in query type.

The same query text runs in two places, which is what lets the tests prove the dashboards:

* in Grafana, whose InfluxDB backend replaces ``v.timeRangeStart``, ``v.timeRangeStop``,
  ``v.windowPeriod`` and ``v.defaultBucket`` textually, and whose frontend replaces dashboard
  variables (``${cluster}``) before sending the query;
* directly against InfluxDB (tests, README pictures), where :func:`standalone` does both of
  those replacements the same way Grafana does, so nothing differs but the transport.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE_TYPE = "influxdb"
# Stable across every Grafana the files are provisioned into, so the
# dashboards' JSON never needs rewriting for a particular installation.
DATASOURCE_UID = "clustertwin-influxdb"

_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^(\d+(ns|us|ms|s|m|h|d|w|mo|y))+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SELECTORS = frozenset({"last", "first", "max", "min"})
AGGREGATES = frozenset(
    {"mean", "sum", "last", "first", "max", "min", "count", "median", "stddev", "spread"}
)


class FluxError(ValueError):
    """A query could not be composed; the message names the offending part."""


@dataclass(frozen=True)
class Var:
    """A dashboard variable, interpolated by Grafana (``${name}``) or by :func:`standalone`."""

    name: str

    def __post_init__(self) -> None:
        if not _VARIABLE.match(self.name):
            raise FluxError(f"bad variable name {self.name!r}")

    def __str__(self) -> str:
        return "${" + self.name + "}"


def string(value: str | Var) -> str:
    """A Flux string literal; variables stay as ``"${name}"`` for Grafana to fill in."""
    if isinstance(value, Var):
        return f'"{value}"'
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def duration(value: str) -> str:
    """A Flux duration literal, or ``v.windowPeriod`` (Grafana picks it from the panel width)."""
    if value == "v.windowPeriod" or _DURATION.match(value):
        return value
    raise FluxError(f"bad Flux duration {value!r} (e.g. 1m, 15m, 1h, or v.windowPeriod)")


def _column(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise FluxError(f"bad column name {name!r}")
    return name


def _columns(names: Iterable[str]) -> str:
    return "[" + ", ".join(string(_column(n)) for n in names) + "]"


@dataclass(frozen=True)
class Flux:
    """An immutable Flux pipeline: each method returns a longer pipeline.

    Only the operations the dashboards need exist, each checked where it is written: a
    column name that is not an identifier or a bad duration fails when the dashboard is
    built, not when an operator opens it.
    """

    stages: tuple[str, ...] = ()
    # Statements before the pipeline (imports); kept apart so they stay on top.
    imports: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def bucket(cls, bucket: str | None = None) -> Flux:
        """Start from the datasource's default bucket (or a named one) over the panel's range."""
        source = "v.defaultBucket" if bucket is None else string(bucket)
        return cls(
            (f"from(bucket: {source})", "range(start: v.timeRangeStart, stop: v.timeRangeStop)")
        )

    def _then(self, stage: str, *imports: str) -> Flux:
        return replace(self, stages=(*self.stages, stage), imports=self.imports | set(imports))

    def range(self, start: str, stop: str = "v.timeRangeStop") -> Flux:
        """Replace the range (e.g. start of the year for year-to-date figures)."""
        if not self.stages or not self.stages[-1].startswith("range("):
            raise FluxError("range() must follow bucket()")
        return replace(self, stages=(*self.stages[:-1], f"range(start: {start}, stop: {stop})"))

    def measurement(self, name: str) -> Flux:
        return self._then(f"filter(fn: (r) => r._measurement == {string(name)})")

    def fields(self, *names: str) -> Flux:
        if not names:
            raise FluxError("fields() needs at least one field")
        test = " or ".join(f"r._field == {string(_column(n))}" for n in names)
        return self._then(f"filter(fn: (r) => {test})")

    def where(self, tag: str, value: str | Var) -> Flux:
        """Keep rows whose ``tag`` equals ``value``."""
        return self._then(f"filter(fn: (r) => r.{_column(tag)} == {string(value)})")

    def where_in(self, tag: str, values: Sequence[str]) -> Flux:
        if not values:
            raise FluxError(f"where_in({tag!r}) needs at least one value")
        test = " or ".join(f"r.{_column(tag)} == {string(v)}" for v in values)
        return self._then(f"filter(fn: (r) => {test})")

    def where_exists(self, tag: str) -> Flux:
        return self._then(f"filter(fn: (r) => exists r.{_column(tag)})")

    def where_absent(self, tag: str) -> Flux:
        """Keep rows without ``tag``: a cluster total is the row with no site tag."""
        return self._then(f'filter(fn: (r) => not exists r.{_column(tag)} or r.{tag} == "")')

    def keep(self, *columns: str) -> Flux:
        return self._then(f"keep(columns: {_columns(columns)})")

    def group(self, *columns: str) -> Flux:
        return self._then(f"group(columns: {_columns(columns)})")

    def aggregate_window(
        self, every: str = "v.windowPeriod", fn: str = "mean", create_empty: bool = False
    ) -> Flux:
        if fn not in AGGREGATES:
            raise FluxError(f"unknown aggregate {fn!r}; one of {sorted(AGGREGATES)}")
        empty = "true" if create_empty else "false"
        return self._then(
            f"aggregateWindow(every: {duration(every)}, fn: {fn}, createEmpty: {empty})"
        )

    def reduce(self, fn: str) -> Flux:
        """Collapse each table to one row (``last``, ``sum``, ...).

        Aggregates (unlike selectors such as ``last``) drop ``_time``; the row is stamped with
        the end of the range instead, because Grafana names a value without a time column
        ``_value`` and a panel would then show that rather than the series name.
        """
        if fn not in AGGREGATES:
            raise FluxError(f"unknown aggregate {fn!r}; one of {sorted(AGGREGATES)}")
        flux = self._then(f"{fn}()")
        return flux if fn in SELECTORS else flux._stamp()

    def _stamp(self) -> Flux:
        return self._then("map(fn: (r) => ({r with _time: v.timeRangeStop}))")

    def pivot_fields(self, row_key: str = "_time") -> Flux:
        """One column per field, so a table or a stat shows several fields side by side."""
        return self._then(
            f'pivot(rowKey: ["{_column(row_key)}"], columnKey: ["_field"], valueColumn: "_value")'
        )

    def scale(self, factor: float) -> Flux:
        """Multiply ``_value`` (unit changes such as t to kt) without losing its type."""
        # Flux has no exponent notation ("6e-08" does not compile): positional digits
        literal = format(Decimal(repr(float(factor))), "f")
        if "." not in literal:
            literal += ".0"
        return self._then(f"map(fn: (r) => ({{r with _value: float(v: r._value) * {literal}}}))")

    def rename(self, mapping: Mapping[str, str]) -> Flux:
        pairs = ", ".join(f"{_column(k)}: {string(v)}" for k, v in mapping.items())
        return self._then(f"rename(columns: {{{pairs}}})")

    def set(self, column: str, value: str) -> Flux:
        return self._then(f"set(key: {string(_column(column))}, value: {string(value)})")

    def sort(self, *columns: str, desc: bool = False) -> Flux:
        return self._then(f"sort(columns: {_columns(columns)}, desc: {str(desc).lower()})")

    def limit(self, n: int) -> Flux:
        return self._then(f"limit(n: {int(n)})")

    def filter_raw(self, predicate: str) -> Flux:
        """A filter on a Flux predicate over ``r`` (for figures, not for names: use where)."""
        return self._then(f"filter(fn: (r) => {predicate})")

    def map_raw(self, record: str) -> Flux:
        """``map(fn: (r) => ({<record>}))``, ``record`` e.g. ``r with _value: r._value * 2.0``."""
        return self._then(f"map(fn: (r) => ({{{record}}}))")

    def where_match(self, tag: str, pattern: str) -> Flux:
        """Keep rows whose ``tag`` matches a regular expression."""
        if "/" in pattern or "\n" in pattern:
            raise FluxError(f"regex {pattern!r} may not contain '/' or a newline")
        return self._then(f"filter(fn: (r) => r.{_column(tag)} =~ /{pattern}/)")

    def drop(self, *columns: str) -> Flux:
        return self._then(f"drop(columns: {_columns(columns)})")

    def count(self) -> Flux:
        return self._then("count()")._stamp()

    def moving_average(self, n: int) -> Flux:
        if n < 1:
            raise FluxError("moving_average needs n >= 1")
        return self._then(f"movingAverage(n: {int(n)})")

    def label(self, name: str) -> Flux:
        """Name the result one series ``name``: what a legend or a stat shows as its title.

        Grafana names a series after ``_field`` and the group-key tags; keeping only time,
        value and ``_field`` gives one clean name in Grafana and in the README pictures alike.
        """
        return self.set("_field", name).keep("_time", "_value", "_field").group("_field")

    def label_by(self, tag: str) -> Flux:
        """One series per value of ``tag``, named after it (a site, a carrier, a cluster)."""
        return (
            self.map_raw(f"r with _field: string(v: r.{_column(tag)})")
            .keep("_time", "_value", "_field")
            .group("_field")
        )

    def relabel_fields(self, labels: Mapping[str, str]) -> Flux:
        """Give fields human names (``tco2e_s1`` -> ``Scope 1``), then name series by them."""
        expr = "r._field"
        for name, label in reversed(list(labels.items())):
            expr = f"if r._field == {string(_column(name))} then {string(label)} else {expr}"
        return (
            self.map_raw(f"r with _field: {expr}").keep("_time", "_value", "_field").group("_field")
        )

    def yield_(self, name: str) -> Flux:
        return self._then(f"yield(name: {string(name)})")

    def render(self) -> str:
        if not self.stages:
            raise FluxError("empty Flux pipeline")
        head = "".join(f'import "{i}"\n' for i in sorted(self.imports))
        return head + "\n  |> ".join(self.stages)

    def __str__(self) -> str:
        return self.render()


# -- the SDK's Dataquery variant ------------------------------------------------------------


class FluxQuery(cogvariants.Dataquery):
    """An InfluxDB (Flux) target as Grafana stores it in a panel or an alert rule."""

    ref_id: str
    query: str
    datasource: DataSourceRef | None
    hide: bool | None

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        datasource: DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "query": self.query}
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        ds = data.get("datasource")
        return cls(
            ref_id=str(data.get("refId", "A")),
            query=str(data.get("query", "")),
            datasource=DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
            hide=data.get("hide"),
        )


def datasource_ref(uid: str = DATASOURCE_UID) -> DataSourceRef:
    return DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)


class FluxQueryBuilder(cogbuilder.Builder[FluxQuery]):
    """Builder in the SDK's style: ``panel.with_target(FluxQueryBuilder(...))`` reads as usual."""

    _internal: FluxQuery

    def __init__(self, query: Flux | str, ref_id: str = "A") -> None:
        self._internal = FluxQuery(ref_id=ref_id, query=str(query), datasource=datasource_ref())

    def build(self) -> FluxQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: DataSourceRef) -> typing.Self:
        self._internal.datasource = datasource
        return self

    def hide(self, hide: bool) -> typing.Self:
        self._internal.hide = hide
        return self


# Dashboards read back from JSON (round-trip tests, `dashboards render`) get typed queries.
cogruntime.register_dataquery_variant(
    cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=FluxQuery.from_json)
)


# -- running a dashboard query outside Grafana ------------------------------------------------

_GRAFANA_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate_variables(query: str, variables: Mapping[str, str]) -> str:
    """Replace ``${name}`` and ``$name`` as Grafana's frontend does for a single-value variable.

    Grafana's own ``$__interval`` family is left alone (the backend handles it); an unknown
    variable is an error rather than a query that silently matches nothing.
    """

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.startswith("__"):
            return match.group(0)
        if name not in variables:
            raise FluxError(f"query uses ${{{name}}} but no value was given for it")
        return variables[name]

    return _GRAFANA_VAR.sub(sub, query)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MACRO = re.compile(
    r"\bv\.(timeRangeStart|timeRangeStop|windowPeriod|defaultBucket|organization)\b"
)


def standalone(
    query: str,
    *,
    start: datetime,
    stop: datetime,
    bucket: str,
    organization: str = "",
    window: timedelta = timedelta(minutes=1),
    variables: Mapping[str, str] | None = None,
) -> str:
    """The text InfluxDB must run to answer exactly what Grafana would send for this query.

    Same textual replacement of the ``v.*`` macros as Grafana's InfluxDB backend (see
    pkg/tsdb/influxdb/flux/macros.go), after the frontend's variable interpolation.
    """
    text = interpolate_variables(query, variables or {})
    seconds = int(window.total_seconds())
    if seconds <= 0:
        raise FluxError("window must be positive")
    values = {
        "timeRangeStart": _time(start),
        "timeRangeStop": _time(stop),
        "windowPeriod": f"{seconds}s",
        "defaultBucket": string(bucket),
        "organization": string(organization),
    }
    return _MACRO.sub(lambda m: values[m.group(1)], text)


__all__ = [
    "DATASOURCE_TYPE",
    "DATASOURCE_UID",
    "Flux",
    "FluxError",
    "FluxQuery",
    "FluxQueryBuilder",
    "Var",
    "datasource_ref",
    "interpolate_variables",
    "standalone",
    "string",
]
