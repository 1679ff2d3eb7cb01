"""The structure rules CI holds the package to: no import cycles, small functions and files.

The layering itself (which package may import which) is the import contract in pyproject.toml,
checked by `lint-imports` in .ci/run; these tests add what a layers contract cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "openjepa"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components of more than one module are the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _package_graph() -> dict[str, set[str]]:
    """Imports between openjepa's subpackages and top-level modules (lazy imports included)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("openjepa")

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = top(module), top(imported)
            if a != b and "openjepa" not in (a, b):  # the root only re-exports the public API
                edges.setdefault(a, set()).add(b)
            edges.setdefault(b, set())
    return edges


def test_strongly_connected__finds_a_planted_cycle():
    # the detector itself: a -> b -> c -> a is one cycle, d hangs off it
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_packages__import_each_other_without_cycles():
    cycles = _strongly_connected(_package_graph())
    assert cycles == [], f"import cycles between packages: {cycles}"


def test_functions__none_longer_than_the_limit():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_files__none_longer_than_the_limit():
    big = [
        f"{p.relative_to(SRC)} ({n} lines)"
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert big == [], f"files over {MAX_FILE_LINES} lines: {big}"
