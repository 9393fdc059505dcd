"""The C YAML loader (libyaml) builds the very models the pure-Python one does."""

from __future__ import annotations

from importlib import resources

import pytest

from twin.model import available_clusters, parse_cluster
from twin.yaml_loader import FAST, PYTHON_LOADER, SAFE_LOADER, load_yaml


def test_the_c_loader_is_used_where_pyyaml_has_it() -> None:
    import yaml

    assert hasattr(yaml, "CSafeLoader") == FAST
    assert SAFE_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.mark.parametrize("name", available_clusters())
def test_c_and_python_loaders_give_equal_models(name: str) -> None:
    text = resources.files("twin.clusters").joinpath(f"{name}.yaml").read_text()
    fast, slow = load_yaml(text), load_yaml(text, PYTHON_LOADER)
    assert fast == slow
    assert parse_cluster(fast, name) == parse_cluster(slow, name)


def test_c_and_python_loaders_read_the_factor_library_alike() -> None:
    base = resources.files("twin.factors")
    names = [p.name for p in base.iterdir() if p.name.endswith(".yaml")]
    assert len(names) >= 5
    for n in names:
        text = base.joinpath(n).read_text()
        assert load_yaml(text) == load_yaml(text, PYTHON_LOADER), n


def test_the_safe_subset_is_kept() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object/apply:os.system ['true']")
    # the scalar types the cluster files rely on: ints, floats, bools, nulls, dates as text
    doc = "a: 1\nb: 1.5e+3\nc: true\nd: ~\ne: '2026'\nf: [1, 2]\n"
    assert load_yaml(doc) == load_yaml(doc, PYTHON_LOADER) == {
        "a": 1, "b": 1500.0, "c": True, "d": None, "e": "2026", "f": [1, 2]
    }  # fmt: skip


def test_the_collector_is_paused_while_loading_and_restored_after() -> None:
    import gc

    assert gc.isenabled()
    load_yaml("a: [1, 2]")
    assert gc.isenabled()
    gc.disable()
    try:
        load_yaml("a: [1, 2]")
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    import yaml

    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1, 2")
    assert gc.isenabled()
