"""Which readings topic a cluster's readings travel on: clusters spread over worker groups.

One worker group holding every cluster of the network does not keep up; splitting one
``readings`` topic by consumer group and partition alone made each worker dead-letter the
other workers' clusters as "unknown cluster". So clusters are placed in named groups, and a
group's readings have a topic of their own, ``<readings topic>.<group>``: its connectors
publish there, its stream worker (several of them, sharing the topic's partitions in one
consumer group) reads only there, and its priced topic and alerting follow from that name.
A cluster in no group stays on the plain readings topic.

The routing file (``CLUSTERTWIN_ROUTING_FILE``) is YAML::

    groups:
      north-sea: [dunkirk, rotterdam, antwerp]
      asia: [teda]
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Routing", "RoutingError", "load_routing"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # a Kafka topic suffix and a Kubernetes name


class RoutingError(ValueError):
    """The routing file cannot be used; the message names the file and the item."""


class Routing(BaseModel):
    """Groups of clusters; a cluster is in at most one group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("groups")
    @classmethod
    def _names_and_one_group_per_cluster(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        problems = []
        seen: dict[str, str] = {}
        for group, clusters in groups.items():
            if not _NAME.match(group):
                problems.append(f"groups.{group}: a group name is lower-case letters, digits, -")
            if not clusters:
                problems.append(f"groups.{group}: names no cluster")
            for cluster in clusters:
                if cluster in seen:
                    problems.append(
                        f"groups.{group}: cluster {cluster!r} is already in group "
                        f"{seen[cluster]!r} (a cluster's readings go to one topic)"
                    )
                seen.setdefault(cluster, group)
        if problems:
            raise ValueError("; ".join(problems))
        return groups

    def group_of(self, cluster: str) -> str | None:
        for group, clusters in self.groups.items():
            if cluster in clusters:
                return group
        return None

    def clusters_of(self, group: str) -> list[str]:
        try:
            return list(self.groups[group])
        except KeyError:
            known = ", ".join(sorted(self.groups)) or "none"
            raise RoutingError(f"unknown cluster group {group!r} (groups: {known})") from None

    @staticmethod
    def group_topic(readings_topic: str, group: str | None) -> str:
        """The one naming rule of a group's readings topic."""
        return readings_topic if group is None else f"{readings_topic}.{group}"

    def topic_for(self, readings_topic: str, cluster: str) -> str:
        """The readings topic ``cluster``'s readings are published to."""
        return self.group_topic(readings_topic, self.group_of(cluster))


def load_routing(path: Path | None) -> Routing:
    """The routing file's groups (no file: every cluster on the plain readings topic)."""
    if path is None:
        return Routing()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise RoutingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RoutingError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Routing.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"])
            lines.append(f"{path}: {where}: {e['msg'].removeprefix('Value error, ')}")
        raise RoutingError("\n".join(lines)) from None
