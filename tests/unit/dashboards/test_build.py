"""The generated dashboards: committed JSON is fresh, stable, and uses only what exists."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from grafana_foundation_sdk.models.dashboard import Dashboard

from clustertwin.cli import main
from dashboards import alerts, build
from dashboards.boards import FOLDER_UID, NETWORK_UID, OVERVIEW_UID, PORT_UID, SITE_UID
from dashboards.flux import DATASOURCE_UID
from dashboards.runner import panel_queries
from streams import influx_schema as s

MODELS = build.dashboard_models()
KNOWN_MEASUREMENTS = {
    s.METER_WINDOW,
    s.SITE_WINDOW,
    s.CLUSTER_WINDOW,
    s.METER_READING,
    s.RESTATEMENT,
    s.TWIN_YTD,
    s.PROGRESS,
}
KNOWN_FIELDS = {
    *s.FIGURE_FIELDS,
    s.COMPLETE,
    s.VALUE,
    s.QUALITY,
    s.READING_ENERGY,
    *s.RESTATEMENT_FIELDS,
    s.YTD_TCO2E,
    *s.YTD_SCOPE_FIELDS,
    s.YEAR_FRACTION,
    s.PATHWAY_TCO2E_YEAR,
    s.BUDGET_TO_DATE_TCO2E,
    s.YTD_VS_BUDGET_PCT,
    s.PROJECTED_YEAR_END_TCO2E,
    s.PROJECTED_GAP_TCO2E,
    s.ON_TRACK,
}


def test_committed_files_are_up_to_date() -> None:
    stale = build.stale_files()
    assert not stale, f"run `clustertwin dashboards build`: stale {stale}"


def test_generation_is_deterministic() -> None:
    assert build.expected_files() == build.expected_files()


def test_four_dashboards_with_stable_uids() -> None:
    assert set(MODELS) == {OVERVIEW_UID, SITE_UID, PORT_UID, NETWORK_UID}
    for uid, model in MODELS.items():
        assert model["uid"] == uid
        assert "clustertwin" in model["tags"]


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in model["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("uid", sorted(MODELS))
def test_panels_have_titles_descriptions_and_fit_the_grid(uid: str) -> None:
    seen: set[tuple[int, int]] = set()
    for panel in _panels(MODELS[uid]):
        assert panel["title"] and panel.get("description"), panel
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (panel["title"], g)
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & seen, f"{panel['title']} overlaps another panel"
        seen |= cells


@pytest.mark.parametrize("uid", sorted(MODELS))
def test_every_target_uses_our_datasource_and_known_names(uid: str) -> None:
    queries = list(panel_queries(MODELS[uid]))
    assert queries
    for panel in _panels(MODELS[uid]):
        for target in panel.get("targets") or []:
            assert target["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
    for pq in queries:
        for m in re.findall(r'r\._measurement == "([^"]+)"', pq.query):
            assert m in KNOWN_MEASUREMENTS, (pq.panel_title, m)
        for f in re.findall(r'r\._field == "([^"]+)"', pq.query):
            assert f in KNOWN_FIELDS, (pq.panel_title, f)
        variables = set(re.findall(r"\$\{(\w+)\}", pq.query))
        declared = {v["name"] for v in MODELS[uid]["templating"]["list"]}
        assert variables <= declared, (pq.panel_title, variables - declared)


def test_dashboards_round_trip_through_the_sdk_model() -> None:
    for model in MODELS.values():
        back = Dashboard.from_json(model)
        assert back.uid == model["uid"]
        assert len(back.panels or []) == len(model["panels"])


def test_alert_rules_file_and_payloads() -> None:
    doc = yaml.safe_load(build.ALERTING_FILE.read_text())
    group = doc["groups"][0]
    assert group["folder"] == "ClusterTwin" and group["name"] == alerts.RULE_GROUP
    uids = [r["uid"] for r in group["rules"]]
    assert uids == [r["uid"] for r in alerts.rule_payloads()]
    for rule in alerts.rule_payloads("some-twin"):
        assert rule["folderUID"] == FOLDER_UID and rule["orgID"] == 1
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        flux = [d for d in rule["data"] if d["datasourceUid"] == DATASOURCE_UID]
        assert flux and all('r.twin == "some-twin"' in d["model"]["query"] for d in flux)
        assert all("${" not in d["model"].get("query", "") for d in rule["data"])


def test_cli_build_check_passes_on_fresh_files() -> None:
    result = CliRunner().invoke(main, ["dashboards", "build", "--check"])
    assert result.exit_code == 0, result.output


def test_there_is_no_push_command() -> None:
    """Dashboards reach Grafana by file provisioning only: no command talks to a Grafana API."""
    result = CliRunner().invoke(main, ["dashboards", "--help"])
    assert result.exit_code == 0, result.output
    assert "build" in result.output and "render" in result.output
    assert "push" not in result.output
