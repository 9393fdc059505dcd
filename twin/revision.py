"""A factor revision restates the figures of the readings it covers, from their energy.

A new version of a factor (``twin.factors``: same id, a new version, a ``valid_from``) is
valid from its date until the next version's (or its own ``valid_to``). The readings of the
meters that use the factor, stamped in that period, were priced with the previous version;
their figures are recomputed from their stored energy with the new one, reading by reading,
each rounded to the nano-unit like the live pricing (``round(energy_nano x t per MWh)``,
half to even), so the restated totals are exact integers, independent of order and batching,
and equal to an offline computation. A figure whose coefficient the revision does not change
keeps its stored value. A reading belongs to the period by its own time (an interval
reading: its end), in UTC.

Hydrogen made with grid electricity is restated by a grid revision: its upstream
coefficient folds in the grid factor (``twin.emissions``), so its coefficients at the two
versions differ like a grid meter's.

What is not restated here (named so nobody assumes it): transfers between sites (their site
views split the tonnes between sender and receiver, which a change per site cannot follow),
and process CO2 meters: they measure tonnes of CO2, priced by the identity factor
``process:co2`` (1 t/t, kept for provenance), and store no energy to recompute from, so a
factor revision does not touch them.

The year to date and the windows are restated from the same readings
(``restated_readings``), so they cannot disagree. Plain data in, plain data out: the stream
side reads the stored readings and writes the changes, per site, carrier and year
(``streams.factor_restate``) and per site, carrier and hour (``streams.factor_windows``);
``streams.editions`` reads the current edition back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from twin.carriers import Carrier
from twin.emissions import GASES, SCOPES, EmissionsCalculator
from twin.factors import Factor, FactorError, FactorLibrary
from twin.model import Cluster

__all__ = [
    "MeterRevision",
    "RestatedReading",
    "Revision",
    "SiteRestatement",
    "affected_meters",
    "by_year",
    "restate_readings",
    "restated_readings",
    "revision_of",
]

#: a stored reading's figures: energy (nano-MWh), then each of SCOPES and GASES (nano-t)
NFIG = 1 + len(SCOPES) + len(GASES)


@dataclass(frozen=True)
class Revision:
    """One factor version replacing the previous one over ``[start, stop)`` (stop None:
    open-ended)."""

    factor_id: str
    old: Factor
    new: Factor
    start: date
    stop: date | None

    def covers(self, ts_ms: int) -> bool:
        day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()
        return self.start <= day and (self.stop is None or day < self.stop)


def revision_of(library: FactorLibrary, factor_id: str, version: str | None = None) -> Revision:
    """The revision that ``version`` (default: the newest) of ``factor_id`` makes: it
    replaces the version before it, from its ``valid_from``."""
    versions = library.versions(factor_id)
    chosen = versions[-1] if version is None else None
    for f in versions:
        if f.version == version:
            chosen = f
    if chosen is None:
        known = ", ".join(f.version for f in versions)
        raise FactorError(f"factor {factor_id!r} has no version {version!r} (known: {known})")
    i = versions.index(chosen)
    if i == 0 or chosen.valid_from is None:
        raise FactorError(
            f"factor {factor_id!r} version {chosen.version!r} revises nothing: a revision is a "
            "later version with a valid_from"
        )
    nxt = versions[i + 1].valid_from if i + 1 < len(versions) else None
    stop = (
        min(d for d in (chosen.valid_to, nxt) if d is not None) if chosen.valid_to or nxt else None
    )
    return Revision(factor_id, versions[i - 1], chosen, chosen.valid_from, stop)


@dataclass(frozen=True)
class MeterRevision:
    """A meter the revision changes: its figures per MWh before and after (SCOPES, GASES)."""

    meter: str
    site: str
    carrier: str
    old: tuple[float, ...]
    new: tuple[float, ...]
    # the same for a reading below zero (``twin.emissions``: exports are not netted); None:
    # priced like the others
    old_below_zero: tuple[float, ...] | None = None
    new_below_zero: tuple[float, ...] | None = None


def affected_meters(
    cluster: Cluster, library: FactorLibrary, revision: Revision, gwp: str = "AR6"
) -> dict[str, MeterRevision]:
    """The meters of ``cluster`` whose figures the revision changes (not the excluded kinds
    of the module docstring), with their coefficients at both versions."""
    old = EmissionsCalculator(cluster, library.pinned(revision.old), gwp)
    new = EmissionsCalculator(cluster, library.pinned(revision.new), gwp)
    refs = new.factor_refs()
    prefix = f"{revision.factor_id}@"
    out: dict[str, MeterRevision] = {}
    for i, (site, _asset, meter) in enumerate(cluster.meters()):
        # grid-made hydrogen names its own factor, with the grid factor folded in: its
        # coefficients at both versions say whether the revision changes it
        uses = meter.carrier is Carrier.HYDROGEN or any(
            refs[s][i].startswith(prefix) for s in SCOPES
        )
        if not uses or new.internal[i] or new.moves[i] or meter.carrier is Carrier.PROCESS_CO2:
            continue
        before = tuple(float(x) for x in old.figure_coef[:, i])
        after = tuple(float(x) for x in new.figure_coef[:, i])
        if before != after:
            below = (
                (
                    tuple(float(x) for x in old.below_zero_coef[:, i]),
                    tuple(float(x) for x in new.below_zero_coef[:, i]),
                )
                if new.unpriced_below_zero(i)
                else (None, None)
            )
            out[meter.id] = MeterRevision(
                meter.id, site.id, meter.carrier.value, before, after, *below
            )
    return out


@dataclass
class SiteRestatement:
    """What the revision changes of one site, carrier and year: the figures of the readings
    it covers, before and after (nano-units, ``NFIG`` figures then the reading count)."""

    site: str
    carrier: str
    year: int
    old: list[int] = field(default_factory=lambda: [0] * (NFIG + 1))
    new: list[int] = field(default_factory=lambda: [0] * (NFIG + 1))

    @property
    def readings(self) -> int:
        return self.new[NFIG]

    @property
    def delta(self) -> list[int]:
        return [b - a for a, b in zip(self.old, self.new, strict=True)]

    @property
    def tco2e_changed_nano(self) -> int:
        """The headline's change (scope 1 + scope 2 location), nano-t."""
        d = self.delta
        return d[1] + d[2]


def restated_figures(vec: tuple[int, ...], meter: MeterRevision) -> list[int]:
    """One stored reading's figures at the new version: from its energy where the revision
    changes a coefficient, as stored elsewhere; a reading below zero at the coefficients
    of one (``MeterRevision.new_below_zero``)."""
    old, new = meter.old, meter.new
    if int(vec[0]) < 0 and meter.old_below_zero is not None and meter.new_below_zero is not None:
        old, new = meter.old_below_zero, meter.new_below_zero
    out = [int(vec[0])]
    for k, (a, b) in enumerate(zip(old, new, strict=True)):
        out.append(round(int(vec[0]) * b) if a != b else int(vec[1 + k]))
    return out


@dataclass(frozen=True)
class RestatedReading:
    """One stored reading the revision covers: its figures as stored and at the new
    version (``NFIG`` figures each), with its time and interval start (-1: an instant),
    which say which windows it was added to."""

    meter: MeterRevision
    ts: int
    start: int
    old: tuple[int, ...]
    new: tuple[int, ...]


def restated_readings(
    readings: Iterable[tuple[str, int, tuple[int, ...], int]],
    meters: Mapping[str, MeterRevision],
    revision: Revision,
) -> list[RestatedReading]:
    """The readings (meter, ts ms, figures, interval start) the revision covers, each once
    (a repeat of a meter and time is the same stored point), with their restated figures:
    what both the year to date and the windows are restated from, so they cannot disagree.
    Readings of other meters or outside the period are left alone."""
    out: list[RestatedReading] = []
    seen: set[tuple[str, int]] = set()
    for meter_id, ts, vec, start in readings:
        meter = meters.get(meter_id)
        if meter is None or not revision.covers(ts) or (meter_id, ts) in seen:
            continue
        seen.add((meter_id, ts))
        old = tuple(int(x) for x in vec[:NFIG])
        out.append(RestatedReading(meter, ts, start, old, tuple(restated_figures(old, meter))))
    return out


def by_year(restated: Iterable[RestatedReading]) -> list[SiteRestatement]:
    """Per site, carrier and year (of each reading's own time), the old and new figures."""
    by: dict[tuple[str, str, int], SiteRestatement] = {}
    for r in restated:
        year = datetime.fromtimestamp(r.ts / 1000, tz=UTC).year
        key = (r.meter.site, r.meter.carrier, year)
        acc = by.get(key)
        if acc is None:
            acc = by[key] = SiteRestatement(*key)
        for k in range(NFIG):
            acc.old[k] += r.old[k]
            acc.new[k] += r.new[k]
        acc.old[NFIG] += 1
        acc.new[NFIG] += 1
    return sorted(by.values(), key=lambda r: (r.year, r.site, r.carrier))


def restate_readings(
    readings: Iterable[tuple[str, int, tuple[int, ...]]],
    meters: Mapping[str, MeterRevision],
    revision: Revision,
) -> list[SiteRestatement]:
    """Per site, carrier and year, the stored figures of the readings (meter, ts ms,
    figures) the revision covers and their restated figures (``restated_readings``)."""
    return by_year(restated_readings(((m, t, v, -1) for m, t, v in readings), meters, revision))
