"""The ``alert/1`` record, its published JSON Schema and how events fold into alert states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.alerting.model import Alert, Kind, Scope, Severity, alert_id, alert_json_schema
from streams.alerting.notify import webhook_payload
from streams.alerting.store import fold

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "alert.v1.json"


def _alert(event: str, at: int, **kw: object) -> Alert:
    scope = Scope(cluster="dunkirk", site="arcelor", meter="")
    return Alert(
        id=alert_id("live", "emission_shift", scope, 1000),
        event=event,
        kind=Kind.EMISSION_SHIFT,
        category=Kind.EMISSION_SHIFT.category,
        severity=Severity.WARNING,
        scope=scope,
        opened=1000,
        at=at,
        resolved=at if event == "resolve" else None,
        value=12.5,
        threshold=10.0,
        unit="tCO2e/h",
        explanation="Emissions of site arcelor shifted up.",
        **kw,
    )


def test_published_schema_matches_the_model() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(
        json.dumps(alert_json_schema(), sort_keys=True)
    )


def test_json_roundtrip_and_strictness() -> None:
    a = _alert("open", 1000)
    raw = a.to_json()
    assert json.loads(raw)["schema"] == "alert/1"
    assert Alert.from_json(raw) == a
    bad = json.loads(raw)
    bad["surprise"] = 1
    with pytest.raises(ValidationError):
        Alert.model_validate(bad)


def test_ids_are_deterministic_and_distinct() -> None:
    s = Scope(cluster="c", site="s")
    assert alert_id("live", "k", s, 1) == alert_id("live", "k", s, 1)
    assert (
        len(
            {
                alert_id("live", "k", s, 1),
                alert_id("live", "k", s, 2),
                alert_id("x", "k", s, 1),
                alert_id("live", "k", Scope(cluster="c"), 1),
            }
        )
        == 4
    )


def test_fold_open_update_resolve_ack_and_duplicates() -> None:
    o, u, r = _alert("open", 1000), _alert("update", 2000), _alert("resolve", 3000)
    views = fold([o, o, u])
    (v,) = views.values()
    assert v.is_open and v.events == 2 and v.latest.event == "update"
    ack = o.model_copy(
        update={"event": "acknowledge", "at": 2500, "acked_by": "ana", "acked_at": 2500}
    )
    views = fold([o, u, ack, r, u])  # a late duplicate update never reopens
    (v,) = views.values()
    assert not v.is_open and v.latest.resolved == 3000 and v.acked_by == "ana"


def test_webhook_payload_is_slack_and_teams_compatible() -> None:
    p = webhook_payload(_alert("open", 1000))
    assert p["text"].startswith(
        ":rotating_light: [WARNING] OPEN: emission_shift at dunkirk/arcelor"
    )
    assert "shifted up" in p["text"]
    assert p["blocks"][0]["type"] == "header"
    assert p["alert"]["id"] == _alert("open", 1000).id
    json.dumps(p)
