"""Cluster YAML validation: errors name the file, the path to the field and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twin.carriers import Carrier
from twin.model import (
    Boundary,
    ClusterFileError,
    available_clusters,
    default_scope,
    load_cluster,
)

from .conftest import make_cluster, meter, site


def _write(tmp_path: Path, raw: object) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _raw(*meters: dict[str, object]) -> dict[str, object]:
    return {
        "id": "x",
        "name": "X",
        "country": "FR",
        "grid_zone": "FR",
        "reference_year": 2021,
        "sites": [site("s1", *meters), site("s2")],
    }


def test_shipped_clusters_load_by_id() -> None:
    assert {"dunkirk", "teda", "rotterdam"} <= set(available_clusters())
    c = load_cluster("dunkirk")
    idx = c.meter_index()
    ref = idx["sw-coking-coal"]
    assert (ref.site_id, ref.carrier, ref.unit) == ("steelworks", Carrier.COKING_COAL, "t")
    assert ref.scale == pytest.approx(28.2 / 3.6)  # IPCC NCV 28.2 GJ/t
    assert c.meter_ids[ref.position] == "sw-coking-coal"
    assert [r.position for r in idx.values()] == list(range(len(idx)))
    assert 10 <= len(idx) <= 60  # small enough to simulate live


def test_load_by_path(tmp_path: Path) -> None:
    p = _write(tmp_path, _raw(meter("m1", "natural_gas")))
    assert load_cluster(p).meter_ids == ["m1"]


@pytest.mark.parametrize(
    ("meters", "expected"),
    [
        (
            [meter("m1", "unobtainium")],
            r"sites\[0\]\(s1\)\.assets\[0\]\(a\)\.meters\[0\]\(m1\)\.carrier: .*'unobtainium'",
        ),
        (
            [meter("m1", "natural_gas", unit="t CO2 per fortnight")],
            r"meters\[0\]\(m1\): unit incompatible with carrier natural_gas",
        ),
        (
            [meter("m1", "steam", unit="t")],
            r"meters\[0\]\(m1\): unit incompatible with carrier steam",
        ),
        (
            [meter("m1", "natural_gas"), meter("m1", "diesel")],
            r"meters\[1\]\(m1\)\.id: duplicate meter id 'm1' in cluster 'x' \(first at site 's1'",
        ),
        (
            [meter("m1", "electricity", boundary="transfer", to_site="nowhere")],
            r"meters\[0\]\(m1\)\.to_site: no site 'nowhere' in cluster 'x'",
        ),
        (
            [meter("m1", "electricity", boundary="transfer", to_site="s1")],
            r"cannot transfer to itself",
        ),
        ([meter("m1", "electricity", boundary="transfer")], r"to_site is required"),
        (
            [meter("m1", "natural_gas", scope=2)],
            r"scope 2 contradicts natural_gas import, which is scope 1",
        ),
        (
            [meter("m1", "electricity", factor_id="grid:XX:1999")],
            r"meters\[0\]\(m1\)\.factor_id: unknown factor 'grid:XX:1999'",
        ),
        (
            [meter("m1", "natural_gas", route="smr")],
            r"route is only meaningful for carrier hydrogen",
        ),
        (
            [meter("m1", "natural_gas", supplier_factor_id="supplier:renewable-eac")],
            r"supplier_factor_id",
        ),
        ([meter("M 1", "natural_gas")], r"meters\[0\]\(M 1\)\.id: String should match pattern"),
        ([meter("m1", "natural_gas", boundary="sideways")], r"boundary: .*'sideways'"),
        (
            [meter("m1", "natural_gas", colour="red")],
            r"meters\[0\]\(m1\)\.colour: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_files_name_file_path_and_reason(
    tmp_path: Path, meters: list[dict[str, object]], expected: str
) -> None:
    p = _write(tmp_path, _raw(*meters))
    with pytest.raises(ClusterFileError, match=expected) as err:
        load_cluster(p)
    assert str(err.value).startswith(str(p))


def test_duplicate_site_and_missing_fields(tmp_path: Path) -> None:
    raw = _raw()
    raw["sites"] = [site("s1"), site("s1")]
    with pytest.raises(
        ClusterFileError, match=r"sites\[1\]\(s1\)\.id: duplicate site id 's1' in cluster 'x'"
    ):
        load_cluster(_write(tmp_path, raw))
    del raw["grid_zone"]
    with pytest.raises(ClusterFileError, match=r"grid_zone: Field required"):
        load_cluster(_write(tmp_path, raw))


def test_not_yaml_and_not_found(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("id: [unclosed\n")
    with pytest.raises(ClusterFileError, match=r"broken\.yaml: <root>: not valid YAML"):
        load_cluster(p)
    with pytest.raises(ClusterFileError, match="not a shipped cluster id"):
        load_cluster("atlantis")
    p.write_text("- a list\n")
    with pytest.raises(ClusterFileError, match="expected a mapping"):
        load_cluster(p)


@pytest.mark.parametrize("carrier", list(Carrier))
@pytest.mark.parametrize("boundary", list(Boundary))
def test_every_carrier_boundary_has_a_scope_rule(carrier: Carrier, boundary: Boundary) -> None:
    scope = default_scope(carrier, boundary)
    assert scope in (None, 1, 2, 3)
    if carrier in (Carrier.ELECTRICITY, Carrier.STEAM, Carrier.HEAT, Carrier.SHORE_POWER):
        assert scope == (2 if boundary in (Boundary.IMPORT, Boundary.TRANSFER) else None)
    if carrier is Carrier.NATURAL_GAS and boundary is Boundary.IMPORT:
        assert scope == 1


def test_cluster_helpers() -> None:
    c = make_cluster([site("s1", meter("m1", "natural_gas")), site("s2")])
    assert c.site_ids == ["s1", "s2"]
    assert c.site("s2").id == "s2"
    with pytest.raises(KeyError):
        c.site("s3")
    assert c.meter_index() is c.meter_index()  # built once
