"""Readings to tCO2e, vectorised, with provenance.

At construction the calculator resolves, once per meter, every factor the meter needs and
folds it into a coefficient matrix ``coef[scope, meter]`` (tCO2e per canonical unit). A batch of
readings is then one fancy-index and one multiply, whatever the batch size.

Scopes (rows of the matrix and of every result):
    0 ``scope1``           direct emissions (combustion, process CO2; negative for carbon
                           that left: fuel or CO2 exported)
    1 ``scope2_location``  bought electricity/steam/heat/shore power at the grid/boiler factor
    2 ``scope2_market``    the same at the supplier (contract) factor
    3 ``scope3_upstream``  production of hydrogen brought in, by route

Exports are not netted against scope 2 (``BELOW_ZERO_UNPRICED``). A negative quantity (only a
meter declared ``bidirectional`` reads one) of an IMPORT meter is electricity, steam, heat or
hydrogen sold back: it carries no scope 2 (location or market) and no scope 3 upstream, because
the GHG Protocol Scope 2 Guidance (2015, ch. 5 and 7.1) counts scope 2 on the gross energy
purchased and does not let sold or exported energy be deducted (a sale is at most reported
apart). Each reading is judged on its own: a reading is the meter's net flow over its interval,
so an interval that imported 3 MWh and exported 5 MWh reads -2 MWh and carries 0 of scope 2.
Its energy (MWh) stays signed: the MWh figures are the net flow the meter measured, so energy
totals and completeness add up as metered, while a site's scope 2 is priced on imports only.
Scope 1 of a negative reading keeps its sign (a fuel sent back is carbon that left unburned).
The rule lives here, as ``below_zero_coef`` (the coefficients a reading below zero is priced
at) and ``unpriced_below_zero`` (the figures it does not carry, handed to the worker's index).
Gases (rows of ``gas_coef`` and of ``Totals.gas_sites`` / ``gas_cluster``): scope 1 by gas,
in tonnes of the gas, with the same signs and attribution as scope 1 (``GASES``):
    0 ``co2``           fossil CO2, t
    1 ``ch4``           CH4, t (its GWP is fossil or non-fossil by the factor: ``gas_gwp``)
    2 ``n2o``           N2O, t
    3 ``co2e_other``    what a factor gives only as CO2e (cluster-declared factors), tCO2e
    4 ``co2_biogenic``  biogenic CO2 (biomass), t: a MEMO item, never in scope 1
    5 ``co2_captured``  CO2 sent to capture/storage (process CO2 exported to a store), t
``scope1 == sum(gas_coef * gas_gwp)`` meter by meter (net scope 1: gross less captured);
gross scope 1 is ``scope1 + co2_captured``. Scope 2 and 3 factors are CO2e only.

Transfers between sites of one cluster (metered at the sender, ``to_site`` = receiver):
  * fuels and process CO2 MOVE: the receiver is attributed the scope-1 tonnes (it burns the
    gas / holds the CO2), the sender is credited the same tonnes. Net zero at cluster level.
  * electricity, steam, heat, shore power and hydrogen are INTERNAL: the receiver reports
    them as scope 2 (or 3 for hydrogen) in its site view; at cluster level they are eliminated
    because the sender's scope 1 already holds those tonnes.
So ``sum(site views) - eliminations == cluster view``, and no tonne is counted twice.

A fuel transferred between sites is valued with the COMBUSTING (receiving) site's table:
coal a steelworks (Table 2.3, manufacturing) sends to a power plant is burned under Table 2.2
(energy industries), because CH4 and N2O depend on the combustion technology, which is the
receiver's. The sender is credited the same tonnes, so the cluster total does not depend on
the rule; the site views do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from twin.carriers import CANONICAL_UNIT, Carrier, HydrogenRoute
from twin.contract import GASES as _CONTRACT_GASES
from twin.factors import (
    Factor,
    FactorError,
    FactorLibrary,
    GwpSet,
    default_library,
    load_gwp_sets,
)
from twin.model import FUELS, SECONDARY, Boundary, Cluster, FactorDecl, Meter

__all__ = [
    "BELOW_ZERO_UNPRICED",
    "GASES",
    "SCOPES",
    "EmissionsBatch",
    "EmissionsCalculator",
    "Provenance",
    "Totals",
    "library_for",
]

SCOPES: tuple[str, ...] = ("scope1", "scope2_location", "scope2_market", "scope3_upstream")
S1, S2L, S2M, S3 = 0, 1, 2, 3
#: the scopes a reading below zero of a bidirectional import meter does not carry: exported
#: energy is no deduction from scope 2 (or from the upstream scope 3 of what was bought)
BELOW_ZERO_UNPRICED: tuple[int, ...] = (S2L, S2M, S3)
_BELOW_ZERO_NOTE = (
    "a reading below zero (exported) carries none: scope 2 counts gross purchases "
    "(GHG Protocol Scope 2 Guidance)"
)
GASES: tuple[str, ...] = _CONTRACT_GASES  # named once, in twin.contract
G_CO2, G_CH4, G_N2O, G_OTHER, G_BIO, G_CAPTURED = range(len(GASES))

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Provenance:
    """Why a meter's readings produce the tonnes they do, for one scope."""

    meter_id: str
    scope: str  # one of SCOPES
    factor_id: str
    factor_version: str
    factor_source: str
    gwp: str
    tco2e_per_unit: float  # signed; per canonical unit
    canonical_unit: str
    attributed_site: str
    note: str = ""


class EmissionsBatch(NamedTuple):
    """Per-reading tCO2e, aligned with the input arrays. ``matrix`` is (4, n) in SCOPES order;
    the named fields are views of its rows."""

    matrix: FloatArray

    @property
    def scope1(self) -> FloatArray:
        return self.matrix[S1]

    @property
    def scope2_location(self) -> FloatArray:
        return self.matrix[S2L]

    @property
    def scope2_market(self) -> FloatArray:
        return self.matrix[S2M]

    @property
    def scope3_upstream(self) -> FloatArray:
        return self.matrix[S3]


@dataclass(frozen=True)
class Totals:
    """Aggregated tCO2e: ``sites`` is (4, n_sites) in SCOPES order, ``cluster`` is (4,), and
    ``eliminations`` (4,) is what the site views hold that the cluster view does not."""

    site_ids: tuple[str, ...]
    sites: FloatArray
    cluster: FloatArray
    eliminations: FloatArray
    # scope 1 by gas (GASES order): (len(GASES), n_sites) and (len(GASES),); empty when the
    # totals were made without them
    gas_sites: FloatArray = field(default_factory=lambda: np.zeros((len(GASES), 0)))
    gas_cluster: FloatArray = field(default_factory=lambda: np.zeros(len(GASES)))

    def site(self, site_id: str) -> dict[str, float]:
        i = self.site_ids.index(site_id)
        return {s: float(v) for s, v in zip(SCOPES, self.sites[:, i], strict=True)}

    def cluster_dict(self) -> dict[str, float]:
        return {s: float(v) for s, v in zip(SCOPES, self.cluster, strict=True)}

    def site_gases(self, site_id: str) -> dict[str, float]:
        """Scope 1 of a site by gas (t of each gas), the biogenic memo and CO2 captured."""
        i = self.site_ids.index(site_id)
        return {g: float(v) for g, v in zip(GASES, self.gas_sites[:, i], strict=True)}

    def cluster_gases(self) -> dict[str, float]:
        return {g: float(v) for g, v in zip(GASES, self.gas_cluster, strict=True)}


@dataclass(frozen=True)
class _Entry:
    scope: int
    value: float
    factor_id: str
    version: str
    source: str
    note: str
    # scope 1 only: (gas row, t per canonical unit, tCO2e per t) making up ``value``
    gases: tuple[tuple[int, float, float], ...] = ()


@dataclass
class _Resolution:
    """The coefficients (and their explanation) shared by every meter of one kind."""

    entries: list[_Entry] = field(default_factory=list)
    internal: bool = False
    moves: bool = False
    unpriced_below_zero: bool = False  # BELOW_ZERO_UNPRICED apply to its readings below 0

    def gross_only(self) -> None:
        """Its readings below zero carry none of ``BELOW_ZERO_UNPRICED`` (module docstring);
        the entries say so, for the explanations shown to operators."""
        self.unpriced_below_zero = True
        self.entries = [
            _Entry(
                e.scope,
                e.value,
                e.factor_id,
                e.version,
                e.source,
                (e.note + "; " if e.note else "") + _BELOW_ZERO_NOTE,
                e.gases,
            )
            if e.scope in BELOW_ZERO_UNPRICED
            else e
            for e in self.entries
        ]

    def add(
        self,
        scope: int,
        value: float,
        fid: str,
        version: str,
        source: str,
        note: str,
        gases: tuple[tuple[int, float, float], ...] = (),
    ) -> None:
        self.entries.append(_Entry(scope, value, fid, version, source, note, gases))


def _gas_rows(f: Factor, gwp: GwpSet, sign: float) -> tuple[tuple[int, float, float], ...]:
    """A scope-1 factor split by gas: (row of GASES, t gas per unit, tCO2e per t), signed
    like its scope-1 value, so that the sum of amount x weight is that value. Biogenic CO2
    weighs nothing (a memo line); its methane takes the non-fossil GWP (``GwpSet.co2e``)."""
    rows: list[tuple[int, float, float]] = []
    for gas, amount in f.gases.items():
        a = sign * amount
        if gas == "CO2":
            rows.append((G_BIO, a, 0.0) if f.biogenic else (G_CO2, a, 1.0))
        elif gas == "CH4":
            rows.append((G_CH4, a, gwp.co2e({"CH4": 1.0}, f.biogenic)))
        elif gas == "N2O":
            rows.append((G_N2O, a, gwp.co2e({"N2O": 1.0}, f.biogenic)))
        else:  # CO2e as given, or another gas at its GWP
            rows.append((G_OTHER, a * gwp.co2e({gas: 1.0}, f.biogenic), 1.0))
    return tuple(rows)


def _gross_only(meter: Meter) -> bool:
    """Whether the meter's readings below zero are exports not netted against scope 2/3."""
    return meter.bidirectional and meter.boundary is Boundary.IMPORT


def _decl_to_factor(decl: FactorDecl) -> Factor:
    return Factor(
        id=decl.id,
        kind=decl.kind,
        carrier=decl.carrier,
        region=decl.region,
        year=decl.year,
        version=decl.version,
        source=decl.source,
        gases={"CO2e": decl.tco2e_per_unit},
        valid_from=decl.valid_from,
        valid_to=decl.valid_to,
    )


def library_for(cluster: Cluster, base: FactorLibrary | None = None) -> FactorLibrary:
    """The shipped library plus the cluster's own declared factors (every version; a base
    that already holds them, or pins one of their ids, is given them again harmlessly)."""
    lib = base if base is not None else default_library()
    if not cluster.factors:
        return lib
    return lib.with_factors(_decl_to_factor(d) for d in cluster.factors)


_DEFAULT_TRANSFER_FACTOR = {
    Carrier.STEAM: "steam:natural_gas_boiler",
    Carrier.HEAT: "heat:natural_gas_boiler",
}


class EmissionsCalculator:
    """Precomputed per-meter coefficients for one cluster, one factor library, one GWP set.

    ``year`` selects grid factors (defaults to the cluster's reference year);
    ``grid_overrides`` maps a zone to a tCO2e/MWh value replacing the library's (what-if).
    """

    def __init__(
        self,
        cluster: Cluster,
        factors: FactorLibrary | None = None,
        gwp: str = "AR6",
        year: int | None = None,
        grid_overrides: dict[str, float] | None = None,
    ) -> None:
        gwp_sets = load_gwp_sets()
        if gwp not in gwp_sets:
            raise FactorError(f"unknown GWP set {gwp!r} (known: {', '.join(gwp_sets)})")
        self.cluster = cluster
        self.gwp = gwp
        self._gwp = gwp_sets[gwp]
        self.year = year if year is not None else cluster.reference_year
        self.library = library_for(cluster, factors)
        self._grid_overrides = dict(grid_overrides or {})

        index = cluster.meter_index()
        self.meter_ids: tuple[str, ...] = tuple(index)
        self.site_ids: tuple[str, ...] = tuple(cluster.site_ids)
        site_pos = {s: i for i, s in enumerate(self.site_ids)}
        n = len(self.meter_ids)
        self.n_meters = n
        self.n_sites = len(self.site_ids)

        self.scale: FloatArray = np.array([r.scale for r in index.values()], dtype=np.float64)
        self.carrier_of: tuple[Carrier, ...] = tuple(r.carrier for r in index.values())
        # Meters of the same kind (carrier, boundary, combustion table, grid zone, factor
        # ids, route) resolve identically: resolve each kind once, share the result.
        self._kinds: list[_Resolution] = []
        kind_pos: dict[tuple[object, ...], int] = {}
        self._kind_of: list[int] = [0] * n
        site_of = [0] * n
        credit = [0] * n
        category_of = {s.id: s.combustion_category for s in cluster.sites}
        for i, (site, _asset, meter) in enumerate(cluster.meters()):
            zone = site.grid_zone or cluster.grid_zone
            # the combusting site's table (module docstring): the receiver's for a transfer
            category = category_of.get(meter.to_site or site.id, site.combustion_category)
            key = (
                meter.carrier,
                meter.boundary,
                category,
                zone,
                meter.factor_id,
                meter.supplier_factor_id,
                meter.route,
                _gross_only(meter),
            )
            k = kind_pos.get(key)
            if k is None:
                try:
                    res = self._resolve(meter, category, zone)
                except FactorError as e:
                    raise FactorError(f"meter {meter.id!r} (site {site.id!r}): {e}") from None
                if _gross_only(meter):
                    res.gross_only()
                k = kind_pos[key] = len(self._kinds)
                self._kinds.append(res)
            self._kind_of[i] = k
            site_of[i] = credit[i] = site_pos[site.id]
            if meter.to_site is not None:
                site_of[i] = site_pos[meter.to_site]
        kinds = np.asarray(self._kind_of, dtype=np.intp)
        kind_coef = np.zeros((4, max(len(self._kinds), 1)), dtype=np.float64)
        for k, res in enumerate(self._kinds):
            for entry in res.entries:
                kind_coef[entry.scope, k] = entry.value
        kind_gas = np.zeros((len(GASES), max(len(self._kinds), 1)), dtype=np.float64)
        kind_gwp = np.zeros_like(kind_gas)
        kind_gwp[G_CO2] = kind_gwp[G_OTHER] = 1.0
        kind_gwp[G_CAPTURED] = -1.0
        for k, res in enumerate(self._kinds):
            for entry in res.entries:
                for row, amount, weight in entry.gases:
                    kind_gas[row, k] += amount
                    kind_gwp[row, k] = weight
        # coef[scope, meter]: tCO2e per canonical unit. internal: energy transfers eliminated
        # at cluster level. moves: fuel/CO2 transfers (receiver +, sender -).
        self.coef: FloatArray = kind_coef[:, kinds]
        # gas_coef[gas, meter]: t of each gas per canonical unit (GASES); gas_gwp: tCO2e per
        # t of it for that meter, so coef[S1] == (gas_coef * gas_gwp).sum(axis=0)
        self.gas_coef: FloatArray = kind_gas[:, kinds]
        self.gas_gwp: FloatArray = kind_gwp[:, kinds]
        # every figure per canonical unit at once (scopes, then gases): one gather per batch
        self.figure_coef: FloatArray = np.vstack([self.coef, self.gas_coef])
        # the same for a reading below zero (module docstring: exports are not netted)
        gross_only = np.array([r.unpriced_below_zero for r in self._kinds], dtype=bool)[kinds]
        self.below_zero_coef: FloatArray = self.figure_coef.copy()
        rows = np.asarray(BELOW_ZERO_UNPRICED, dtype=np.intp)
        self.below_zero_coef[np.ix_(rows, np.flatnonzero(gross_only))] = 0.0
        self._any_gross_only = bool(gross_only.any())
        self.internal: npt.NDArray[np.bool_] = np.array(
            [r.internal for r in self._kinds], dtype=bool
        )[kinds]
        self.moves: npt.NDArray[np.bool_] = np.array([r.moves for r in self._kinds], dtype=bool)[
            kinds
        ]
        self.site_of: IntArray = np.asarray(site_of, dtype=np.intp)  # attributed site
        self.credit_site: IntArray = np.asarray(credit, dtype=np.intp)  # sender (moves)

        # Rows that count at cluster level: not internal energy, not moves (which net to zero).
        self.counts_in_cluster: npt.NDArray[np.bool_] = ~(self.internal | self.moves)

    @property
    def gwp_set(self) -> GwpSet:
        return self._gwp

    def unpriced_below_zero(self, meter: int) -> tuple[int, ...]:
        """The scopes (rows of SCOPES) a reading of ``meter`` below zero does not carry: what
        the worker's index is told, so both paths apply the module docstring's one rule."""
        if not self._kinds[self._kind_of[meter]].unpriced_below_zero:
            return ()
        return BELOW_ZERO_UNPRICED

    def _coef_for(self, idx: IntArray, q: FloatArray) -> FloatArray:
        """Per reading, the figures per canonical unit: ``below_zero_coef`` for a reading
        below zero, ``figure_coef`` otherwise."""
        coef: FloatArray = self.figure_coef[:, idx]
        if self._any_gross_only:
            below = q < 0
            if below.any():
                coef = np.where(below, self.below_zero_coef[:, idx], coef)
        return coef

    # ---- resolution (once per kind of meter) --------------------------------------------

    def grid_factor(self, zone: str) -> tuple[float, str, str, str]:
        """(tCO2e/MWh, factor id, version, source) of the location-based grid factor."""
        if zone in self._grid_overrides:
            return self._grid_overrides[zone], f"override:grid:{zone}", "scenario", "what-if lever"
        f = self.library.grid(zone, self.year)
        return f.co2e(self._gwp), f.id, f.version, f.source

    def _factor(self, factor_id: str, carrier: Carrier) -> Factor:
        f = self.library.get(factor_id)
        if f.carrier is not carrier:
            raise FactorError(
                f"factor {factor_id!r} is for {f.carrier.value}, meter measures {carrier.value}"
            )
        return f

    def _resolve(self, meter: Meter, category: str, zone: str) -> _Resolution:
        c, b = meter.carrier, meter.boundary
        res = _Resolution()

        if c in FUELS or c is Carrier.PROCESS_CO2:
            if b is Boundary.ONSITE_GENERATION and c in FUELS:
                return res  # its carbon was counted on the primary fuel
            if b is Boundary.IMPORT and c is Carrier.PROCESS_CO2:
                return res  # CO2 received for use/storage: whoever emitted it accounts for it
            if meter.factor_id:
                f = self._factor(meter.factor_id, c)
            elif c is Carrier.PROCESS_CO2:
                f = self.library.get("process:co2")
            else:
                f = self.library.combustion(c, category)
            value = f.co2e(self._gwp)
            note = ""
            gases = _gas_rows(f, self._gwp, 1.0)
            if b is Boundary.EXPORT:
                value, note = -value, "carbon leaving the cluster unburned/stored: credited"
                gases = _gas_rows(f, self._gwp, -1.0)
                if c is Carrier.PROCESS_CO2:  # to a store: captured, apart from gross scope 1
                    gases = tuple((G_CAPTURED, -a * w, -1.0) for _, a, w in gases)
            elif b is Boundary.TRANSFER:
                res.moves = True
                note = "moved to the receiving site, credited to the sender"
            res.add(S1, value, f.id, f.version, f.source, note, gases)
            return res

        if c in SECONDARY:
            if b not in (Boundary.IMPORT, Boundary.TRANSFER):
                return res  # generated on site or exported: its fuel carries the emissions
            res.internal = b is Boundary.TRANSFER
            if meter.factor_id:
                f = self._factor(meter.factor_id, c)
                loc = (f.co2e(self._gwp), f.id, f.version, f.source)
            elif c in (Carrier.ELECTRICITY, Carrier.SHORE_POWER):
                loc = self.grid_factor(zone)
            else:
                f = self.library.get(_DEFAULT_TRANSFER_FACTOR[c])
                loc = (f.co2e(self._gwp), f.id, f.version, f.source)
            note = "internal transfer: eliminated at cluster level" if res.internal else ""
            res.add(S2L, *loc, note)
            if meter.supplier_factor_id:
                f = self._factor(meter.supplier_factor_id, c)
                res.add(S2M, f.co2e(self._gwp), f.id, f.version, f.source, note)
            else:
                fallback = (note + "; " if note else "") + (
                    "no supplier factor: location-based used (GHG Protocol Scope 2 hierarchy)"
                )
                res.add(S2M, *loc, fallback)
            return res

        if c is Carrier.HYDROGEN:
            if b not in (Boundary.IMPORT, Boundary.TRANSFER):
                return res
            res.internal = b is Boundary.TRANSFER
            if meter.factor_id:
                f = self._factor(meter.factor_id, c)
            else:
                f = self.library.hydrogen(meter.route or HydrogenRoute.SMR)
            value = f.co2e(self._gwp)
            note = "internal transfer: eliminated at cluster level" if res.internal else ""
            if f.electricity_per_unit:
                grid, gid, gver, _ = self.grid_factor(zone)
                value += f.electricity_per_unit * grid
                note = (note + "; " if note else "") + (
                    f"{f.electricity_per_unit:.4f} MWh_e/MWh_H2 x {gid} (v{gver})"
                )
            if meter.route is None and not meter.factor_id:
                note = (note + "; " if note else "") + "no route given: assumed smr (unabated)"
            res.add(S3, value, f.id, f.version, f.source, note)
            return res

        raise AssertionError(f"unhandled carrier {c}")  # pragma: no cover

    # ---- hot path -----------------------------------------------------------------------

    def compute(
        self, meter_idx: npt.ArrayLike, quantity_canonical: npt.ArrayLike
    ) -> EmissionsBatch:
        """tCO2e per reading for readings already in canonical units (MWh, or t for CO2)."""
        idx = np.asarray(meter_idx, dtype=np.intp)
        q = np.asarray(quantity_canonical, dtype=np.float64)
        return EmissionsBatch(self._coef_for(idx, q)[: len(SCOPES)] * q)

    def compute_in_meter_units(
        self, meter_idx: npt.ArrayLike, quantity: npt.ArrayLike
    ) -> EmissionsBatch:
        """Same, for quantities in each meter's declared unit."""
        idx = np.asarray(meter_idx, dtype=np.intp)
        q = np.asarray(quantity, dtype=np.float64) * self.scale[idx]
        return EmissionsBatch(self._coef_for(idx, q)[: len(SCOPES)] * q)

    def compute_figures(
        self, meter_idx: npt.ArrayLike, quantity_canonical: npt.ArrayLike
    ) -> FloatArray:
        """Every figure per reading, (len(SCOPES) + len(GASES), n): tCO2e per scope, then
        scope 1 by gas (``GASES``); one gather and one multiply (two gathers when a batch
        has a reading below zero of a bidirectional import meter)."""
        idx = np.asarray(meter_idx, dtype=np.intp)
        q = np.asarray(quantity_canonical, dtype=np.float64)
        out: FloatArray = self._coef_for(idx, q) * q
        return out

    def _by_site(self, idx: IntArray, m: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(site views, cluster view, eliminations) of any rows of per-reading figures."""
        ns = self.n_sites
        sites = np.empty((m.shape[0], ns), dtype=np.float64)
        attributed = self.site_of[idx]
        moves = self.moves[idx]
        credit = self.credit_site[idx][moves]
        for s in range(m.shape[0]):
            sites[s] = np.bincount(attributed, weights=m[s], minlength=ns)
            if credit.size:
                sites[s] -= np.bincount(credit, weights=m[s][moves], minlength=ns)
        keep = self.counts_in_cluster[idx]
        internal = self.internal[idx]
        return sites, m[:, keep].sum(axis=1), m[:, internal].sum(axis=1)

    def aggregate(
        self, meter_idx: npt.ArrayLike, batch: EmissionsBatch, gases: FloatArray | None = None
    ) -> Totals:
        """Site views, cluster view and eliminations for a batch (np.bincount, no Python loop);
        with ``gases`` (the gas rows of ``compute_figures``), scope 1 by gas as well."""
        idx = np.asarray(meter_idx, dtype=np.intp)
        sites, cluster, eliminations = self._by_site(idx, batch.matrix)
        if gases is None:
            return Totals(self.site_ids, sites, cluster, eliminations)
        gas_sites, gas_cluster, _ = self._by_site(idx, gases)
        return Totals(self.site_ids, sites, cluster, eliminations, gas_sites, gas_cluster)

    def annual(self, quantities: npt.ArrayLike | None = None) -> Totals:
        """Totals for one quantity per meter, in meter units (default: each meter's declared
        ``annual_quantity``, missing ones count as zero)."""
        if quantities is None:
            q = np.array(
                [m.annual_quantity or 0.0 for _, _, m in self.cluster.meters()], dtype=np.float64
            )
        else:
            q = np.asarray(quantities, dtype=np.float64)
        idx = np.arange(self.n_meters, dtype=np.intp)
        m = self.compute_figures(idx, q * self.scale)
        return self.aggregate(idx, EmissionsBatch(m[: len(SCOPES)]), m[len(SCOPES) :])

    # ---- explanation --------------------------------------------------------------------

    def provenance(self, meter: str | int) -> list[Provenance]:
        """Every factor behind a meter's tonnes (empty: the meter carries no emission)."""
        i = meter if isinstance(meter, int) else self.position(meter)
        attributed = self.site_ids[int(self.site_of[i])]
        unit = CANONICAL_UNIT[self.carrier_of[i]]
        return [
            Provenance(
                meter_id=self.meter_ids[i],
                scope=SCOPES[e.scope],
                factor_id=e.factor_id,
                factor_version=e.version,
                factor_source=e.source,
                gwp=self.gwp,
                tco2e_per_unit=e.value,
                canonical_unit=unit,
                attributed_site=attributed,
                note=e.note,
            )
            for e in self._kinds[self._kind_of[i]].entries
        ]

    def position(self, meter_id: str) -> int:
        """The meter's index in this calculator's arrays (== MeterRef.position)."""
        ref = self.cluster.meter_index().get(meter_id)
        if ref is None:
            raise KeyError(f"no meter {meter_id!r} in cluster {self.cluster.id!r}")
        return ref.position

    def factor_refs(self) -> dict[str, list[str]]:
        """Per scope, per meter: ``"<factor id>@<version>"`` ('' where the meter has none), to
        tag output rows so every stored figure names the factor that made it."""
        per_kind: dict[str, list[str]] = {s: [] for s in SCOPES}
        for res in self._kinds:
            have = {e.scope: f"{e.factor_id}@{e.version}" for e in res.entries}
            for i, s in enumerate(SCOPES):
                per_kind[s].append(have.get(i, ""))
        return {s: [refs[k] for k in self._kind_of] for s, refs in per_kind.items()}

    def factor_explanations(self) -> list[tuple[tuple[str, str, str, str, str, float], ...]]:
        """Per meter, each factor behind its figures as (scope, id, version, source, note,
        tCO2e per canonical unit): what an operator is shown when a live figure is asked to
        explain itself."""
        per_kind = [
            tuple(
                (SCOPES[e.scope], e.factor_id, e.version, e.source, e.note, float(e.value))
                for e in r.entries
            )
            for r in self._kinds
        ]
        return [per_kind[k] for k in self._kind_of]

    def factor_ids(self) -> list[str]:
        """Per meter, the ids of the factors it uses ('' for none), for tagging output rows."""
        per_kind = [",".join(e.factor_id for e in r.entries) for r in self._kinds]
        return [per_kind[k] for k in self._kind_of]
