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

from dataclasses import dataclass, replace
from typing import Literal

from clustertwin_base.routing import Routing

__all__ = ["ROLES", "Acl", "Names", "acl_table"]

ResourceType = Literal["topic", "group", "cluster", "transactionalId"]
Pattern = Literal["literal", "prefix"]
Role = Literal["connector", "worker", "alerting"]

# the roles of a deployment without cluster groups; with groups, worker-<g> and alerting-<g>
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
    """The topic and app names a deployment uses (defaults: the settings' defaults).

    With cluster ``groups`` (clustertwin_base.routing) each group has its own readings
    topic and its own workers, app ids and Kafka users (``worker-<group>``,
    ``alerting-<group>``); connectors may write every group's readings topic.
    """

    readings: str = "readings"
    deadletter: str = "readings-deadletter"
    late: str = "readings-late"
    alerts: str = "alerts"
    worker_app_id: str = "clustertwin-twin"
    alerting_app_id: str = "clustertwin-alerting"
    groups: tuple[str, ...] = ()

    @property
    def priced(self) -> str:
        # streams.priced.priced_topic's rule; clustertwin_base cannot import streams, so the
        # test of this table checks the two agree
        return f"{self.readings}-priced"

    def of_group(self, group: str) -> Names:
        """The names one group's workers use (Routing.group_topic's rule, app id suffix)."""
        return replace(
            self,
            readings=Routing.group_topic(self.readings, group),
            worker_app_id=f"{self.worker_app_id}-{group}",
            alerting_app_id=f"{self.alerting_app_id}-{group}",
            groups=(),
        )


def _role_acls(n: Names) -> dict[str, list[Acl]]:
    def own(app_id: str) -> list[Acl]:
        return [
            Acl("topic", f"{app_id}-", "prefix", _OWN),
            Acl("group", app_id, "literal", _READ),
        ]

    return {
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


def acl_table(names: Names | None = None) -> dict[str, tuple[Acl, ...]]:
    """Every role's ACLs, sorted (so two tables compare equal whatever order built them)."""
    n = names or Names()
    # with groups every cluster is routed to one: the plain topic has no reader to write to
    readings = [n.of_group(g).readings for g in n.groups] or [n.readings]
    table: dict[str, list[Acl]] = {
        "connector": [
            *(Acl("topic", topic, "literal", _WRITE) for topic in readings),
            Acl("topic", n.deadletter, "literal", _WRITE),
        ]
    }
    if not n.groups:
        table.update(_role_acls(n))
    for g in n.groups:
        for role, acls in _role_acls(n.of_group(g)).items():
            table[f"{role}-{g}"] = acls
    return {role: tuple(sorted(acls)) for role, acls in table.items()}
