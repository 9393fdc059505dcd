"""The meter index the worker validates and prices readings against, as numpy vectors.

The twin (``twin/``) owns the cluster model and the emission factors; the worker only needs,
per meter, "which site, which carrier, which units are accepted and how many MWh and tCO2e one
unit is worth". Flattening that into arrays once at start-up is what lets a whole batch of
readings be priced with one gather and one multiply instead of a Python call per reading.

Figures are accumulated as integers in nano-units (1e-9 MWh, 1e-9 t): a window total is then
the same whatever order or batching the readings arrived in, so a replayed or re-batched stream
reproduces InfluxDB points bit for bit and an offline recomputation matches exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.contract import DEFAULT_MAX_VALUE
from twin.contract import GASES as GASES
from twin.contract import QUALITIES as QUALITIES  # the stream's modules name them from here
from twin.contract import SCOPES as SCOPES

# Quantum of every accumulated figure: 1e-9 MWh (1 mWh) and 1e-9 tCO2e (1 mg).
NANO = 1_000_000_000
#: Emission figures per unit: tCO2e per scope, then scope 1 by gas in t (GASES). A spec or a
#: compiled file written before the gases were kept gives the scopes only: its gases are 0.
EMISSION_FIGURES = len(SCOPES) + len(GASES)


def full_figures(factors: Sequence[float]) -> tuple[float, ...]:
    """Per-unit emission figures padded to ``EMISSION_FIGURES`` (missing gases: 0)."""
    values = tuple(float(x) for x in factors)
    return values + (0.0,) * (EMISSION_FIGURES - len(values))


class CatalogError(ValueError):
    """The meter index cannot be built; the message names the meter and the field."""


@dataclass(frozen=True)
class MeterSpec:
    """What the worker needs to know about one meter.

    ``units`` maps each accepted unit to (MWh per unit, (tCO2e per unit for each of SCOPES)):
    a gas meter in m3 is worth so many MWh and so many tonnes of scope 1 per m3; a process-CO2
    meter in t is worth 0 MWh and 1 t of scope 1 per t. The scope factors may be followed by
    the t of each gas of ``GASES`` per unit (scope 1 by gas); without them the gases are 0.
    """

    meter: str
    site: str
    cluster: str
    carrier: str
    units: Mapping[str, tuple[float, tuple[float, ...]]]
    allow_negative: bool = False
    max_value: float = DEFAULT_MAX_VALUE
    provenance: str = ""
    # (MWh, tCO2e per scope) per canonical unit of the carrier: lets any unit the twin can
    # convert (kWh, GJ, Nm3, t...) be accepted, not only the meter's declared one
    canonical: tuple[float, tuple[float, ...]] | None = None
    # Each factor behind the figures, (scope, id, version, source, note, tCO2e per canonical
    # unit): the answer a live view gives when a figure is asked where it came from.
    factors: tuple[tuple[str, str, str, str, str, float], ...] = ()
    #: the calorific basis of the meter's energy units ("net" or "gross"): a reading in
    #: another energy unit than the declared one is converted on the same basis
    calorific_basis: str = "net"
    # the key its site windows are kept under: its carrier, or for a transfer between sites
    # ``streams.transfers.transfer_key`` (whose tonnes they are is decided from it)
    window_key: str = ""
    #: the scopes (of SCOPES) a reading below zero does not carry: the twin's rule that an
    #: import meter's exports are not netted against scope 2 (``twin.emissions``), set by
    #: ``streams.twinlink`` from ``EmissionsCalculator.unpriced_below_zero``
    unpriced_below_zero: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.units:
            raise CatalogError(f"meter {self.meter!r}: no accepted unit")
        unknown = [s for s in self.unpriced_below_zero if s not in SCOPES]
        if unknown:
            raise CatalogError(
                f"meter {self.meter!r}: unpriced_below_zero: unknown scope(s) "
                f"{', '.join(unknown)} (known: {', '.join(SCOPES)})"
            )
        for unit, (mwh, factors) in self.units.items():
            if len(factors) not in (len(SCOPES), EMISSION_FIGURES):
                raise CatalogError(
                    f"meter {self.meter!r} unit {unit!r}: need {len(SCOPES)} scope factors "
                    f"({', '.join(SCOPES)}), optionally followed by {len(GASES)} gas factors "
                    f"({', '.join(GASES)}), got {len(factors)}"
                )
            if not all(np.isfinite([mwh, *factors])):
                raise CatalogError(f"meter {self.meter!r} unit {unit!r}: non-finite factor")


@dataclass
class MeterVectors:
    """All meters of the clusters a worker serves, indexed for vectorised lookups."""

    specs: list[MeterSpec]
    #: (carrier, unit, calorific basis) -> canonical units per unit, None when not convertible
    unit_scale: Callable[..., float | None] | None = None
    # (meter index) -> primary unit; (meter, unit) -> row in the factor matrix
    index: dict[str, int] = field(init=False)
    sites: dict[tuple[str, str], list[int]] = field(init=False)
    clusters: dict[str, list[str]] = field(init=False)
    primary_unit: list[str] = field(init=False)
    carrier: list[str] = field(init=False)
    site_of: list[str] = field(init=False)
    cluster_of: list[str] = field(init=False)
    # factor matrix: row = meter index for the primary unit; extra units get rows after
    factors: np.ndarray = field(init=False)
    unit_rows: dict[tuple[int, str], int] = field(init=False)
    allow_negative: np.ndarray = field(init=False)
    # the factor matrix a reading below zero is priced with (MeterSpec.unpriced_below_zero
    # zeroed), row for row; used only when some meter has such scopes
    below_zero: np.ndarray = field(init=False)
    is_transfer: np.ndarray = field(init=False)
    max_value: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.index = {}
        self.sites = {}
        self.clusters = {}
        cluster_of_site: dict[str, str] = {}
        for i, spec in enumerate(self.specs):
            if spec.meter in self.index:
                raise CatalogError(f"duplicate meter id {spec.meter!r}")
            # Readings are keyed by site id (the Kafka key, the worker's state), so two
            # clusters' sites of one id would be summed into one site's windows.
            first = cluster_of_site.setdefault(spec.site, spec.cluster)
            if first != spec.cluster:
                raise CatalogError(
                    f"site id {spec.site!r} is in clusters {first!r} and {spec.cluster!r}: "
                    "site ids must be unique across the clusters one worker serves "
                    "(readings and the twin's state are keyed by site id)"
                )
            self.index[spec.meter] = i
            self.sites.setdefault((spec.cluster, spec.site), []).append(i)
            sites = self.clusters.setdefault(spec.cluster, [])
            if spec.site not in sites:
                sites.append(spec.site)
        self.primary_unit = [next(iter(s.units)) for s in self.specs]
        self.carrier = [s.carrier for s in self.specs]
        self.site_of = [s.site for s in self.specs]
        self.cluster_of = [s.cluster for s in self.specs]
        rows: list[list[float]] = []
        for spec, unit in zip(self.specs, self.primary_unit, strict=True):
            mwh, f = spec.units[unit]
            rows.append([mwh, *full_figures(f)])
        self.unit_rows = {}
        for i, spec in enumerate(self.specs):
            for unit, (mwh, f) in spec.units.items():
                if unit == self.primary_unit[i]:
                    self.unit_rows[(i, unit)] = i
                else:
                    self.unit_rows[(i, unit)] = len(rows)
                    rows.append([mwh, *full_figures(f)])
        self.factors = np.array(rows, dtype=np.float64).reshape(-1, 1 + EMISSION_FIGURES)
        self.below_zero = self.factors.copy()
        for (i, _unit), row in self.unit_rows.items():
            if self.specs[i].unpriced_below_zero:
                self.below_zero[row] *= self._below_zero_mask(i)
        self._gross_only = any(s.unpriced_below_zero for s in self.specs)
        self.allow_negative = np.array([s.allow_negative for s in self.specs], dtype=bool)
        # meters of a transfer between sites (their site windows are kept apart)
        self.is_transfer = np.array([bool(s.window_key) for s in self.specs], dtype=bool)
        self.max_value = np.array([s.max_value for s in self.specs], dtype=np.float64)

    def _below_zero_mask(self, meter: int) -> np.ndarray:
        """1 for each column a reading of ``meter`` below zero carries, 0 for the others."""
        mask = np.ones(1 + EMISSION_FIGURES, dtype=np.float64)
        for scope in self.specs[meter].unpriced_below_zero:
            mask[1 + SCOPES.index(scope)] = 0.0
        return mask

    def __len__(self) -> int:
        return len(self.specs)

    def resolve_unit(self, meter: int, unit: str) -> int | None:
        """Factor-matrix row for a reading of ``meter`` in ``unit``; None if not accepted.

        Units other than the declared one are converted through the twin (``unit_scale``)
        once, then cached as a new row: the rare path, never per reading.
        """
        row = self.unit_rows.get((meter, unit))
        if row is not None:
            return row
        spec = self.specs[meter]
        if self.unit_scale is None or spec.canonical is None:
            return None
        if spec.calorific_basis == "net":
            scale = self.unit_scale(spec.carrier, unit)
        else:
            scale = self.unit_scale(spec.carrier, unit, spec.calorific_basis)
        if scale is None:
            return None
        mwh, factors = spec.canonical
        new = np.array(
            [[mwh * scale, *(f * scale for f in full_figures(factors))]], dtype=np.float64
        )
        self.factors = np.vstack([self.factors, new])
        self.below_zero = np.vstack([self.below_zero, new * self._below_zero_mask(meter)])
        row = self.factors.shape[0] - 1
        self.unit_rows[(meter, unit)] = row
        return row

    def has_cluster(self, cluster: str) -> bool:
        return cluster in self.clusters

    def has_site(self, cluster: str, site: str) -> bool:
        return (cluster, site) in self.sites

    # -- persistence: a compiled index a deployment can ship next to the worker ----------
    def to_json(self) -> str:
        return json.dumps(
            [
                {
                    "meter": s.meter,
                    "site": s.site,
                    "cluster": s.cluster,
                    "carrier": s.carrier,
                    "units": {u: [m, list(f)] for u, (m, f) in s.units.items()},
                    "allow_negative": s.allow_negative,
                    "max_value": s.max_value,
                    "provenance": s.provenance,
                    "factors": [list(f) for f in s.factors],
                    "calorific_basis": s.calorific_basis,
                    "window_key": s.window_key,
                    "unpriced_below_zero": list(s.unpriced_below_zero),
                }
                for s in self.specs
            ],
            indent=1,
        )

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> MeterVectors:
        specs = []
        for n, rec in enumerate(records):
            try:
                units = {
                    str(u): (float(m), _scope_factors(f))
                    for u, (m, f) in dict(rec["units"]).items()
                }
                specs.append(
                    MeterSpec(
                        meter=str(rec["meter"]),
                        site=str(rec["site"]),
                        cluster=str(rec["cluster"]),
                        carrier=str(rec["carrier"]),
                        units=units,
                        allow_negative=bool(rec.get("allow_negative", False)),
                        max_value=float(rec.get("max_value", DEFAULT_MAX_VALUE)),
                        provenance=str(rec.get("provenance", "")),
                        calorific_basis=str(rec.get("calorific_basis", "net")),
                        factors=tuple(
                            (str(a), str(b), str(c), str(d), str(e), float(v))
                            for a, b, c, d, e, v in rec.get("factors", ())
                        ),
                        window_key=str(rec.get("window_key", "")),
                        unpriced_below_zero=tuple(
                            str(x) for x in rec.get("unpriced_below_zero", ())
                        ),
                    )
                )
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise CatalogError(f"meter record #{n}: {exc!r}") from exc
        return cls(specs)

    @classmethod
    def from_file(cls, path: Path) -> MeterVectors:
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{path}: cannot read the meter catalog: {exc}") from exc
        if not isinstance(records, list):
            raise CatalogError(f"{path}: expected a JSON list of meter records")
        return cls.from_records(records)

    def merged(self, other: MeterVectors) -> MeterVectors:
        return MeterVectors([*self.specs, *other.specs])

    # -- vectorised pricing ---------------------------------------------------------------
    def price(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Integer nano-figures, shape (n, 1 + EMISSION_FIGURES): MWh, tCO2e per scope, then
        t of each gas (scope 1 by gas, the biogenic memo, CO2 captured).

        Each reading is rounded to the quantum on its own (round half to even), so sums are
        exact and order-independent; ``offline_price`` below is the same rule reading by
        reading, for tests and audits. A reading below zero is priced with ``below_zero``
        (an import meter's export carries no scope 2: ``MeterSpec.unpriced_below_zero``).
        """
        factors = self.factors[rows]
        if self._gross_only:
            below = values < 0
            if below.any():
                factors = np.where(below[:, None], self.below_zero[rows], factors)
        out: np.ndarray = np.rint(values[:, None] * factors * NANO).astype(np.int64)
        return out


def _scope_factors(f: Sequence[float]) -> tuple[float, ...]:
    """Factors per scope, then per gas; files written before scope 3 was tracked have three,
    before the gases were kept no gases."""
    values = [float(x) for x in f]
    if len(values) > EMISSION_FIGURES:
        raise CatalogError(f"{len(values)} factors, at most {EMISSION_FIGURES}")
    if len(values) <= len(SCOPES):
        return tuple(values + [0.0] * (len(SCOPES) - len(values)))
    return full_figures(values)


def offline_price(catalog: MeterVectors, meter: str, unit: str, value: float) -> list[int]:
    """One reading priced the slow, obvious way; must equal ``MeterVectors.price``."""
    i = catalog.index[meter]
    spec = catalog.specs[i]
    mwh, factors = spec.units[unit]
    figures = list(full_figures(factors))
    if value < 0:  # an export is no deduction from the scopes it does not carry
        for scope in spec.unpriced_below_zero:
            figures[SCOPES.index(scope)] = 0.0
    return [round(value * f * NANO) for f in (mwh, *figures)]
