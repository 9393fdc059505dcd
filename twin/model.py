"""The cluster hierarchy: cluster -> sites -> assets -> meters, declared in YAML.

Validation happens here, once, when a cluster is loaded, so the hot path (connectors and
stream processors) can trust every meter id, carrier and unit it looks up in
:meth:`Cluster.meter_index`. A bad file fails with ``<file>: <path.to.field>: <why>``, one line
per problem (see :mod:`twin.validation`).

Transfers between sites: a material carrier (a fuel, hydrogen, process CO2) may not go round:
a cycle of transfers of one such carrier (A sends gas to B and B to A, or A -> B -> C -> A) is
refused, because the substance cannot return to the site it left within one accounting
period; the usual cause is one flow declared at both ends, which moves its tonnes twice. A
transfer is metered once, at the sender. Exchanges of different carriers (blast-furnace gas to
the power plant and its electricity back, as in Dunkirk) and energy carriers both ways
(electricity, steam, heat: steam networks and private wires run both ways between sites with
generation) are industrial symbiosis and accepted.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from twin.carriers import CalorificBasis, Carrier, HydrogenRoute, UnitError, scale_to_canonical
from twin.factors import default_library, period_problem, revision_problem
from twin.gapfill import FillMethod, GapFill, inherited
from twin.targets import TargetPlan
from twin.validation import Loc, Problems, error_lines
from twin.yaml_loader import load_yaml

__all__ = [
    "Asset",
    "Boundary",
    "Cluster",
    "ClusterFileError",
    "FactorDecl",
    "Meter",
    "MeterRef",
    "Site",
    "Source",
    "available_clusters",
    "default_scope",
    "load_cluster",
    "parse_cluster",
]

_ID = r"^[a-z0-9][a-z0-9_.\-]*$"
_ID_RE = re.compile(_ID)


class Boundary(StrEnum):
    """Where the metered flow crosses the site boundary.

    import: bought from outside the cluster (fuel burned, electricity/steam/hydrogen bought).
    export: sent out of the cluster (energy sold, or captured CO2 shipped to storage).
    onsite_generation: produced and used inside the site (a CHP's electricity, gross process CO2).
    transfer: sent to another site of the same cluster (``to_site``); metered at the sender.
    """

    IMPORT = "import"
    EXPORT = "export"
    ONSITE_GENERATION = "onsite_generation"
    TRANSFER = "transfer"


FUELS: frozenset[Carrier] = frozenset(
    {
        Carrier.NATURAL_GAS,
        Carrier.COAL,
        Carrier.COKING_COAL,
        Carrier.COKE,
        Carrier.FUEL_OIL,
        Carrier.DIESEL,
        Carrier.GASOLINE,
        Carrier.LPG,
        Carrier.NAPHTHA,
        Carrier.PETROLEUM_COKE,
        Carrier.REFINERY_GAS,
        Carrier.BLAST_FURNACE_GAS,
        Carrier.COKE_OVEN_GAS,
        Carrier.BIOMASS,
    }
)
# Secondary energy: its emissions happen where it is produced (scope 2 for the buyer).
SECONDARY: frozenset[Carrier] = frozenset(
    {Carrier.ELECTRICITY, Carrier.STEAM, Carrier.HEAT, Carrier.SHORE_POWER}
)

# Carriers that are a substance (not energy): a transfer moves it, so it cannot come back.
MATERIAL: frozenset[Carrier] = FUELS | {Carrier.HYDROGEN, Carrier.PROCESS_CO2}

ScopeNo = Literal[1, 2, 3]


def default_scope(carrier: Carrier, boundary: Boundary) -> ScopeNo | None:
    """The GHG Protocol scope a meter's emissions land in; None when it carries no emission.

    Fuel and process-CO2 flows are scope 1 (exports/transfers of them are scope 1 credits for
    the carbon that left); bought electricity, steam, heat and shore power are scope 2 for the
    receiver; hydrogen bought in is scope 3 (upstream production). Energy generated on site or
    exported carries nothing of its own: its fuel was metered where it was burned.
    """
    if carrier in FUELS:
        return None if boundary is Boundary.ONSITE_GENERATION else 1
    if carrier is Carrier.PROCESS_CO2:
        return None if boundary is Boundary.IMPORT else 1
    if carrier in SECONDARY:
        return 2 if boundary in (Boundary.IMPORT, Boundary.TRANSFER) else None
    if carrier is Carrier.HYDROGEN:
        return 3 if boundary in (Boundary.IMPORT, Boundary.TRANSFER) else None
    raise AssertionError(f"unhandled carrier {carrier}")  # pragma: no cover


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """A public document a figure was taken from."""

    id: str
    title: str
    url: str = ""
    note: str = ""


class FactorDecl(_Strict):
    """A cluster-specific factor (supplier contract, internal transfer) in tCO2e per canonical
    unit of its carrier (MWh, or t for process CO2).

    Versions as in the library (``twin.factors``, the same rules, checked by the cluster):
    several entries may share an id, each with its own ``version`` and ``valid_from`` (none:
    from the beginning), valid until the next version's ``valid_from`` or its own
    ``valid_to`` (exclusive). The live pricing uses the newest, as for library factors;
    ``clustertwin restate CLUSTER --factor ID`` restates the stored readings of a version's
    period (``twin.revision``).
    """

    id: str
    carrier: Carrier
    tco2e_per_unit: float = Field(ge=0)
    kind: Literal["supplier", "transfer", "grid"] = "supplier"
    source: str
    year: int
    version: str = "1"
    region: str = ""
    valid_from: date | None = None
    valid_to: date | None = None


class Meter(_Strict):
    """One meter. Its unit follows ``twin.carriers``' rules (a gas volume in Nm3 or Sm3, a
    CO2 mass only on process_co2, a rate such as kW integrated over each reading's interval).

    ``calorific_basis``: whether the meter's energy units count gross (GCV, as gas is usually
    billed) or net (NCV, the default: the twin's and the IPCC's basis) calorific value.
    ``bidirectional``: the meter may read below zero (a grid connection that also exports);
    a negative reading is a flow the other way (an import meter's negative electricity is
    exported: no deduction from scope 2, see ``twin.emissions``).
    """

    id: str = Field(pattern=_ID)
    carrier: Carrier
    unit: str
    boundary: Boundary
    calorific_basis: CalorificBasis = CalorificBasis.NET
    bidirectional: bool = False
    to_site: str | None = None
    scope: ScopeNo | None = None
    factor_id: str | None = None
    supplier_factor_id: str | None = None
    route: HydrogenRoute | None = None
    annual_quantity: float | None = Field(default=None, ge=0)
    # the 95 % half-width of the meter's quantities in percent (EU ETS MRR tiers state it:
    # e.g. tier 4 +-1.5 %); the annual inventory propagates it (twin.inventory). Unset: unknown
    uncertainty_pct: float | None = Field(default=None, ge=0, le=100)
    #: how the meter's missing intervals are filled (``twin.gapfill``); none: never filled
    gap_fill: GapFill | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Meter:
        try:
            scale_to_canonical(self.carrier, self.unit, self.calorific_basis)
        except UnitError as e:
            raise ValueError(f"unit incompatible with carrier {self.carrier.value}: {e}") from e
        if self.bidirectional and self.boundary not in (Boundary.IMPORT, Boundary.EXPORT):
            raise ValueError(
                "bidirectional applies to a meter at the cluster's boundary (import or export); "
                f"a {self.boundary.value} meter's direction is fixed"
            )
        if (self.boundary is Boundary.TRANSFER) != (self.to_site is not None):
            raise ValueError("to_site is required for, and only for, boundary 'transfer'")
        if self.route is not None and self.carrier is not Carrier.HYDROGEN:
            raise ValueError("route is only meaningful for carrier hydrogen")
        derived = default_scope(self.carrier, self.boundary)
        if self.scope is not None and self.scope != derived:
            raise ValueError(
                f"scope {self.scope} contradicts {self.carrier.value} {self.boundary.value}, "
                f"which is {'not emitting' if derived is None else f'scope {derived}'}"
            )
        if self.supplier_factor_id is not None and self.carrier not in SECONDARY:
            raise ValueError("supplier_factor_id (market-based) applies to electricity/steam/heat")
        return self

    @property
    def effective_scope(self) -> ScopeNo | None:
        return default_scope(self.carrier, self.boundary)


class Asset(_Strict):
    id: str = Field(pattern=_ID)
    name: str = ""
    kind: str = ""
    meters: tuple[Meter, ...] = ()


class Site(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    company: str = ""
    sector: str = ""
    # Which IPCC 2006 stationary-combustion table applies (Vol. 2 Table 2.2 vs 2.3).
    combustion_category: Literal["energy_industries", "manufacturing"] = "manufacturing"
    grid_zone: str | None = None
    plan: TargetPlan | None = None
    notes: str = ""
    #: the default gap filling of the site's meters (``twin.gapfill``; a meter's own wins)
    gap_fill: GapFill | None = None
    assets: tuple[Asset, ...] = ()


class MeterRef(NamedTuple):
    """Everything the hot path needs about a meter, by its id."""

    position: int  # position in Cluster.meter_ids: the meter index EmissionsCalculator uses
    site_id: str
    asset_id: str
    carrier: Carrier
    unit: str
    boundary: Boundary
    to_site: str | None
    scale: float  # multiply a reading in ``unit`` by this to get the canonical unit


class Cluster(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    country: str
    grid_zone: str = Field(description="default location-based grid factor region, e.g. FR")
    reference_year: int
    description: str = ""
    sources: tuple[Source, ...] = ()
    plan: TargetPlan | None = None
    factors: tuple[FactorDecl, ...] = ()
    reconciliation_tolerance_pct: float = Field(default=1.0, gt=0)
    #: the default gap filling of every meter (``twin.gapfill``; a site's, a meter's own win)
    gap_fill: GapFill | None = None
    sites: tuple[Site, ...] = Field(min_length=1)

    _index: dict[str, MeterRef] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _references(self) -> Cluster:
        problems: list[tuple[Loc, str]] = []
        site_pos: dict[str, int] = {}
        for i, site in enumerate(self.sites):
            if site.id in site_pos:
                problems.append(
                    (("sites", i, "id"), f"duplicate site id {site.id!r} in cluster {self.id!r}")
                )
            site_pos.setdefault(site.id, i)
        problems += self._factor_problems()
        problems += self._meter_problems(site_pos)
        problems += self._transfer_cycles()
        if problems:
            raise Problems(problems)
        return self

    def _factor_problems(self) -> list[tuple[Loc, str]]:
        """The library's version rules (``twin.factors``) on the cluster's own factors, each
        problem naming the cluster, the factor id and the version."""
        problems: list[tuple[Loc, str]] = []
        library = default_library()
        versions: dict[str, list[tuple[str, date | None, int]]] = {}
        for i, f in enumerate(self.factors):
            here = f"factor {f.id!r} version {f.version!r} in cluster {self.id!r}"
            period = period_problem(f.valid_from, f.valid_to)
            if period:
                problems.append((("factors", i, "valid_to"), f"{here}: {period}"))
            known = versions.setdefault(f.id, [])
            clash = revision_problem(((v, start) for v, start, _ in known), f.version, f.valid_from)
            if clash:
                first = next(j for v, start, j in known if v == f.version or start == f.valid_from)
                problems.append(
                    (("factors", i, "version"), f"{here}: {clash}, first factors[{first}]")
                )
            elif f.id in library:
                shipped = [(g.version, g.valid_from) for g in library.versions(f.id)]
                clash = revision_problem(shipped, f.version, f.valid_from)
                if clash:
                    problems.append(
                        (("factors", i, "version"), f"{here}: {clash}, in the shipped library")
                    )
            known.append((f.version, f.valid_from, i))
        return problems

    def _meter_problems(self, site_pos: dict[str, int]) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        meter_at: dict[str, str] = {}
        library = default_library()
        own_factors = {f.id for f in self.factors}
        for i, site in enumerate(self.sites):
            asset_ids: set[str] = set()
            for j, asset in enumerate(site.assets):
                if asset.id in asset_ids:
                    problems.append(
                        (
                            ("sites", i, "assets", j, "id"),
                            f"duplicate asset id {asset.id!r} in site {site.id!r}",
                        )
                    )
                asset_ids.add(asset.id)
                for k, meter in enumerate(asset.meters):
                    here: Loc = ("sites", i, "assets", j, "meters", k)
                    if meter.id in meter_at:
                        problems.append(
                            (
                                (*here, "id"),
                                f"duplicate meter id {meter.id!r} in cluster {self.id!r} "
                                f"(first at {meter_at[meter.id]}); meter ids are unique across "
                                "the cluster",
                            )
                        )
                    else:
                        meter_at[meter.id] = f"site {site.id!r}, asset {asset.id!r}"
                    if meter.to_site is not None:
                        if meter.to_site not in site_pos:
                            problems.append(
                                (
                                    (*here, "to_site"),
                                    f"no site {meter.to_site!r} in cluster {self.id!r}",
                                )
                            )
                        elif meter.to_site == site.id:
                            problems.append(
                                ((*here, "to_site"), "a site cannot transfer to itself")
                            )
                    for attr in ("factor_id", "supplier_factor_id"):
                        fid = getattr(meter, attr)
                        if fid is not None and fid not in own_factors and fid not in library:
                            problems.append(
                                (
                                    (*here, attr),
                                    f"unknown factor {fid!r} (not in the cluster's factors nor "
                                    "the library)",
                                )
                            )
        return problems

    def _transfer_cycles(self) -> list[tuple[Loc, str]]:
        """One problem per knot of same-carrier transfers of a material carrier (see the
        module docstring): the shortest cycle through it, site by site with its meters."""
        edges: dict[Carrier, dict[str, list[tuple[str, str, Loc]]]] = {}
        for i, site in enumerate(self.sites):
            for j, asset in enumerate(site.assets):
                for k, m in enumerate(asset.meters):
                    if m.to_site is None or m.to_site == site.id or m.carrier not in MATERIAL:
                        continue
                    out = edges.setdefault(m.carrier, {}).setdefault(site.id, [])
                    out.append((m.to_site, m.id, ("sites", i, "assets", j, "meters", k, "to_site")))
        problems: list[tuple[Loc, str]] = []
        for carrier, graph in edges.items():
            for component in _knots(graph):
                start = min(component, key=self.site_ids.index)
                path = _shortest_cycle(graph, start, component)
                hops = " -> ".join(f"{to} (meter {mid})" for to, mid, _ in path)
                problems.append(
                    (
                        path[0][2],
                        f"transfer cycle of {carrier.value} in cluster {self.id!r}: {start} -> "
                        f"{hops}; a {carrier.value} transfer cannot return to the site it left "
                        "(a transfer is metered once, at the sender; exchanges of different "
                        "carriers or of electricity/steam/heat are allowed)",
                    )
                )
        return problems

    # ---- lookups for the hot path -------------------------------------------------------

    def meter_index(self) -> dict[str, MeterRef]:
        """meter id -> MeterRef, built once per cluster object."""
        if self._index is None:
            index: dict[str, MeterRef] = {}
            for site in self.sites:
                for asset in site.assets:
                    for meter in asset.meters:
                        index[meter.id] = MeterRef(
                            position=len(index),
                            site_id=site.id,
                            asset_id=asset.id,
                            carrier=meter.carrier,
                            unit=meter.unit,
                            boundary=meter.boundary,
                            to_site=meter.to_site,
                            scale=scale_to_canonical(
                                meter.carrier, meter.unit, meter.calorific_basis
                            ),
                        )
            self._index = index
        return self._index

    @property
    def meter_ids(self) -> list[str]:
        """Meter ids in index order (position i is MeterRef.position == i)."""
        return list(self.meter_index())

    def meters(self) -> list[tuple[Site, Asset, Meter]]:
        """Every meter with its site and asset, in index order."""
        return [(s, a, m) for s in self.sites for a in s.assets for m in a.meters]

    def gap_fill_of(self, site: Site, meter: Meter) -> FillMethod | None:
        """How ``meter`` of ``site`` is gap filled: its own declaration, else its site's,
        else the cluster's (``twin.gapfill``); None: never."""
        return inherited(meter.gap_fill, site.gap_fill, self.gap_fill)

    def site(self, site_id: str) -> Site:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)

    @property
    def site_ids(self) -> list[str]:
        return [s.id for s in self.sites]


# ---- loading ------------------------------------------------------------------------------


class ClusterFileError(ValueError):
    """A cluster file that cannot be used; the message names the file, field path and why."""


def parse_cluster(raw: Any, origin: str = "<memory>") -> Cluster:
    """Validate already-parsed YAML; errors read ``origin: path: why``, one line each."""
    if not isinstance(raw, dict):
        raise ClusterFileError(f"{origin}: <root>: expected a mapping, got {type(raw).__name__}")
    try:
        return Cluster.model_validate(raw)
    except ValidationError as e:
        raise ClusterFileError("\n".join(error_lines(e, raw, origin))) from None


def _packaged(cluster_id: str) -> Path | None:
    base = resources.files("twin.clusters")
    candidate = base.joinpath(f"{cluster_id}.yaml")
    if candidate.is_file():
        return Path(str(candidate))
    return None


def available_clusters() -> list[str]:
    """Ids of the example clusters shipped with the package."""
    base = resources.files("twin.clusters")
    return sorted(
        p.name.removesuffix(".yaml")
        for p in base.iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("_")
    )


def load_cluster(path_or_id: str | Path) -> Cluster:
    """Load a cluster from a YAML file, or a shipped example by id (``"dunkirk"``)."""
    path = Path(path_or_id)
    if not path.is_file():
        text_id = str(path_or_id)
        packaged = _packaged(text_id) if _ID_RE.match(text_id) else None
        if packaged is None:
            raise ClusterFileError(
                f"{path_or_id}: no such file, and not a shipped cluster id "
                f"(known: {', '.join(available_clusters())})"
            )
        path = packaged
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ClusterFileError(f"{path}: <root>: not valid YAML: {e}") from None
    return parse_cluster(raw, str(path))


def _knots(graph: dict[str, list[tuple[str, str, Loc]]]) -> list[set[str]]:
    """Strongly connected components of more than one site (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, nxt = work.pop()
            if nxt == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = graph.get(node, [])
            if nxt < len(succ):
                work.append((node, nxt + 1))
                to = succ[nxt][0]
                if to not in index:
                    work.append((to, 0))
                elif to in on_stack:
                    low[node] = min(low[node], index[to])
                continue
            if low[node] == index[node]:
                comp: set[str] = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _shortest_cycle(
    graph: dict[str, list[tuple[str, str, Loc]]], start: str, within: set[str]
) -> list[tuple[str, str, Loc]]:
    """The fewest transfers leading from ``start`` back to it (breadth first, in file order)."""
    came: dict[str, tuple[str, tuple[str, str, Loc]]] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for edge in graph.get(node, []):
                to = edge[0]
                if to == start:
                    path = [edge]
                    while node != start:
                        node, back = came[node]
                        path.append(back)
                    return path[::-1]
                if to in within and to not in came:
                    came[to] = (node, edge)
                    nxt.append(to)
        frontier = nxt
    raise AssertionError("a strongly connected component has a cycle")  # pragma: no cover
