"""Finding connectors (entry points) and loading their YAML configs.

Connectors are discovered only through the ``clustertwin.connectors`` entry point group —
the built-in ones too — so a third-party package adds a connector by declaring one entry
point, never by editing this repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connectors.sdk.base import Connector, ConnectorConfig, MeterMapping
from twin.carriers import UnitError, unit_dimension, unit_is_compatible
from twin.readings import MeterIndex
from twin.yaml_loader import load_yaml

ENTRY_POINT_GROUP = "clustertwin.connectors"


class ConfigError(ValueError):
    """A connector config that cannot be used; the message names the file and bad fields."""


@dataclass(frozen=True)
class ConnectorInfo:
    name: str
    target: str  # "module:Class"
    distribution: str | None

    def load(self) -> type[Connector[Any]]:
        return load_connector(self.name)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # first wins if a name is installed twice
    return found


def available() -> list[ConnectorInfo]:
    """Installed connectors, sorted by name."""
    out = []
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        out.append(ConnectorInfo(name, ep.value, None if dist is None else dist.name))
    return out


def load_connector(name: str) -> type[Connector[Any]]:
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(
            f"connector {name!r} is not installed (entry point group {ENTRY_POINT_GROUP!r}; "
            f"installed: {known})"
        )
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(f"entry point {name!r} -> {eps[name].value} is not a Connector class")
    return cls


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def parse_config(
    raw: Any, origin: str = "<memory>"
) -> tuple[type[Connector[Any]], ConnectorConfig]:
    """Validate a config mapping with its connector's model."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a connector config is a YAML mapping")
    name = raw.get("connector")
    if not isinstance(name, str):
        raise ConfigError(f"{origin}: connector: required, the connector's name (see `list`)")
    cls = load_connector(name)
    try:
        config = cls.config_model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{origin}: invalid {name} connector config:\n{format_validation_error(exc)}"
        ) from exc
    return cls, config


def load_config(path: str | Path) -> tuple[type[Connector[Any]], ConnectorConfig]:
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, str(path))


def meter_index_for(config: ConnectorConfig) -> MeterIndex:
    """The meters a connector may publish: the cluster model the config names."""
    # Imported when asked: listing or loading plugins must not pay for the cluster models.
    from twin.model import load_cluster

    try:
        cluster = load_cluster(config.cluster)
    except Exception as exc:
        raise ConfigError(f"cluster: cannot load {config.cluster!r}: {exc}") from exc
    return MeterIndex.from_cluster(cluster)


def unit_problems(mappings: list[MeterMapping], index: MeterIndex) -> list[str]:
    """Lint rule "unit fits the meter": a mapped unit must measure the meter's carrier
    (the twin's conversions decide) and be of the dimension the meter is declared in.
    Unknown meter ids are the connector's own ``check_config`` finding, not repeated here."""
    problems = []
    for m in mappings:
        info = index.get(m.meter)
        if info is None or m.unit is None:
            continue
        if not unit_is_compatible(info.carrier, m.unit):
            problems.append(
                f"{m.where}: unit {m.unit!r} cannot measure meter {m.meter!r}'s carrier "
                f"{info.carrier} (rule: unit fits the meter)"
            )
            continue
        if info.unit is None or m.unit == info.unit:
            continue
        try:
            mapped, declared = unit_dimension(m.unit), unit_dimension(info.unit)
        except UnitError:
            continue  # the cluster model's own unit is the model's lint, not this one
        if mapped is not declared:
            problems.append(
                f"{m.where}: unit {m.unit!r} (an {mapped.value}) mapped onto meter {m.meter!r}, "
                f"declared in {info.unit!r} (a {declared.value}) of carrier {info.carrier} "
                "(rule: unit fits the meter)"
            )
    return problems


@dataclass(frozen=True)
class LintReport:
    """What ``connector lint`` found good: the config, its cluster, what it maps."""

    cls: type[Connector[Any]]
    config: ConnectorConfig
    index: MeterIndex
    #: distinct meter ids the config maps (templates count once); None: ids come with data
    mapped: int | None

    def summary(self) -> str:
        maps = (
            "meter ids come with the data"
            if self.mapped is None
            else f"{self.mapped} meter{'s' if self.mapped != 1 else ''} mapped"
        )
        return (
            f"{self.config.connector} connector {self.config.name!r}, "
            f"cluster {self.index.cluster!r}, {maps}"
        )


def lint_report(path: str | Path) -> LintReport:
    """Everything ``run`` would check before touching a network: config, cluster, meter
    ids, units against carriers; and how many meters the config maps."""
    cls, config = load_config(path)
    index = meter_index_for(config)
    mappings = cls.mapped_meters(config, index)
    found = cls.check_config(config, index) + unit_problems(mappings or [], index)
    if found:
        raise ConfigError(
            f"{path}: config does not match cluster {index.cluster!r}:\n"
            + "\n".join(f"  {p}" for p in found)
        )
    mapped = None if mappings is None else len({m.meter for m in mappings})
    return LintReport(cls, config, index, mapped)


def lint(path: str | Path) -> tuple[type[Connector[Any]], ConnectorConfig, MeterIndex]:
    """:func:`lint_report`'s checks; the connector class, config and meter index."""
    report = lint_report(path)
    return report.cls, report.config, report.index
