"""The alert record (``alert/1``): what the ``alerts`` topic, the webhook and the CLI carry.

One schema for every kind of alert, emission or data, so a consumer needs one parser. An alert
is a *series of events* sharing one ``id``: ``open`` once, ``update`` while it lasts, ``resolve``
once (and ``acknowledge`` from an operator). The id is derived from what was detected and when
it started (event time), so a replayed stream re-emits the same ids and every consumer can
de-duplicate on ``(id, event)``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "alert/1"


class Category(StrEnum):
    """Emission alerts say the cluster is off track; data alerts say the data cannot be trusted.

    They are kept apart because they go to different people: the energy manager and the
    metering/OT team.
    """

    EMISSION = "emission"
    DATA = "data"


class Kind(StrEnum):
    PATHWAY_DRIFT_1H = "pathway_drift_1h"
    PATHWAY_DRIFT_24H = "pathway_drift_24h"
    PROJECTION_OVER_TARGET = "projection_over_target"
    EMISSION_SHIFT = "emission_shift"
    METER_SILENT = "meter_silent"
    METER_FLATLINE = "meter_flatline"
    METER_JUMP = "meter_jump"

    @property
    def category(self) -> Category:
        return Category.DATA if self.value.startswith("meter_") else Category.EMISSION


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_LEVEL = {Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}

DEFAULT_SEVERITY: dict[Kind, Severity] = {
    Kind.PATHWAY_DRIFT_1H: Severity.WARNING,
    Kind.PATHWAY_DRIFT_24H: Severity.CRITICAL,
    Kind.PROJECTION_OVER_TARGET: Severity.CRITICAL,
    Kind.EMISSION_SHIFT: Severity.WARNING,
    Kind.METER_SILENT: Severity.WARNING,
    Kind.METER_FLATLINE: Severity.WARNING,
    Kind.METER_JUMP: Severity.WARNING,
}

Event = Literal["open", "update", "resolve", "acknowledge"]


class Scope(BaseModel):
    """Where: a cluster, a site of it, or a meter of a site (empty string = not that narrow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(min_length=1)
    site: str = ""
    meter: str = ""

    @property
    def label(self) -> str:
        return "/".join(p for p in (self.cluster, self.site, self.meter) if p)


class Alert(BaseModel):
    """One event of one alert, as published on the ``alerts`` topic (key = ``id``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["alert/1"] = Field(default="alert/1", alias="schema")
    id: str = Field(description="Stable id of the alert (all its events share it).")
    event: Event = Field(description="open, update (while it lasts), resolve, acknowledge.")
    kind: Kind
    category: Category
    severity: Severity
    scope: Scope
    twin: str = Field(default="live", description="Which twin (live, a scenario, a test run).")
    opened: int = Field(description="Event time the condition started to count, epoch ms UTC.")
    resolved: int | None = Field(default=None, description="Event time it cleared, epoch ms.")
    at: int = Field(description="Event time of this event, epoch ms UTC.")
    value: float | None = Field(default=None, description="The measured figure (see unit).")
    threshold: float | None = Field(default=None, description="The figure it was held against.")
    unit: str = Field(default="", description="Unit of value and threshold.")
    explanation: str = Field(description="What happened and what to check, for an operator.")
    details: dict[str, Any] = Field(default_factory=dict, description="Detector statistics.")
    acked_by: str | None = None
    acked_at: int | None = None
    emitted_at: int | None = Field(default=None, description="Wall clock when published, ms.")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alert:
        return cls.model_validate(orjson.loads(raw))

    @property
    def dedupe_key(self) -> tuple[str, str, int]:
        return (self.id, self.event, self.at)


def alert_id(twin: str, kind: str, scope: Scope, opened: int) -> str:
    """Deterministic id: the same fault detected again on replay gets the same id."""
    text = f"{twin}|{kind}|{scope.cluster}|{scope.site}|{scope.meter}|{opened}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def alert_json_schema() -> dict[str, Any]:
    """The JSON Schema published as ``schemas/alert.v1.json``."""
    schema = Alert.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://clustertwin.dev/schemas/alert.v1.json"
    schema["title"] = "ClusterTwin alert event (alert/1)"
    return schema
