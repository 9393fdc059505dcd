"""The secured local Kafka's TLS material and ACLs (``CLUSTERTWIN_KAFKA_SECURITY=scram-tls``).

The ACLs come from ``clustertwin_base.kafka_acls.acl_table``, the table the Helm chart's
Strimzi ``KafkaUser`` resources are tested equal to, so a local secured stack enforces exactly
what a production cluster does. This module only translates that table into kafka-python's
ACL objects and back (``describe_acls`` of a running broker compares equal to the table), and
lays out the PEM values Kafka 3.9 reads inline from ``server.properties``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from clustertwin_base.kafka_acls import ROLES, Acl, Names, Role, acl_table

if TYPE_CHECKING:
    from kafka import KafkaAdminClient
    from kafka.admin import ACL


#: One SCRAM user per role of the table; the broker's own user is the only super user.
def user_of(role: str) -> str:
    """The SCRAM user of a role of the ACL table (cluster groups' roles included)."""
    return f"clustertwin-{role}"


ROLE_USERS: dict[Role, str] = {role: user_of(role) for role in ROLES}
#: The role whose credentials ``stack.env`` carries (the CLI's and the stream worker's).
DEFAULT_ROLE: Role = "worker"

#: (principal, resource type, name, pattern, operation): one allow-ACL, comparable as a set.
Binding = tuple[str, str, str, str, str]

_RESOURCE_TYPES = {"topic": "TOPIC", "group": "GROUP", "cluster": "CLUSTER"}
_RESOURCE_TYPES["transactionalId"] = "TRANSACTIONAL_ID"
_PATTERNS = {"literal": "LITERAL", "prefix": "PREFIXED"}
#: Every operation of Kafka's ACLs, as the table (and Kafka's docs) spell them.
_OPERATIONS = (
    "All",
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
    "CreateTokens",
    "DescribeTokens",
)


def principal(user: str) -> str:
    return f"User:{user}"


def _enum_name(operation: str) -> str:
    """Kafka's spelling ("DescribeConfigs") as kafka-python's enum name ("DESCRIBE_CONFIGS")."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()


def bindings(table: Mapping[str, tuple[Acl, ...]]) -> set[Binding]:
    """Every allow-ACL of the table, one per principal, resource and operation."""
    return {
        (principal(user_of(role)), acl.resource_type, acl.name, acl.pattern, operation)
        for role, acls in table.items()
        for acl in acls
        for operation in acl.operations
    }


def to_kafka(items: Iterable[Binding]) -> list[ACL]:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return [
        ACL(
            principal=who,
            host="*",
            operation=ACLOperation[_enum_name(operation)],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[_RESOURCE_TYPES[kind]],
                name,
                ACLResourcePatternType[_PATTERNS[pattern]],
            ),
        )
        for who, kind, name, pattern, operation in sorted(items)
    ]


def from_kafka(acls: Iterable[ACL]) -> set[Binding]:
    """The broker's ACLs in the table's vocabulary (a DENY or a host rule would show as such)."""
    kinds = {v: k for k, v in _RESOURCE_TYPES.items()}
    patterns = {v: k for k, v in _PATTERNS.items()}
    operations = {_enum_name(op): op for op in _OPERATIONS}
    out: set[Binding] = set()
    for acl in acls:
        pattern = acl.resource_pattern
        operation = operations.get(acl.operation.name, acl.operation.name)
        if acl.permission_type.name != "ALLOW" or acl.host != "*":
            operation = f"{acl.permission_type.name}:{operation}@{acl.host}"
        out.add(
            (
                acl.principal,
                kinds.get(pattern.resource_type.name, pattern.resource_type.name),
                pattern.resource_name,
                patterns.get(pattern.pattern_type.name, pattern.pattern_type.name),
                operation,
            )
        )
    return out


def broker_acls(admin: KafkaAdminClient) -> set[Binding]:
    """Every ACL the broker holds."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    everything = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acls, error = admin.describe_acls(everything)
    if error.errno:  # kafka-python returns NoError (errno 0) on success
        raise RuntimeError(f"describing the Kafka ACLs failed: {error}")
    return from_kafka(acls)


def apply_acls(admin: KafkaAdminClient, names: Names | None = None) -> int:
    """Create the table's ACLs the broker lacks; returns how many were created. Idempotent."""
    missing = bindings(acl_table(names)) - broker_acls(admin)
    if not missing:
        return 0
    result = admin.create_acls(to_kafka(missing))
    if result["failed"]:
        raise RuntimeError(f"creating Kafka ACLs failed: {result['failed']}")
    return len(missing)


def topics(names: Names | None = None) -> list[str]:
    """The topics the roles use but may not create (only a worker's own prefix may be created):
    the stack makes them, as Strimzi ``KafkaTopic`` resources would."""
    n = names or Names()
    return [n.readings, n.deadletter, n.late, n.priced, n.alerts]


def properties_value(pem: str) -> str:
    """A PEM block as one ``server.properties`` value (Java reads ``\\n`` as a newline)."""
    return pem.strip().replace("\n", "\\n")
