"""Metering helpers: cumulative counters and rates become interval quantities, across restarts.

Most plant meters report either a cumulative register (kWh, t or Nm3 since commissioning) or
an instantaneous rate (kW, t/h, Nm3/h). The twin wants quantities per interval (readings/2:
``start``, ``ts``, value). Getting that right is domain work every connector would otherwise
redo, and get wrong on restart; so it is done once here.

The rules (per meter; stated once, here):

- **Baseline**: the first snapshot of a meter only sets the baseline; it publishes nothing.
- **Repeat**: a snapshot with the baseline's ``ts`` is the same reading seen again (a gateway
  cache, a duplicated message): nothing, silently. An unchanged total at a newer ``ts`` is a
  zero interval: the meter says nothing flowed.
- **Out of order**: a snapshot older than the baseline is refused (rule ``counter.out_of_order``);
  its interval was already covered by a newer one.
- **Rollover**: a decrease is a rollover only when the meter declares its modulus
  (``rollover_at``, e.g. ``2**32 * scale`` for a uint32 register) and the wrapped increase
  ``rollover_at - previous + total`` is under half the modulus and plausible: registers wrap
  at their width, and a wrap shows as a small total just after a large one.
- **Reset**: any other decrease (meter replaced, register cleared) is refused (rule
  ``counter.reset``) and the new total becomes the baseline. Not counted as "increase since
  zero" (what Prometheus' ``increase`` assumes): a replacement meter rarely starts at zero,
  and its register would arrive as one huge interval. One interval is lost, visibly, in the
  dead-letter topic, for the site to correct. A reset shows only as a decrease: one whose
  new count has climbed past the old baseline by the next snapshot that arrives looks like
  consumption to any rule (poll well within the time a replacement takes to get there).
- **Plausibility**: with ``max_increase_per_h`` set, a step whose increase over its duration
  exceeds it is refused (rule ``counter.implausible``) and the snapshot becomes the baseline,
  so a real jump (a register preset) is not refused for ever.
- **Span**: an interval longer than the contract's 24 h is refused (``counter.span``), and the
  snapshot becomes the baseline: the stream could not place it.
- **Rates** (:meth:`Metering.rate`): the interval between two rate samples gets the
  trapezoid rule, ``(r0 + r1) / 2 * duration`` (default; right for a load that changes
  smoothly between polls), or the left rule, ``r0 * duration`` (right for a demand register
  holding its value until the next one). The quantity's unit comes from ``twin.carriers``.

Restarts (the state store): :class:`StateStore` keeps the baselines in one JSON file beside
the connector's disk buffer (``buffer.dir``), written atomically (temporary file, fsync,
rename, fsync of the directory). Saving the baseline *before* its reading is in the disk
buffer would lose the interval on a crash in between; saving it *after* would double it
(the old baseline would bridge the same time again). So :meth:`Metering.checkpoint` writes the
baselines **together with the intervals they imply, not yet confirmed** (an outbox), in one
atomic write, before the readings are handed on; the runner calls the connector's
``readings_durable`` once everything handed on is in the disk buffer, and
:meth:`Metering.durable` clears the outbox. After a crash, :meth:`Metering.restored` gives the
outbox back to be sent again: the very same readings (meter, ``ts``, ``start``, value), which
the stream worker counts once however often they arrive. No crash point loses or doubles an
interval. The disk buffer survives a power cut only with ``buffer.fsync: true``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from connectors.sdk.base import BadSample, ConnectorConfig, Sample
from connectors.sdk.runner import buffer_dir
from twin.carriers import rate_quantity_unit
from twin.contract import MAX_INTERVAL_MS

__all__ = [
    "CounterSpec",
    "Interval",
    "Metering",
    "Refusal",
    "StateError",
    "StateStore",
]

_STATE_VERSION = 1
_MS_PER_H = 3_600_000


class StateError(RuntimeError):
    """The state file cannot be used (another instance's, or unreadable); names the file."""


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """What a meter's cumulative register declares.

    ``rollover_at``: the modulus the register wraps at, in the published unit (after
    scaling); None: it never wraps (float registers, 64-bit counters).
    ``max_increase_per_h``: the most the meter can count in an hour (its rated flow or power,
    with margin); None: no plausibility limit.
    """

    rollover_at: float | None = None
    max_increase_per_h: float | None = None


@dataclass(frozen=True, slots=True)
class Interval:
    """A quantity measured over ``[start, ts]`` (epoch ms): one readings/2 reading."""

    meter: str
    start: int
    ts: int
    value: float
    unit: str | None = None

    def sample(self, raw: bytes | None = None, unit: str | None = None) -> Sample:
        """The SDK sample of this interval; ``unit`` overrides (counters carry none)."""
        unit = unit if unit is not None else self.unit
        return Sample(self.meter, self.ts, self.value, unit, raw=raw, start=self.start)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A snapshot that published nothing, and why; ``rule`` is one of the module's rules."""

    meter: str
    ts: int
    rule: str
    reason: str

    def bad_sample(self, raw: bytes | None = None) -> BadSample:
        """The dead-letter record of this refusal (the reason names the rule)."""
        raw = raw if raw is not None else orjson.dumps({"meter": self.meter, "ts": self.ts})
        return BadSample(f"{self.rule}: {self.reason}", raw, self.meter)


class StateStore:
    """One connector instance's state, in ``<buffer.dir>/connector-state.json``.

    Beside the disk buffer because that is where the readings the state implies live: the
    two are kept, moved and deleted together. The file names the instance
    (``connector/name``); loading another instance's file is refused (StateError).
    """

    FILE = "connector-state.json"

    def __init__(self, path: Path, source: str) -> None:
        self.path = Path(path)
        self.source = source

    @classmethod
    def for_connector(cls, config: ConnectorConfig) -> StateStore:
        return cls(buffer_dir(config) / cls.FILE, config.source_name())

    def load(self) -> dict[str, Any]:
        """The saved state ({} when there is none yet)."""
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StateError(f"connector state {self.path}: unreadable: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
            raise StateError(f"connector state {self.path}: not a version {_STATE_VERSION} file")
        if doc.get("source") != self.source:
            raise StateError(
                f"connector state {self.path} belongs to {doc.get('source')!r}, not "
                f"{self.source!r}: give each instance its own buffer.dir"
            )
        state = doc.get("state")
        return dict(state) if isinstance(state, dict) else {}

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the file atomically: a crash leaves the old state or the new, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps({"version": _STATE_VERSION, "source": self.source, "state": state})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)


def _interval_from(d: Mapping[str, Any]) -> Interval:
    return Interval(
        str(d["meter"]), int(d["start"]), int(d["ts"]), float(d["value"]), d.get("unit")
    )


def _interval_to(i: Interval) -> dict[str, Any]:
    return {"meter": i.meter, "start": i.start, "ts": i.ts, "value": i.value, "unit": i.unit}


class Metering:
    """Per-meter baselines of one connector instance, and the intervals they publish.

    Use: per poll, ``counter``/``rate`` for each snapshot, then ``checkpoint()`` before the
    poll's samples are returned; call ``durable()`` from the connector's
    ``readings_durable``; send ``restored()`` once after start (see the module docstring).
    Without a store it is a plain in-memory tracker (tests, backfill).
    """

    def __init__(
        self,
        store: StateStore | None = None,
        *,
        counters: Mapping[str, CounterSpec] | None = None,
        default: CounterSpec | None = None,
        rate_rule: Literal["trapezoid", "left"] = "trapezoid",
    ) -> None:
        self.store = store
        self.specs = dict(counters or {})
        self.default = default or CounterSpec()
        self.rate_rule = rate_rule
        state = store.load() if store is not None else {}
        # meter -> [ts, total]; meter -> [ts, rate, unit]
        self._counters: dict[str, list[Any]] = dict(state.get("counters", {}))
        self._rates: dict[str, list[Any]] = dict(state.get("rates", {}))
        self._outbox: list[Interval] = [_interval_from(d) for d in state.get("outbox", [])]
        self._restored: list[Interval] = list(self._outbox)
        self._dirty = False
        self._checkpoint: dict[str, Any] = self.state()
        self._confirmable = 0

    # -- counters -------------------------------------------------------------------

    def counter(self, meter: str, ts: int, total: float) -> Interval | Refusal | None:
        """One cumulative snapshot: the interval it closes, a refusal, or None (baseline,
        repeat)."""
        if not math.isfinite(total) or total < 0:
            return Refusal(meter, ts, "counter.invalid", f"total {total!r} is not a count")
        base = self._counters.get(meter)
        if base is None:
            self._counters[meter] = [ts, total]
            self._dirty = True
            return None
        prev_ts, prev = int(base[0]), float(base[1])
        if ts == prev_ts:
            if total == prev:
                return None
            return Refusal(
                meter, ts, "counter.conflict", f"two totals at ts {ts}: {prev} then {total}"
            )
        if ts < prev_ts:
            return Refusal(
                meter, ts, "counter.out_of_order", f"snapshot at {ts} older than baseline {prev_ts}"
            )
        increase = self._increase(meter, prev_ts, prev, ts, total)
        self._counters[meter] = [ts, total]
        self._dirty = True
        if isinstance(increase, Refusal):
            return increase
        return self._publish(Interval(meter, prev_ts, ts, increase))

    def _increase(
        self, meter: str, prev_ts: int, prev: float, ts: int, total: float
    ) -> Refusal | float:
        """The increase from (prev_ts, prev) to (ts, total), or why it is refused."""
        spec = self.specs.get(meter, self.default)
        if ts - prev_ts > MAX_INTERVAL_MS:
            return Refusal(
                meter,
                ts,
                "counter.span",
                f"{(ts - prev_ts) / _MS_PER_H:.1f} h since the "
                "baseline is longer than the 24 h an interval may span; new baseline",
            )
        hours = (ts - prev_ts) / _MS_PER_H
        limit = None if spec.max_increase_per_h is None else spec.max_increase_per_h * hours
        increase = total - prev
        if increase < 0:
            mod = spec.rollover_at
            wrapped = None if mod is None else mod - prev + total
            plausible = limit is None or (wrapped is not None and wrapped <= limit)
            if mod is None or wrapped is None or not (0 <= wrapped < mod / 2) or not plausible:
                return Refusal(
                    meter,
                    ts,
                    "counter.reset",
                    f"counter went back from {prev} to {total} "
                    f"(meter reset or replaced; rollover_at={mod}); new baseline",
                )
            increase = wrapped
        if limit is not None and increase > limit:
            return Refusal(
                meter,
                ts,
                "counter.implausible",
                f"increase {increase} in {hours:.4f} h is over "
                f"max_increase_per_h={spec.max_increase_per_h}; new baseline",
            )
        return increase

    # -- rates ----------------------------------------------------------------------

    def rate(self, meter: str, ts: int, rate: float, unit: str) -> Interval | Refusal | None:
        """One rate sample (kW, t/h, Nm3/h ...): the quantity since the previous sample, in
        the unit ``twin.carriers.rate_quantity_unit`` names, or a refusal, or None (first
        sample, repeat)."""
        if not math.isfinite(rate):
            return Refusal(meter, ts, "rate.invalid", f"rate {rate!r} is not a number")
        qunit, per_hour = rate_quantity_unit(unit)  # UnitError: not a rate
        prev = self._rates.get(meter)
        if prev is not None and ts <= int(prev[0]):
            if ts == int(prev[0]):
                return None
            return Refusal(
                meter, ts, "rate.out_of_order", f"sample at {ts} older than the last, {prev[0]}"
            )
        self._rates[meter] = [ts, rate, unit]
        self._dirty = True
        if prev is None:
            return None
        prev_ts, prev_rate, prev_unit = int(prev[0]), float(prev[1]), str(prev[2])
        if ts - prev_ts > MAX_INTERVAL_MS:
            return Refusal(meter, ts, "rate.span", "over 24 h since the last sample; restarted")
        prev_qunit, prev_per_hour = rate_quantity_unit(prev_unit)
        if prev_qunit != qunit:
            return Refusal(meter, ts, "rate.unit", f"unit changed from {prev_unit} to {unit}")
        r0, r1 = prev_rate * prev_per_hour, rate * per_hour  # both in qunit per hour
        mean = r0 if self.rate_rule == "left" else (r0 + r1) / 2
        value = mean * (ts - prev_ts) / _MS_PER_H
        return self._publish(Interval(meter, prev_ts, ts, value, qunit))

    # -- persistence ----------------------------------------------------------------

    def _publish(self, interval: Interval) -> Interval:
        if self.store is not None:
            self._outbox.append(interval)
        return interval

    def state(self) -> dict[str, Any]:
        """Baselines and outbox now, JSON-ready (what ``checkpoint`` writes)."""
        return {
            "counters": {m: list(v) for m, v in self._counters.items()},
            "rates": {m: list(v) for m, v in self._rates.items()},
            "outbox": [_interval_to(i) for i in self._outbox],
        }

    def checkpoint(self) -> None:
        """Save the baselines with the intervals not yet confirmed durable. Call it right
        before handing this poll's readings on, with no ``await`` in between: ``durable``
        confirms exactly what was checkpointed, and nothing after."""
        self._checkpoint = self.state()
        self._confirmable = len(self._outbox)
        if self.store is not None and self._dirty:
            self.store.save(self._checkpoint)
            self._dirty = False

    def durable(self) -> None:
        """What was handed on up to the last ``checkpoint`` is in the disk buffer: forget
        it. The file keeps that checkpoint's baselines (a poll in progress, between its
        ``counter`` calls and its ``checkpoint``, is not confirmed by this)."""
        if self.store is None or not self._confirmable:
            return
        del self._outbox[: self._confirmable]
        self._confirmable = 0
        self.store.save({**self._checkpoint, "outbox": []})

    def restored(self) -> list[Interval]:
        """The intervals a previous process saved but could not confirm: send them again
        (once; later calls give [])."""
        out, self._restored = self._restored, []
        return out
