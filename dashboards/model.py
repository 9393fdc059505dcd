"""Facts the dashboards take from the twin's cluster models when they are built.

InfluxDB holds figures, not structure: which meters are a port's cranes, or how far a
cluster's 2030 target sits below its baseline, lives in ``twin/clusters/*.yaml``. Those facts
are read here at build time and written into the queries, so a panel needs no lookup table at
run time and the generated JSON shows exactly what it relies on. Rebuild after a cluster
model changes (`clustertwin dashboards build`; a unit test fails while the JSON is stale).
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.model import available_clusters, load_cluster

MILESTONE_YEAR = 2030


@dataclass(frozen=True)
class ClusterTargets:
    cluster: str
    baseline_tco2e: float
    milestone_tco2e: float  # the pathway's value in MILESTONE_YEAR
    net_zero_year: int | None


@dataclass(frozen=True)
class TwinFacts:
    targets: tuple[ClusterTargets, ...]
    # Meter ids by the kind of port asset they measure (cargo handling = cranes and yard).
    crane_meters: tuple[str, ...]
    shore_power_meters: tuple[str, ...]


def load_facts() -> TwinFacts:
    """Read every packaged cluster model (deterministic order, so the JSON is reproducible)."""
    targets: list[ClusterTargets] = []
    cranes: set[str] = set()
    shore: set[str] = set()
    for cluster_id in sorted(available_clusters()):
        cluster = load_cluster(cluster_id)
        if cluster.plan is not None:
            plan = cluster.plan
            net_zero = [t.year for t in plan.targets if t.level(plan.baseline) <= 0.0]
            targets.append(
                ClusterTargets(
                    cluster=cluster.id,
                    baseline_tco2e=float(plan.baseline.tco2e),
                    milestone_tco2e=float(plan.pathway().at(MILESTONE_YEAR)),
                    net_zero_year=min(net_zero) if net_zero else None,
                )
            )
        for _site, asset, meter in cluster.meters():
            if asset.kind == "cargo_handling":
                cranes.add(meter.id)
            if str(meter.carrier) == "shore_power":
                shore.add(meter.id)
    return TwinFacts(tuple(targets), tuple(sorted(cranes)), tuple(sorted(shore)))
