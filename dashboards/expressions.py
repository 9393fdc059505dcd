"""Evaluate an alert rule's server-side expressions in Python, as Grafana defines them.

No Grafana runs here (its server is AGPL), yet the alert rules must be shown to work on the
pipeline's real data. The rule's datasource queries run on the real InfluxDB (a caller's
``query`` function); the expressions that follow are evaluated here with the documented
semantics of Grafana's ``reduce``, ``threshold`` and ``math`` expressions:

* a query returns series, one per Flux table, labelled by its group key (as Grafana's
  InfluxDB Flux backend labels frames);
* ``reduce`` turns each series into one number with the same labels: ``last``, ``mean``,
  ``sum``, ``min``, ``max``, ``count``, ``median``; in the default strict mode a null or NaN
  point makes the result NaN, an empty series gives NaN (``count`` 0, ``sum`` 0); ``dropNN``
  drops them first, ``replaceNN`` replaces them;
* ``threshold`` is 1 or 0 per number (``gt``, ``lt``, ``within_range`` ...), ``math`` applies
  operators to numbers joined by labels (equal label sets, or one a subset of the other; two
  single numbers always join); any NaN operand gives NaN, except for ``||``/``&&`` short cuts;
* the condition's numbers are the alert instances: 0 is Normal, any other value Alerting;
  no number at all is NoData, which the rule's ``noDataState`` maps (``OK`` -> Normal).

Not modelled: the ``for`` pending period and the state history, classic conditions,
``resample``, SQL expressions, threshold hysteresis, and Grafana's scheduler.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

Labels = tuple[tuple[str, str], ...]


class ExpressionError(ValueError):
    """An expression this evaluator does not model, or one that cannot be evaluated."""


@dataclass(frozen=True)
class Frame:
    """One series a query returned: its labels and its values in time order."""

    labels: Labels
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Number:
    """One labelled number, what ``reduce``, ``threshold`` and ``math`` pass on."""

    labels: Labels
    value: float


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


_REDUCERS: Mapping[str, Callable[[list[float]], float]] = {
    "last": lambda v: v[-1] if v else math.nan,
    "mean": lambda v: sum(v) / len(v) if v else math.nan,
    "sum": lambda v: math.fsum(v),
    "min": lambda v: min(v) if v else math.nan,
    "max": lambda v: max(v) if v else math.nan,
    "count": lambda v: float(len(v)),
    "median": lambda v: statistics.median(v) if v else math.nan,
}


def reduce(
    frames: Sequence[Frame], reducer: str, mode: str = "", replace_with: float | None = None
) -> list[Number]:
    """Each series to one number (Grafana's ``reduce`` expression)."""
    if reducer not in _REDUCERS:
        raise ExpressionError(f"unknown reducer {reducer!r}")
    out: list[Number] = []
    for frame in frames:
        points = frame.values
        good = [float(v) for v in points if v is not None and not math.isnan(v)]
        if mode == "dropNN":
            values = good
        elif mode == "replaceNN":
            if replace_with is None:
                raise ExpressionError("replaceNN needs a replacement value")
            values = [replace_with if v is None or math.isnan(v) else float(v) for v in points]
        elif mode == "":
            if len(good) < len(points) and reducer != "count":
                out.append(Number(frame.labels, math.nan))
                continue
            values = [0.0] * len(points) if reducer == "count" else good
        else:
            raise ExpressionError(f"unknown reduce mode {mode!r}")
        out.append(Number(frame.labels, _REDUCERS[reducer](values)))
    return out


def _compare(test: Callable[[float], bool]) -> Callable[[float], float]:
    return lambda x: math.nan if math.isnan(x) else float(test(x))


def threshold(numbers: Sequence[Number], kind: str, params: Sequence[float]) -> list[Number]:
    """1 where the number meets the evaluator, else 0 (Grafana's ``threshold`` expression)."""
    a = params[0]
    b = params[1] if len(params) > 1 else math.nan
    tests: Mapping[str, Callable[[float], bool]] = {
        "gt": lambda x: x > a,
        "lt": lambda x: x < a,
        "gte": lambda x: x >= a,
        "lte": lambda x: x <= a,
        "eq": lambda x: x == a,
        "ne": lambda x: x != a,
        "within_range": lambda x: a < x < b,
        "outside_range": lambda x: x < a or x > b,
        "within_range_included": lambda x: a <= x <= b,
        "outside_range_included": lambda x: x <= a or x >= b,
    }
    if kind not in tests:
        raise ExpressionError(f"unknown threshold evaluator {kind!r}")
    test = _compare(tests[kind])
    return [Number(n.labels, test(n.value)) for n in numbers]


_BINARY: Mapping[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda x, y: x / y if y else (math.nan if x == 0 else math.copysign(math.inf, x)),
    ast.Mod: math.fmod,
    ast.Pow: math.pow,
    ast.Gt: lambda x, y: float(x > y),
    ast.Lt: lambda x, y: float(x < y),
    ast.GtE: lambda x, y: float(x >= y),
    ast.LtE: lambda x, y: float(x <= y),
    ast.Eq: lambda x, y: float(x == y),
    ast.NotEq: lambda x, y: float(x != y),
}
_REF = re.compile(r"\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)")
Value = float | list[Number]


def _apply(op: type, x: float, y: float) -> float:
    if op is ast.Or and x != 0:
        return 1.0
    if op is ast.And and x == 0:
        return 0.0
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if op in (ast.Or, ast.And):
        return float(y != 0)
    return _BINARY[op](x, y)


def _join(a: list[Number], b: list[Number]) -> list[tuple[Labels, float, float]]:
    """Pairs of numbers whose labels match: equal, or one set within the other."""
    pairs = []
    for x in a:
        for y in b:
            sx, sy = set(x.labels), set(y.labels)
            if sx <= sy or sy <= sx:
                pairs.append((x.labels if len(sx) >= len(sy) else y.labels, x.value, y.value))
    if not pairs and len(a) == 1 and len(b) == 1:
        merged = tuple(sorted({*a[0].labels, *b[0].labels}))
        pairs.append((merged, a[0].value, b[0].value))
    return pairs


def _binary(op: type, left: Value, right: Value) -> Value:
    if isinstance(left, list) and isinstance(right, list):
        return [Number(lab, _apply(op, x, y)) for lab, x, y in _join(left, right)]
    if isinstance(left, list):
        return [Number(n.labels, _apply(op, n.value, float(right))) for n in left]  # type: ignore[arg-type]
    if isinstance(right, list):
        return [Number(n.labels, _apply(op, float(left), n.value)) for n in right]
    return _apply(op, left, right)


def _eval(node: ast.AST, env: Mapping[str, list[Number]]) -> Value:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id.startswith("ref__"):
        ref = node.id.removeprefix("ref__")
        if ref not in env:
            raise ExpressionError(f"${ref} is not a query or expression of the rule")
        return list(env[ref])
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(type(node.op), _eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _BINARY:
        return _binary(type(node.ops[0]), _eval(node.left, env), _eval(node.comparators[0], env))
    if isinstance(node, ast.BoolOp):
        value = _eval(node.values[0], env)
        for other in node.values[1:]:
            value = _binary(type(node.op), value, _eval(other, env))
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _binary(ast.Mult, -1.0, _eval(node.operand, env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "abs":
        inner = _eval(node.args[0], env)
        if isinstance(inner, list):
            return [Number(n.labels, abs(n.value)) for n in inner]
        return abs(inner)
    raise ExpressionError(f"not modelled in a math expression: {ast.unparse(node)}")


def math_expression(expression: str, env: Mapping[str, list[Number]]) -> list[Number]:
    """Grafana's ``math`` expression over numbers (``$RA > 1.1 * $RB``)."""
    text = _REF.sub(lambda m: f"ref__{m.group(1) or m.group(2)}", expression)
    text = text.replace("&&", " and ").replace("||", " or ")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse {expression!r}: {exc}") from exc
    value = _eval(tree.body, env)
    return value if isinstance(value, list) else [Number((), value)]


@dataclass
class RuleEvaluation:
    """What one evaluation of a rule gave: every step's result and each instance's state."""

    frames: dict[str, list[Frame]] = field(default_factory=dict)
    numbers: dict[str, list[Number]] = field(default_factory=dict)
    states: dict[Labels, str] = field(default_factory=dict)


QueryFn = Callable[[str, datetime, datetime], list[Frame]]
_NO_DATA_STATE = {"OK": "Normal", "NoData": "NoData", "Alerting": "Alerting"}


def _expression(model: Mapping[str, Any], result: RuleEvaluation) -> list[Number]:
    kind = model.get("type")
    source = str(model.get("expression", ""))
    if kind == "reduce":
        settings = model.get("settings") or {}
        frames = result.frames.get(source)
        if frames is None:
            raise ExpressionError(f"reduce of {source!r}, which is not a query of the rule")
        mode, replacement = settings.get("mode", ""), settings.get("replaceWithValue")
        return reduce(frames, model["reducer"], mode, replacement)
    if kind == "threshold":
        if any(c.get("unloadEvaluator") for c in model["conditions"]):
            raise ExpressionError("threshold hysteresis (unloadEvaluator) is not modelled")
        evaluator = model["conditions"][0]["evaluator"]
        return threshold(result.numbers[source], evaluator["type"], evaluator["params"])
    if kind == "math":
        return math_expression(source, result.numbers)
    raise ExpressionError(f"expression type {kind!r} is not modelled")


def evaluate_rule(rule: Mapping[str, Any], query: QueryFn, now: datetime) -> RuleEvaluation:
    """Run the rule's queries (``query``) and expressions at ``now``, in the rule's order."""
    result = RuleEvaluation()
    for step in rule["data"]:
        ref, model = step["refId"], step["model"]
        if step["datasourceUid"] == "__expr__":
            result.numbers[ref] = _expression(model, result)
            continue
        span = step["relativeTimeRange"]
        start = now - timedelta(seconds=span["from"])
        stop = now - timedelta(seconds=span["to"])
        result.frames[ref] = query(model["query"], start, stop)
    condition = result.numbers.get(rule["condition"])
    if condition is None:
        raise ExpressionError(f"the condition {rule['condition']!r} is not an expression")
    for number in condition:
        result.states[number.labels] = "Normal" if number.value == 0 else "Alerting"
    if not condition:
        result.states[()] = _NO_DATA_STATE[rule.get("noDataState", "NoData")]
    return result
