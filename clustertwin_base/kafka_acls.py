"""Who may do what on Kafka: the one table of principals, topics and groups.

Least privilege per part, so a compromised site gateway cannot read the cluster's figures or
forge the workers' outputs:

* a **connector** writes readings and its dead letters, nothing else (it never reads);
* the **stream worker** reads ``readings`` in its consumer group, writes the dead-letter,
  late and priced topics, and owns every topic and group named after its app id (Faust's
  changelogs, its cluster-updates topic, its leader topic);
* the **alerting worker** reads the priced topic, writes ``alerts``, and owns the topics and
  group named after its app id.

The Helm chart's Strimzi ``KafkaUser`` resources are tested equal to this table
(``tests/deploy``); a local secured stack applies the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ROLES", "Acl", "Names", "acl_table"]

ResourceType = Literal["topic", "group", "cluster", "transactionalId"]
Pattern = Literal["literal", "prefix"]
Role = Literal["connector", "worker", "alerting"]

ROLES: tuple[Role, ...] = ("connector", "worker", "alerting")

# Kafka's operation names, as its ACLs and Strimzi's KafkaUser spell them
_WRITE = ("Write", "Describe")
_READ = ("Read", "Describe")
_OWN = ("Read", "Write", "Create", "Describe", "DescribeConfigs", "Delete", "Alter")


@dataclass(frozen=True, order=True)
class Acl:
    """Allow ``operations`` on one resource (a name, or every name with that prefix)."""

    resource_type: ResourceType
    name: str
    pattern: Pattern
    operations: tuple[str, ...]


@dataclass(frozen=True)
class Names:
    """The topic and app names a deployment uses (defaults: the settings' defaults)."""

    readings: str = "readings"
    deadletter: str = "readings-deadletter"
    late: str = "readings-late"
    alerts: str = "alerts"
    worker_app_id: str = "clustertwin-twin"
    alerting_app_id: str = "clustertwin-alerting"

    @property
    def priced(self) -> str:
        # streams.priced.priced_topic's rule; clustertwin_base cannot import streams, so the
        # test of this table checks the two agree
        return f"{self.readings}-priced"


def acl_table(names: Names | None = None) -> dict[Role, tuple[Acl, ...]]:
    """Every role's ACLs, sorted (so two tables compare equal whatever order built them)."""
    n = names or Names()

    def own(app_id: str) -> list[Acl]:
        return [
            Acl("topic", f"{app_id}-", "prefix", _OWN),
            Acl("group", app_id, "literal", _READ),
        ]

    table: dict[Role, list[Acl]] = {
        "connector": [
            Acl("topic", n.readings, "literal", _WRITE),
            Acl("topic", n.deadletter, "literal", _WRITE),
        ],
        "worker": [
            Acl("topic", n.readings, "literal", _READ),
            Acl("topic", n.deadletter, "literal", _WRITE),
            Acl("topic", n.late, "literal", _WRITE),
            Acl("topic", n.priced, "literal", _WRITE),
            *own(n.worker_app_id),
        ],
        "alerting": [
            Acl("topic", n.priced, "literal", _READ),
            Acl("topic", n.readings, "literal", ("Describe",)),  # caught up? end offsets
            Acl("topic", n.alerts, "literal", _WRITE),
            *own(n.alerting_app_id),
        ],
    }
    return {role: tuple(sorted(acls)) for role, acls in table.items()}
