"""Helpers for the twin tests: tiny clusters written inline so every number is hand-checkable."""

from __future__ import annotations

from typing import Any

from twin.model import Cluster, parse_cluster


def make_cluster(sites: list[dict[str, Any]], **extra: Any) -> Cluster:
    raw: dict[str, Any] = {
        "id": "t",
        "name": "Test cluster",
        "country": "FR",
        "grid_zone": "FR",
        "reference_year": 2021,
        "sites": sites,
        **extra,
    }
    return parse_cluster(raw, "inline")


def site(site_id: str, *meters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": site_id,
        "assets": [{"id": "a", "meters": list(meters)}],
        **extra,
    }


def meter(
    mid: str, carrier: str, unit: str = "MWh", boundary: str = "import", **kw: Any
) -> dict[str, Any]:
    return {"id": mid, "carrier": carrier, "unit": unit, "boundary": boundary, **kw}
