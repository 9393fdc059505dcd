"""The network of named industrial clusters, for the network view.

Figures come from the cited announcements only; an unknown figure is ``None`` and stays so.
"""

from __future__ import annotations

import functools
from importlib import resources

from pydantic import BaseModel, ConfigDict

from twin.yaml_loader import load_yaml

__all__ = ["Catalogue", "CatalogueEntry", "NetworkTotals", "PublishedBaseline", "load_catalogue"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublishedBaseline(_Strict):
    year: int
    tco2e: float
    scopes: str
    source: str
    note: str = ""


class CatalogueEntry(_Strict):
    id: str
    name: str
    country: str  # ISO 3166-1 alpha-2
    source: str
    joined: int | None = None
    baseline: PublishedBaseline | None = None
    reduction_potential_tco2e_per_year: float | None = None
    gdp_usd_per_year: float | None = None
    gdp_note: str = ""
    jobs: int | None = None
    jobs_note: str = ""
    target: str | None = None
    twin: str | None = None  # id of a modelled example cluster under twin/clusters
    note: str = ""


class NetworkTotals(_Strict):
    clusters: int
    countries: int
    reduction_potential_tco2e_per_year: float
    gdp_usd: float
    jobs: int
    source: str
    note: str = ""


class Catalogue(_Strict):
    version: str
    network: NetworkTotals
    clusters: tuple[CatalogueEntry, ...]

    def get(self, cluster_id: str) -> CatalogueEntry:
        for c in self.clusters:
            if c.id == cluster_id:
                return c
        raise KeyError(cluster_id)

    @property
    def named_countries(self) -> set[str]:
        return {c.country for c in self.clusters}


@functools.cache
def load_catalogue() -> Catalogue:
    text = resources.files("twin").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    return Catalogue.model_validate(load_yaml(text))
