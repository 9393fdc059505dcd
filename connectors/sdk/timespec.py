"""One syntax for points in time in connector configs and commands: ``now``, ``now-7d``
(s, m, h, d, w) or ISO 8601 (UTC unless it says otherwise)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_REL = re.compile(r"^now(?:-(\d+(?:\.\d+)?)([smhdw]))?$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now: int) -> int:
    """``now``, ``now-7d`` (s/m/h/d/w) or an ISO 8601 time -> epoch ms."""
    m = _REL.match(text.strip())
    if m:
        return now if m.group(1) is None else now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_duration(text: str) -> int:
    """A length of time in the same units as ``now-7d`` (``90s``, ``6h``, ``1d``) -> ms."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: a number and s, m, h, d or w (6h, 1d)")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])
