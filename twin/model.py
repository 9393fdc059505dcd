"""The cluster hierarchy: cluster -> sites -> assets -> meters, declared in YAML.

Validation happens here, once, when a cluster is loaded, so the hot path (connectors and
stream processors) can trust every meter id, carrier and unit it looks up in
:meth:`Cluster.meter_index`. A bad file fails with ``<file>: <path.to.field>: <why>``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from twin.carriers import CalorificBasis, Carrier, HydrogenRoute, UnitError, scale_to_canonical
from twin.factors import default_library
from twin.targets import TargetPlan
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
    unit of its carrier (MWh, or t for process CO2)."""

    id: str
    carrier: Carrier
    tco2e_per_unit: float = Field(ge=0)
    kind: Literal["supplier", "transfer", "grid"] = "supplier"
    source: str
    year: int
    version: str = "1"
    region: str = ""


class Meter(_Strict):
    """One meter. Its unit follows ``twin.carriers``' rules (a gas volume in Nm3 or Sm3, a
    CO2 mass only on process_co2, a rate such as kW integrated over each reading's interval).

    ``calorific_basis``: whether the meter's energy units count gross (GCV, as gas is usually
    billed) or net (NCV, the default: the twin's and the IPCC's basis) calorific value.
    ``bidirectional``: the meter may read below zero (a grid connection that also exports);
    a negative reading is a flow the other way and is priced as such (an import meter's
    negative electricity is exported: negative scope 2, see ``twin.emissions``).
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
    sites: tuple[Site, ...] = Field(min_length=1)

    _index: dict[str, MeterRef] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _references(self) -> Cluster:
        problems: list[str] = []
        site_pos: dict[str, int] = {}
        for i, site in enumerate(self.sites):
            if site.id in site_pos:
                problems.append(f"sites[{i}].id: duplicate site id {site.id!r}")
            site_pos.setdefault(site.id, i)
        meter_at: dict[str, str] = {}
        factor_ids = {f.id for f in self.factors}
        if len(factor_ids) != len(self.factors):
            problems.append("factors: duplicate factor id")
        library = default_library()
        for i, site in enumerate(self.sites):
            asset_ids: set[str] = set()
            for j, asset in enumerate(site.assets):
                if asset.id in asset_ids:
                    problems.append(f"sites[{i}].assets[{j}].id: duplicate asset id {asset.id!r}")
                asset_ids.add(asset.id)
                for k, meter in enumerate(asset.meters):
                    here = f"sites[{i}].assets[{j}].meters[{k}]"
                    if meter.id in meter_at:
                        problems.append(
                            f"{here}.id: duplicate meter id {meter.id!r} "
                            f"(first at {meter_at[meter.id]})"
                        )
                    else:
                        meter_at[meter.id] = here
                    if meter.to_site is not None:
                        if meter.to_site not in site_pos:
                            problems.append(
                                f"{here}.to_site: no site {meter.to_site!r} in this cluster"
                            )
                        elif meter.to_site == site.id:
                            problems.append(f"{here}.to_site: a site cannot transfer to itself")
                    for attr in ("factor_id", "supplier_factor_id"):
                        fid = getattr(meter, attr)
                        if fid is not None and fid not in factor_ids and fid not in library:
                            problems.append(
                                f"{here}.{attr}: unknown factor {fid!r} (not in the cluster's "
                                "factors nor the library)"
                            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


def _describe_loc(raw: Any, loc: tuple[int | str, ...]) -> str:
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


def parse_cluster(raw: Any, origin: str = "<memory>") -> Cluster:
    """Validate already-parsed YAML; errors read ``origin: path: why``."""
    if not isinstance(raw, dict):
        raise ClusterFileError(f"{origin}: <root>: expected a mapping, got {type(raw).__name__}")
    try:
        return Cluster.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = _describe_loc(raw, tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "enum":
                msg = f"{msg} (got {err.get('input')!r})"
            lines.append(f"{origin}: {where}: {msg}")
        raise ClusterFileError("\n".join(lines)) from None


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
