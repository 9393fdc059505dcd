"""Provision a Grafana through its HTTP API (grafana-client): folder, datasource, dashboards, rules.

Idempotent by comparison, not by blind overwrite: each object is read back and written only
if it differs, so a second push reports everything ``unchanged`` and leaves Grafana's
version history alone. UIDs and the folder are fixed (see :mod:`dashboards.boards`), so
links and bookmarks survive a re-push, on any Grafana.

The datasource token cannot be read back from Grafana; a short SHA-256 prefix of it is kept in
the datasource's ``jsonData`` so a changed token is noticed and pushed, and an unchanged one
is not rewritten.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards import alerts, build
from dashboards.boards import FOLDER_TITLE, FOLDER_UID
from dashboards.flux import DATASOURCE_TYPE, DATASOURCE_UID

DATASOURCE_NAME = "ClusterTwin InfluxDB"


@dataclass(frozen=True)
class Change:
    kind: str  # folder | datasource | dashboard | alert-rule
    uid: str
    action: str  # created | updated | unchanged


@dataclass(frozen=True)
class InfluxTarget:
    """Where Grafana's datasource must point (as Grafana's server sees InfluxDB)."""

    url: str
    token: str
    org: str
    bucket: str


def connect(url: str, token: str, timeout: float = 30.0) -> GrafanaApi:
    return GrafanaApi.from_url(url=url, credential=token, timeout=timeout)


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def datasource_payload(influx: InfluxTarget) -> dict[str, Any]:
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": influx.url,
        "isDefault": True,
        "jsonData": {
            "version": "Flux",
            "organization": influx.org,
            "defaultBucket": influx.bucket,
            "httpMode": "POST",
            "tlsSkipVerify": False,
            "clustertwinTokenSha256": _fingerprint(influx.token),
        },
        "secureJsonData": {"token": influx.token},
    }


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def ensure_folder(api: GrafanaApi) -> Change:
    try:
        folder = api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        return Change("folder", FOLDER_UID, "created")
    if folder.get("title") != FOLDER_TITLE:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        return Change("folder", FOLDER_UID, "updated")
    return Change("folder", FOLDER_UID, "unchanged")


def ensure_datasource(api: GrafanaApi, influx: InfluxTarget) -> Change:
    wanted = datasource_payload(influx)
    try:
        current = api.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(wanted)
        return Change("datasource", DATASOURCE_UID, "created")
    same = all(current.get(k) == wanted[k] for k in ("name", "type", "access", "url", "isDefault"))
    same = same and all(
        (current.get("jsonData") or {}).get(k) == v for k, v in wanted["jsonData"].items()
    )
    same = same and bool((current.get("secureJsonFields") or {}).get("token"))
    if same:
        return Change("datasource", DATASOURCE_UID, "unchanged")
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, wanted)
    return Change("datasource", DATASOURCE_UID, "updated")


def _comparable_dashboard(model: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model.items() if k not in ("id", "version")}


def ensure_dashboard(api: GrafanaApi, model: dict[str, Any]) -> Change:
    uid = str(model["uid"])
    try:
        current = api.dashboard.get_dashboard(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        current = None
    if current is not None:
        in_folder = (current.get("meta") or {}).get("folderUid") == FOLDER_UID
        if in_folder and _comparable_dashboard(current["dashboard"]) == _comparable_dashboard(
            model
        ):
            return Change("dashboard", uid, "unchanged")
    api.dashboard.update_dashboard(
        {
            "dashboard": {**_comparable_dashboard(model), "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "clustertwin dashboards push",
        }
    )
    return Change("dashboard", uid, "created" if current is None else "updated")


_RULE_KEYS = (
    "title",
    "condition",
    "data",
    "noDataState",
    "execErrState",
    "for",
    "labels",
    "annotations",
    "folderUID",
    "ruleGroup",
)


def _normalise_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out = {k: rule.get(k) for k in _RULE_KEYS}
    out["labels"] = out["labels"] or {}
    out["annotations"] = out["annotations"] or {}
    return out


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    a, b = _normalise_rule(current), _normalise_rule(wanted)
    if {k: v for k, v in a.items() if k != "data"} != {k: v for k, v in b.items() if k != "data"}:
        return False
    if len(a["data"] or []) != len(b["data"] or []):
        return False
    # Grafana adds defaults to each query model (intervalMs, maxDataPoints): compare ours only.
    for have, want in zip(a["data"], b["data"], strict=True):
        if {k: have.get(k) for k in want if k != "model"} != {
            k: v for k, v in want.items() if k != "model"
        }:
            return False
        if any(have.get("model", {}).get(k) != v for k, v in want["model"].items()):
            return False
    return True


def ensure_rule(api: GrafanaApi, rule: dict[str, Any]) -> Change:
    uid = str(rule["uid"])
    try:
        current = api.alertingprovisioning.get_alertrule(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.alertingprovisioning.create_alertrule(rule)
        return Change("alert-rule", uid, "created")
    if _same_rule(current, rule):
        return Change("alert-rule", uid, "unchanged")
    api.alertingprovisioning.update_alertrule(uid, rule)
    return Change("alert-rule", uid, "updated")


def push(api: GrafanaApi, influx: InfluxTarget, twin: str = alerts.DEFAULT_TWIN) -> list[Change]:
    """Bring a Grafana up to date with the dashboards as code; returns what was done."""
    changes = [ensure_folder(api), ensure_datasource(api, influx)]
    for model in build.dashboard_models().values():
        changes.append(ensure_dashboard(api, model))
    for rule in alerts.rule_payloads(twin):
        changes.append(ensure_rule(api, rule))
    return changes


def push_from_settings(settings: Any, twin: str = alerts.DEFAULT_TWIN) -> list[Change]:
    """Push into the Grafana and from the InfluxDB that ``clustertwin.settings`` names.

    For `clustertwin demo`: after ``LocalStack().up(["grafana"])``, one call leaves the
    dashboards provisioned against the local InfluxDB.
    """
    if settings.grafana_token is None or not settings.grafana_token.get_secret_value():
        raise RuntimeError(
            "no Grafana token: set CLUSTERTWIN_GRAFANA_TOKEN or run `clustertwin stack up grafana`"
        )
    influx = InfluxTarget(
        url=settings.influx_url,
        token=settings.require_influx_token(),
        org=settings.influx_org,
        bucket=settings.influx_bucket,
    )
    api = connect(settings.grafana_url, settings.grafana_token.get_secret_value())
    return push(api, influx, twin=twin)
