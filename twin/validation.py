"""How a configuration problem is located and reported, written once for every YAML file the
twin reads (clusters, factor libraries, levers).

The project's rule is that a bad file fails with ``<file>: <path.to.item>: <why>`` naming the
item, and lists every problem rather than the first. pydantic locates field errors itself; a
model validator that checks relations between items (a meter id used twice, a target laxer
than an earlier one) raises :class:`Problems` instead, each problem with its own location
below the model being validated, so the report points at the offending item, not at the
model that happened to hold the check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

__all__ = ["Loc", "Problems", "describe_loc", "error_lines"]

Loc = tuple[int | str, ...]


class Problems(ValueError):
    """Every problem one validator found, each as (location below the model, why)."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems: tuple[tuple[Loc, str], ...] = tuple(problems)
        super().__init__("\n".join(f"{_plain(loc)}: {why}" for loc, why in self.problems))


def _plain(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "<root>"


def describe_loc(raw: Any, loc: Loc) -> str:
    """pydantic loc -> ``sites[0](dunkirk-steel).assets[1].unit``, with ids where known."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f"({node['id']})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "<root>"


def _located(e: ValidationError) -> Iterable[tuple[Loc, str, dict[str, Any]]]:
    for err in e.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            for sub, why in cause.problems:
                yield loc + sub, why, dict(err)
        else:  # a multi-line message (another file's problems) stays one problem a line
            for why in err["msg"].removeprefix("Value error, ").splitlines() or [""]:
                yield loc, why, dict(err)


def error_lines(e: ValidationError, raw: Any, origin: str) -> list[str]:
    """Every error of ``e`` as ``origin: path(id): why``, in pydantic's order."""
    lines = []
    for loc, msg, err in _located(e):
        if err["type"] == "enum":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"{origin}: {describe_loc(raw, loc)}: {msg}")
    return lines
