"""The shape of the code, checked: no import cycles, no long functions, layers that hold.

A cycle or a 300-line function is cheap to add and expensive to find later; these tests make
it fail the day it is added. The import graph counts every import a module makes, at the top,
inside functions and under ``TYPE_CHECKING``: a cycle hidden in a function is still a cycle a
reader has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("clustertwin", "clustertwin_base", "twin", "streams", "connectors", "dashboards")
# The rule: no function over 100 lines where the I/O and the wiring live.
SHORT_FUNCTION_PACKAGES = ("clustertwin", "clustertwin_base", "streams", "connectors")
MAX_FUNCTION_LINES = 100
# Who may import whom (first-party only). The domain stands alone; the edges never import
# each other; the base imports nothing of ours.
ALLOWED = {
    "clustertwin_base": set(),
    "twin": set(),
    "connectors": {"clustertwin_base", "twin"},
    "streams": {"clustertwin_base", "twin"},
    "dashboards": {"clustertwin_base", "twin", "streams"},
    "clustertwin": set(PACKAGES),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            prefix = ".".join([*base, node.module] if node.module else base)
        else:
            prefix = node.module or ""
        yield prefix
        for alias in node.names:
            yield f"{prefix}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Module -> first-party modules it imports (a name that is not a module maps to its own)."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                if name in sources and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _is_ancestor(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def test_no_import_cycle() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its submodules is not a cycle a reader must untangle,
    # but a submodule importing its own package's __init__ back is; keep both edges.
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_layers_hold() -> None:
    bad = []
    for module, edges in import_graph().items():
        top = module.split(".")[0]
        for target in edges:
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(sorted(bad))


def test_production_code_never_imports_tests() -> None:
    bad = []
    for module, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            for name in _imported(node, module, path.name == "__init__.py"):
                if name == "tests" or name.startswith("tests."):
                    bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(sorted(set(bad)))


def _long_functions() -> list[str]:
    long = []
    for package in SHORT_FUNCTION_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        where = path.relative_to(REPO)
                        long.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return long


def test_no_function_over_100_lines() -> None:
    long = _long_functions()
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("module", ["streams.app", "twin.readings", "connectors.sdk"])
def test_graph_sees_real_edges(module: str) -> None:
    """The walker must see imports at all, or the cycle test would pass on an empty graph."""
    assert import_graph()[module]
