"""The committed dashboards and alert rules conform to Grafana's published schema.

The schema is grafana-foundation-sdk's (Grafana 10.1 kinds), read strictly by
``dashboards.grafana_schema``. Each committed file must pass, and deliberately broken copies of
them must fail with an error that names the broken place: a validator that accepts everything
would pass the first half of this module and none of the second.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import inspect
import json
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grafana_foundation_sdk.models
import pytest
import yaml

from dashboards import build
from dashboards import grafana_schema as gs

JSON_FILES = sorted(build.JSON_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _alerting() -> dict[str, Any]:
    return yaml.safe_load(build.ALERTING_FILE.read_text())


def test_the_schema_is_the_pinned_sdk_for_grafana_10_1() -> None:
    version = importlib.metadata.version("grafana-foundation-sdk")
    assert version.endswith(f"!{gs.SDK_GRAFANA_VERSION}.0"), version
    pyproject = (Path(build.ROOT).parent / "pyproject.toml").read_text()
    assert f'"grafana-foundation-sdk=={version}"' in pyproject


def test_every_sdk_type_is_read_with_all_its_keys() -> None:
    """The strict reader must see every key the SDK's own decoder reads, for every type."""
    count = 0
    for info in pkgutil.iter_modules(grafana_foundation_sdk.models.__path__):
        module = importlib.import_module(f"grafana_foundation_sdk.models.{info.name}")
        for cls in vars(module).values():
            if not (isinstance(cls, type) and cls.__module__ == module.__name__):
                continue
            if not (hasattr(cls, "to_json") and hasattr(cls, "from_json")):
                continue
            decoded = set(re.findall(r'if "(\w+)" in data', inspect.getsource(cls.from_json)))
            assert decoded <= set(gs.shape(cls).hints), (cls.__name__, decoded)
            count += 1
    assert count > 300


def test_there_are_four_dashboard_files() -> None:
    assert {p.stem for p in JSON_FILES} == set(build.dashboard_models())


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.stem)
def test_committed_dashboard_conforms(path: Path) -> None:
    errors = gs.validate_dashboard(_load(path))
    assert errors == []


def test_committed_alert_rules_conform() -> None:
    doc = _alerting()
    assert gs.validate_alerting_file(doc) == []
    assert len(doc["groups"][0]["rules"]) == 3


def test_only_the_alert_list_panel_goes_without_an_options_schema() -> None:
    """The one exemption is used by exactly the panels it names, and nothing else is exempt."""
    types = {p["type"] for path in JSON_FILES for p in _load(path)["panels"]}
    assert set(gs.SCHEMALESS_PANELS) <= types
    schemaless = types & set(gs.SCHEMALESS_PANELS)
    assert schemaless == {"alertlist"}


# -- mutations: each broken copy must be refused, with an error at the broken place ---------

Mutation = Callable[[dict[str, Any]], None]


def _panel(model: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in model["panels"] if p["type"] == kind)


def _set(getter: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Mutation:
    return lambda m: getter(m).__setitem__(key, value)


def _drop(getter: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Mutation:
    return lambda m: getter(m).pop(key)


def _stat(m: dict[str, Any]) -> dict[str, Any]:
    return _panel(m, "stat")


def _series(m: dict[str, Any]) -> dict[str, Any]:
    return _panel(m, "timeseries")


DASHBOARD_MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "grid height as a string": (
        _set(lambda m: _stat(m)["gridPos"], "h", "5"),
        r"gridPos\.h: expected int, got str",
    ),
    "editable as a number": (_set(lambda m: m, "editable", 1), r"editable: expected bool"),
    "unknown panel type": (
        _set(_stat, "type", "fancychart"),
        r"\.type: unknown panel type 'fancychart'",
    ),
    "panel without a type": (_drop(_stat, "type"), r"missing required 'type'"),
    "dashboard without schemaVersion": (
        _drop(lambda m: m, "schemaVersion"),
        r"dashboard: missing required 'schemaVersion'",
    ),
    "unknown dashboard key": (_set(lambda m: m, "colour", "red"), r"unknown key 'colour'"),
    "stat colour mode not in the enum": (
        _set(lambda m: _stat(m)["options"], "colorMode", "rainbow"),
        r"options\.colorMode: 'rainbow' is not one of",
    ),
    "unknown stat option": (
        _set(lambda m: _stat(m)["options"], "sparkles", True),
        r"options: unknown key 'sparkles'",
    ),
    "time series line width as text": (
        _set(lambda m: _series(m)["fieldConfig"]["defaults"]["custom"], "lineWidth", "thick"),
        r"custom\.lineWidth: expected float, got str",
    ),
    "misspelt query key": (
        _set(lambda m: _stat(m)["targets"][0], "querry", "x"),
        r"targets\[0\]: unknown key 'querry'",
    ),
    "query of a datasource type without schema": (
        _set(lambda m: _stat(m)["targets"][0], "datasource", {"type": "mysql", "uid": "x"}),
        r"no schema for a query of datasource type 'mysql'",
    ),
    "variable list not a list": (
        _set(lambda m: m["templating"], "list", {"name": "cluster"}),
        r"templating\.list: expected a list",
    ),
    "row panel with an unknown key": (
        _set(lambda m: _panel(m, "row"), "targets", []),
        r"unknown key 'targets' for RowPanel",
    ),
}


@pytest.mark.parametrize("name", sorted(DASHBOARD_MUTATIONS))
def test_broken_dashboard_is_refused(name: str) -> None:
    mutate, expected = DASHBOARD_MUTATIONS[name]
    model = copy.deepcopy(_load(build.JSON_DIR / "clustertwin-overview.json"))
    mutate(model)
    errors = gs.validate_dashboard(model)
    assert any(re.search(expected, e) for e in errors), errors


def _rule(m: dict[str, Any], i: int = 0) -> dict[str, Any]:
    rule: dict[str, Any] = m["groups"][0]["rules"][i]
    return rule


def _query(ref: str, i: int = 0) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda m: next(q for q in _rule(m, i)["data"] if q["refId"] == ref)


ALERT_MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "no-data state not in the enum": (
        _set(_rule, "noDataState", "Silent"),
        r"noDataState: 'Silent' is not one of",
    ),
    "rule without a title": (_drop(_rule, "title"), r"rules\[0\]: missing required 'title'"),
    "rule without data": (_drop(_rule, "data"), r"missing required 'data'"),
    "unknown rule key": (_set(_rule, "severity", "high"), r"unknown key 'severity' for Rule"),
    "label value not a string": (
        _set(_rule, "labels", {"kind": 3}),
        r"labels\.kind: expected str, got int",
    ),
    "condition names no query": (_set(_rule, "condition", "Z"), r"condition: 'Z' is none of"),
    "threshold evaluator type unknown": (
        lambda m: _query("C")(m)["model"]["conditions"][0]["evaluator"].__setitem__("type", "big"),
        r"evaluator\.type: 'big' is not one of",
    ),
    "reducer unknown": (
        _set(lambda m: _query("B")(m)["model"], "reducer", "average"),
        r"reducer: 'average' is not one of",
    ),
    "expression type unknown": (
        _set(lambda m: _query("B")(m)["model"], "type", "magic"),
        r"'magic' is not an expression type",
    ),
    "relative time range as text": (
        _set(lambda m: _query("A")(m)["relativeTimeRange"], "from", "1h"),
        r"relativeTimeRange\.from: expected int, got str",
    ),
    "math expression missing": (
        _drop(lambda m: _query("C", 1)(m)["model"], "expression"),
        r"missing required 'expression'",
    ),
    "folder stated in the rule": (_set(_rule, "folderUID", "x"), r"comes from the group"),
    "group without a name": (_drop(lambda m: m["groups"][0], "name"), r"missing required 'name'"),
    "file version 2": (_set(lambda m: m, "apiVersion", 2), r"apiVersion: 2"),
}


@pytest.mark.parametrize("name", sorted(ALERT_MUTATIONS))
def test_broken_alert_rule_is_refused(name: str) -> None:
    mutate, expected = ALERT_MUTATIONS[name]
    doc = copy.deepcopy(_alerting())
    mutate(doc)
    errors = gs.validate_alerting_file(doc)
    assert any(re.search(expected, e) for e in errors), errors


def test_build_check_refuses_a_dashboard_that_breaks_the_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`clustertwin dashboards build --check` (CI) runs the same validation on what it builds."""
    broken = copy.deepcopy(build.dashboard_models())
    _stat(broken["clustertwin-overview"])["type"] = "fancychart"
    monkeypatch.setattr(build, "dashboard_models", lambda: broken)
    errors = build.schema_errors()
    assert any("unknown panel type 'fancychart'" in e for e in errors), errors
