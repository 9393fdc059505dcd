"""Build the worker's meter index and target plans from the twin (``twin/``).

The twin's ``EmissionsCalculator`` resolves, per meter, every factor (IPCC combustion, grid,
supplier, hydrogen route, GWP set) into tCO2e per canonical unit (and scope 1 into t of each
gas); ``scale_to_canonical``
turns a meter's unit into that canonical unit. Their product is the one coefficient per
(meter, unit, scope) that the worker multiplies a reading by.

Transfers between sites of the cluster (``boundary: transfer``) are priced with the tonnes
the twin attributes to the receiving site and windowed apart, under a transfer key
(``streams.transfers``): the site views then credit the sender (fuel and CO2 that move) and
charge the receiver, as ``clustertwin twin show`` does, while the cluster counts only their
energy (the twin nets them to zero or eliminates them at cluster level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.meter_vectors import CatalogError, MeterSpec, MeterVectors
from streams.progress_series import Plan
from streams.transfers import INTERNAL, MOVES, transfer_key
from twin.contract import SCOPES, allows_negative
from twin.contract import TWIN_SCOPES as _TWIN_SCOPES


def _unit_scale(carrier: str, unit: str, basis: str = "net") -> float | None:
    # The twin is imported when used: a worker started from a compiled catalog file
    # (``catalog_file``) never loads it (pint and the cluster models cost 0.4 s CPU per start).
    from twin.carriers import Carrier, UnitError, scale_to_canonical

    try:
        return float(scale_to_canonical(Carrier(carrier), unit, basis))
    except (UnitError, ValueError):
        return None


def _load(names: Sequence[str]) -> list[Any]:
    try:
        from twin.model import load_cluster
    except ImportError as exc:  # pragma: no cover - the twin is part of this package
        raise CatalogError(f"the twin model is not importable: {exc}") from exc
    clusters: list[Any] = []
    for name in names:
        try:
            clusters.append(load_cluster(name))
        except Exception as exc:
            raise CatalogError(f"cluster {name!r}: {exc}") from exc
    return clusters


def catalog_from_twin(names: Sequence[str]) -> MeterVectors:
    return catalog_from_clusters(_load(names))


def catalog_from_clusters(clusters: Sequence[Any]) -> MeterVectors:
    """The meter index of parsed twin clusters (``twin.model.Cluster``)."""
    from twin.emissions import SCOPES as TWIN_SCOPES
    from twin.emissions import EmissionsCalculator

    if tuple(TWIN_SCOPES) != _TWIN_SCOPES or len(SCOPES) != len(_TWIN_SCOPES):
        raise CatalogError(f"twin scopes {TWIN_SCOPES} do not match the stream's {SCOPES}")
    specs: list[MeterSpec] = []
    for cluster in clusters:
        calc = EmissionsCalculator(cluster)
        refs = calc.factor_refs()
        explained = calc.factor_explanations()
        for i, (site, _asset, meter) in enumerate(cluster.meters()):
            scale = float(calc.scale[i])
            transfer = bool(calc.internal[i] or calc.moves[i])
            # tCO2e per scope, then scope 1 by gas (t), per canonical unit: one row of the
            # twin's figure matrix
            canonical = tuple(float(x) for x in calc.figure_coef[:, i])
            per_unit = tuple(x * scale for x in canonical)
            carrier = str(getattr(meter.carrier, "value", meter.carrier))
            mode = MOVES if calc.moves[i] else INTERNAL
            key = transfer_key(carrier, mode, str(meter.to_site)) if transfer else ""
            mwh = scale if carrier != "process_co2" else 0.0
            provenance = (
                ";".join(f"{s}={refs[s][i]}" for s in _TWIN_SCOPES if refs[s][i])
                + f";gwp={calc.gwp}"
            )
            specs.append(
                MeterSpec(
                    meter=str(meter.id),
                    site=str(site.id),
                    cluster=str(cluster.id),
                    carrier=carrier,
                    units={str(meter.unit): (mwh, per_unit)},
                    allow_negative=allows_negative(meter),
                    calorific_basis=str(getattr(meter, "calorific_basis", "net")),
                    factors=explained[i],
                    provenance=("transfer (netted at cluster level);" if transfer else "")
                    + provenance,
                    canonical=(
                        1.0 if carrier != "process_co2" else 0.0,
                        canonical,
                    ),
                    window_key=key,
                    unpriced_below_zero=tuple(SCOPES[k] for k in calc.unpriced_below_zero(i)),
                )
            )
    return MeterVectors(specs, unit_scale=_unit_scale)


def plans_from_twin(names: Sequence[str]) -> dict[tuple[str, str], Plan]:
    """Target plans by (cluster, site) and (cluster, "") for the progress series."""
    plans: dict[tuple[str, str], Plan] = {}
    for cluster in _load(names):
        c = cluster
        if getattr(c, "plan", None) is not None:
            plans[(c.id, "")] = Plan(c.plan.pathway(), c.plan.baseline.scopes)
        for site in c.sites:
            if site.plan is not None:
                plans[(c.id, site.id)] = Plan(site.plan.pathway(), site.plan.baseline.scopes)
    return plans
