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

from connectors.sdk.base import Connector, ConnectorConfig
from twin.readings import MeterIndex

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
        raw = yaml.safe_load(path.read_text())
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


def lint(path: str | Path) -> tuple[type[Connector[Any]], ConnectorConfig, MeterIndex]:
    """Everything ``run`` would check before touching a network: config, cluster, meter ids."""
    cls, config = load_config(path)
    index = meter_index_for(config)
    problems = [f"  {p}" for p in cls.check_config(config, index)]
    if problems:
        raise ConfigError(
            f"{path}: config does not match cluster {index.cluster!r}:\n" + "\n".join(problems)
        )
    return cls, config, index
