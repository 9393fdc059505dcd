"""The one way this project reads YAML: libyaml's C loader when PyYAML was built with it.

Loading a network of 33 clusters x 100 sites x 50 meters spent about 30 s in PyYAML's
pure-Python ``SafeLoader``; ``CSafeLoader`` builds the same objects (same safe subset, same
types) several times faster. Wheels of PyYAML ship libyaml, but a source build without it
must still work, so the pure-Python loader is the fallback. Every YAML file of the project
(clusters, factor library, scenarios, connector and alerting configuration) goes through
``load_yaml`` so all of them get the fast path and parse alike.

The cyclic garbage collector is paused while a document is built. A cluster file is hundreds
of thousands of fresh dicts, lists and strings, and each full collection triggered by those
allocations walks every object alive, including every cluster loaded before: with 33 large
clusters kept in memory, that made their load 2.3 times slower than the parsing itself
(``bench/bench_load.py``). A safe YAML document holds no cycles the collector must break.
"""

from __future__ import annotations

import gc
from typing import Any

import yaml

__all__ = ["FAST", "PYTHON_LOADER", "SAFE_LOADER", "load_yaml"]

#: The pure-Python safe loader (the reference the C loader must agree with).
PYTHON_LOADER: type[yaml.SafeLoader] = yaml.SafeLoader
#: The safe loader used: libyaml's when available.
SAFE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Whether the C loader is in use.
FAST: bool = SAFE_LOADER is not yaml.SafeLoader


def load_yaml(text: str | bytes, loader: type[Any] | None = None) -> Any:
    """The document in ``text`` as plain Python (dicts, lists, scalars), safely.

    ``loader`` is for the benchmark and the equivalence test only (``PYTHON_LOADER``);
    raises ``yaml.YAMLError`` on bad YAML, as ``yaml.safe_load`` does.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return yaml.load(text, Loader=loader or SAFE_LOADER)
    finally:
        if paused:
            gc.enable()
