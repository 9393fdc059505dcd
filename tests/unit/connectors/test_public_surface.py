"""What an out-of-tree connector may import is declared, typed and importable."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("module", ["connectors.sdk", "twin.readings"])
def test_every_public_name_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    names = mod.__all__
    assert names == sorted(set(names), key=names.index), "a name is declared twice"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("package", ["connectors/sdk", "twin"])
def test_the_public_packages_are_typed(package: str) -> None:
    assert (REPO / package / "py.typed").is_file()
