"""Check dashboard JSON and alert rules against Grafana's published schema, with no Grafana.

The schema is the one the pinned ``grafana-foundation-sdk`` PyPI package ships (Grafana 10.1
kinds): Python types generated from Grafana's own schema definitions, one class per object,
with ``to_json`` naming each JSON key and type annotations giving its type. The package holds
no JSON Schema or OpenAPI document, and its ``from_json`` decoders are lenient (an unknown key
is dropped, a wrong type passes through), so this module reads the same types strictly:

* every key must be one the type declares (``to_json``), with a value of its annotated type
  (``bool`` is not an ``int``, a ``Literal`` or enum allows only its values);
* every key the type always writes (the ones ``to_json`` emits unconditionally) must be there;
* unions are decided as the SDK decides them (a panel whose ``type`` is ``row`` is a
  ``RowPanel``), queries by their datasource type, expressions by their ``type``;
* a panel's ``type`` must be a panel plugin the SDK has a schema for, and its ``options`` and
  ``fieldConfig.defaults.custom`` are checked against that plugin's ``Options`` and
  ``FieldConfig``.

What the SDK has no schema for is named here rather than passed silently: the ``alertlist``
panel (a core Grafana panel without a published options schema), the InfluxDB query model
(checked against ClusterTwin's own :class:`dashboards.flux.FluxQuery`), and the envelope of a
file-provisioning alerting document (``apiVersion``, a group's ``orgId``/``name``/``folder``/
``interval``), which follows Grafana's file-provisioning documentation; the rules inside it
are checked against the SDK's ``alerting.Rule``.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import alerting, dashboard, expr

import dashboards.flux  # noqa: F401  (registers the InfluxDB query type with the SDK runtime)

cogplugins.register_default_plugins()

SDK_GRAFANA_VERSION = "10.1"
# Core panels of Grafana that the SDK ships no options schema for: type -> why it is allowed.
SCHEMALESS_PANELS: Mapping[str, str] = {
    "alertlist": "Grafana's core alert list panel; no published options schema (SDK 10.1)",
}
EXPR_DATASOURCE = "__expr__"
_EXPR_TYPES: tuple[type, ...] = tuple(
    c
    for c in vars(expr).values()
    if isinstance(c, type)
    and issubclass(c, cogvariants.Dataquery)
    and c.__module__ == expr.__name__
)


@dataclass(frozen=True)
class Shape:
    """One schema type as JSON sees it: its keys, their types, and which are always there."""

    cls: type
    hints: Mapping[str, Any]  # JSON key -> annotated type
    required: frozenset[str]


def _self_attr(node: ast.AST) -> str | None:
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "self"
        ):
            return sub.attr
    return None


@functools.cache
def shape(cls: type) -> Shape:
    """Read a type's JSON keys from its ``to_json`` and their types from its annotations.

    Generated code, so the shape is regular: an initial ``payload`` dict literal holds the keys
    always written, then ``payload["key"] = self.attr`` under ``if ... is not None`` the others.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.to_json)))  # type: ignore[attr-defined]
    annotations = typing.get_type_hints(cls)
    hints: dict[str, Any] = {}
    required: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                attr = _self_attr(value)
                if isinstance(key, ast.Constant) and attr in annotations:
                    hints[str(key.value)] = annotations[attr]
                    required.add(str(key.value))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            attr = _self_attr(node.value)
            if isinstance(target.slice, ast.Constant) and attr in annotations:
                hints[str(target.slice.value)] = annotations[attr]
    if not hints:
        raise TypeError(f"{cls.__name__}: no JSON keys found in to_json")
    return Shape(cls, hints, frozenset(required))


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and hasattr(hint, "to_json") and hasattr(hint, "from_json")


def _scalar(path: str, value: Any, hint: type) -> list[str]:
    if issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        ok = any(value == a and type(value) is type(a) for a in allowed)
        return [] if ok else [f"{path}: {value!r} is not one of {allowed}"]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return [] if ok else [f"{path}: expected {hint.__name__}, got {type(value).__name__}"]


def _union(path: str, value: Any, options: tuple[Any, ...], ctx: Mapping[str, str]) -> list[str]:
    if value is None and type(None) in options:
        return []
    options = tuple(o for o in options if o is not type(None))
    if len(options) == 1:
        return check(path, value, options[0], ctx)
    if isinstance(value, dict) and dashboard.RowPanel in options:
        # the SDK's own decoding: a panel of type "row" is a RowPanel, anything else a Panel
        pick = dashboard.RowPanel if value.get("type") == "row" else dashboard.Panel
        return check(path, value, pick, ctx)
    tries = [check(path, value, option, ctx) for option in options]
    if any(not errors for errors in tries):
        return []
    best = min(tries, key=len)
    names = " | ".join(_name(o) for o in options)
    return [f"{path}: matches none of {names}", *best]


def _dataquery(path: str, value: Any, ctx: Mapping[str, str]) -> list[str]:
    """A query target: its type comes from its datasource (or the panel's), as the SDK does."""
    if not isinstance(value, dict):
        return [f"{path}: expected a query object, got {type(value).__name__}"]
    ds_type = (value.get("datasource") or {}).get("type") or ctx.get("datasource", "")
    if ds_type == EXPR_DATASOURCE:
        by_type = {shape(c).hints["type"].__args__[0]: c for c in _EXPR_TYPES}
        kind = value.get("type")
        if kind not in by_type:
            return [f"{path}.type: {kind!r} is not an expression type ({sorted(by_type)})"]
        return _model(path, value, by_type[kind], ctx)
    config = cogruntime.Runtime().dataquery_variants.get(ds_type)
    cls = getattr(getattr(config, "from_json_hook", None), "__self__", None)
    if cls is None:
        return [f"{path}: no schema for a query of datasource type {ds_type!r}"]
    return _model(path, value, cls, ctx)


def _panel_plugin(path: str, panel: Mapping[str, Any]) -> list[str]:
    """A panel's ``options`` and custom field config against its plugin's own schema."""
    kind = panel.get("type")
    if kind in SCHEMALESS_PANELS:
        return []
    config = cogruntime.panelcfg_config(str(kind))
    if config is None:
        known = sorted(cogruntime.Runtime().panelcfg_variants)
        return [f"{path}.type: unknown panel type {kind!r} (known: {', '.join(known)})"]
    errors: list[str] = []
    options_cls = getattr(config.options_from_json_hook, "__self__", None)
    if "options" in panel:
        if options_cls is None:
            errors.append(f"{path}.options: panel type {kind!r} takes no options")
        else:
            errors += check(f"{path}.options", panel["options"], options_cls, {})
    custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")
    custom_cls = getattr(config.field_config_from_json_hook, "__self__", None)
    if custom_cls is not None and custom is not None:
        errors += check(f"{path}.fieldConfig.defaults.custom", custom, custom_cls, {})
    elif custom:
        errors.append(f"{path}.fieldConfig.defaults.custom: {kind!r} has no custom field config")
    return errors


def _model(path: str, value: Any, cls: type, ctx: Mapping[str, str]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected {cls.__name__} (an object), got {type(value).__name__}"]
    spec = shape(cls)
    errors = [f"{path}: missing required {k!r}" for k in sorted(spec.required - set(value))]
    unknown = sorted(set(value) - set(spec.hints))
    errors += [f"{path}: unknown key {k!r} for {cls.__name__}" for k in unknown]
    if cls is dashboard.Panel:
        ds = value.get("datasource")
        ctx = {**ctx, "datasource": str(ds.get("type", ""))} if isinstance(ds, dict) else ctx
        errors += _panel_plugin(path, value)
    for key, item in value.items():
        if key in spec.hints:
            errors += check(f"{path}.{key}", item, spec.hints[key], ctx)
    return errors


def check(path: str, value: Any, hint: Any, ctx: Mapping[str, str] | None = None) -> list[str]:
    """Every way ``value`` departs from the schema type ``hint``; empty when it conforms."""
    ctx = ctx or {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return []
    if origin is typing.Union or origin is types.UnionType:
        return _union(path, value, args, ctx)
    if value is None:
        return [f"{path}: null where {_name(hint)} is required"]
    if origin is typing.Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
        return [] if ok else [f"{path}: {value!r} is not one of {list(args)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in check(f"{path}[{i}]", v, args[0], ctx)]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        errors = [e for k in value for e in check(f"{path}<key>", k, args[0], ctx)]
        return errors + [e for k, v in value.items() for e in check(f"{path}.{k}", v, args[1], ctx)]
    if hint is cogvariants.Dataquery:
        return _dataquery(path, value, ctx)
    if _is_model(hint):
        return _model(path, value, hint, ctx)
    if isinstance(hint, type):
        return _scalar(path, value, hint)
    raise TypeError(f"{path}: no rule for schema type {hint!r}")


def validate_dashboard(model: Mapping[str, Any]) -> list[str]:
    """A dashboard JSON model against the SDK's ``dashboard.Dashboard``; empty when valid."""
    return check("dashboard", dict(model), dashboard.Dashboard)


_FILE_TOP: Mapping[str, Any] = {"apiVersion": int, "groups": list[dict[str, Any]]}
_FILE_GROUP: Mapping[str, Any] = {
    "orgId": int,
    "name": str,
    "folder": str,
    "interval": str,
    "rules": list[dict[str, Any]],
}
# the rule's place, which a file rule takes from its group and must not state itself
_GROUP_GIVEN = ("folderUID", "ruleGroup", "orgID")


def _envelope(path: str, value: Any, keys: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object, got {type(value).__name__}"]
    errors = [f"{path}: missing required {k!r}" for k in keys if k not in value]
    errors += [f"{path}: unknown key {k!r}" for k in value if k not in keys]
    known = {k: v for k, v in value.items() if k in keys}
    return errors + [e for k, v in known.items() for e in check(f"{path}.{k}", v, keys[k])]


def _file_rule(path: str, rule: Any, group: Mapping[str, Any]) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{path}: expected a rule object, got {type(rule).__name__}"]
    errors = [f"{path}: {k!r} comes from the group in a file" for k in _GROUP_GIVEN if k in rule]
    placed = {
        **rule,
        "folderUID": group.get("folder"),
        "ruleGroup": group.get("name"),
        "orgID": group.get("orgId"),
    }
    errors += check(path, placed, alerting.Rule)
    refs = [q.get("refId") for q in rule.get("data") or [] if isinstance(q, dict)]
    if rule.get("condition") not in refs:
        errors.append(f"{path}.condition: {rule.get('condition')!r} is none of the refIds {refs}")
    if len(set(refs)) != len(refs):
        errors.append(f"{path}.data: refIds repeat: {refs}")
    return errors


def validate_alerting_file(doc: Any) -> list[str]:
    """A Grafana alerting file-provisioning document; each rule against ``alerting.Rule``."""
    errors = _envelope("file", doc, _FILE_TOP)
    if errors:
        return errors
    if doc["apiVersion"] != 1:
        errors.append(f"file.apiVersion: {doc['apiVersion']!r}, Grafana reads version 1")
    for g, group in enumerate(doc["groups"]):
        path = f"file.groups[{g}]"
        group_errors = _envelope(path, group, _FILE_GROUP)
        errors += group_errors
        if not group_errors:
            for r, rule in enumerate(group["rules"]):
                errors += _file_rule(f"{path}.rules[{r}]", rule, group)
    return errors
