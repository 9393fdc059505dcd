"""The connector SDK: what a site connector implements and what it gets for free.

Implement a :class:`Connector` (or :class:`PollingConnector`) with a pydantic config model
derived from :class:`ConnectorConfig`, declare it under the ``clustertwin.connectors`` entry
point group, and ``clustertwin connector run CONFIG`` gives it validation, envelopes, an
idempotent Kafka producer, an on-disk buffer, reconnects and metrics; ``metering`` turns
counters and rates into interval readings whose baselines survive restarts. See
connectors/README.md.

The public surface an out-of-tree connector may rely on is ``__all__`` below, the
``conformance`` and ``pytest_plugin`` modules, and the reading contract ``twin.readings``;
the package is typed (``py.typed``). Envelopes are built by the contract's encoder.
"""

from connectors.sdk.backoff import Backoff
from connectors.sdk.base import (
    BadSample,
    BatchSettings,
    BufferSettings,
    Connector,
    ConnectorConfig,
    Item,
    KafkaSettings,
    MeterMapping,
    PollingConfig,
    PollingConnector,
    Sample,
    SourceMisconfigured,
    SourceUnavailable,
    unknown_meters,
)
from connectors.sdk.buffer import BufferFull, DiskBuffer, Record
from connectors.sdk.metering import (
    CounterSpec,
    Interval,
    Metering,
    Refusal,
    StateError,
    StateStore,
)
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.publisher import KafkaPublisher, producer_config
from connectors.sdk.registry import (
    ENTRY_POINT_GROUP,
    ConfigError,
    LintReport,
    available,
    lint,
    lint_report,
    load_config,
    load_connector,
    meter_index_for,
    parse_config,
    unit_problems,
)
from connectors.sdk.runner import ConnectorRunner, make_publisher
from connectors.sdk.tls import TlsRefused, tls_refusal

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backoff",
    "BadSample",
    "BatchSettings",
    "BufferFull",
    "BufferSettings",
    "ConfigError",
    "Connector",
    "ConnectorConfig",
    "ConnectorMetrics",
    "ConnectorRunner",
    "CounterSpec",
    "DiskBuffer",
    "Interval",
    "Item",
    "KafkaPublisher",
    "KafkaSettings",
    "LintReport",
    "MeterMapping",
    "Metering",
    "PollingConfig",
    "PollingConnector",
    "Record",
    "Refusal",
    "Sample",
    "SourceMisconfigured",
    "SourceUnavailable",
    "StateError",
    "StateStore",
    "TlsRefused",
    "available",
    "lint",
    "lint_report",
    "load_config",
    "load_connector",
    "make_publisher",
    "meter_index_for",
    "parse_config",
    "producer_config",
    "tls_refusal",
    "unit_problems",
    "unknown_meters",
]
