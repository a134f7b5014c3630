"""The structure drawing: which top-level package of the project imports which.

``python scripts/structure.py`` prints the package-level import graph, one ``importer ->
imported`` line per arrow, then every circle (none expected); ``--dot`` prints it as
Graphviz dot instead (``python scripts/structure.py --dot | dot -Tsvg > structure.svg``).
The graph is read from the sources with grimp (nothing is imported): function-level (lazy)
imports count, ``if TYPE_CHECKING:`` ones do not, as for ``lint-imports``, whose contracts
in ``pyproject.toml`` (``[tool.importlinter]``) name the packages drawn here.
``tests/core/test_structure.py`` fails on a circle between modules or packages.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
ROOTS: tuple[str, ...] = tuple(
    tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
)


def import_graph() -> grimp.ImportGraph:
    """The import graph of every module under :data:`ROOTS`, read from this checkout (put first
    on ``sys.path``, ahead of any installed copy)."""
    if sys.path[0] != str(REPO):
        sys.path.insert(0, str(REPO))
    return grimp.build_graph(*ROOTS, exclude_type_checking_imports=True, cache_dir=None)


def module_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Each module and the modules of the project it imports."""
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def package_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Each root package and the other root packages its modules import."""
    return {
        root: {imported.split(".")[0] for imported in graph.find_modules_directly_imported_by(root, as_package=True)}
        - {root}
        for root in ROOTS
    }


def circles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The circles of a directed graph: its strongly connected components of more than one
    node (Tarjan), each sorted, in sorted order. Empty for a graph without a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def as_text(edges: Mapping[str, Iterable[str]]) -> str:
    lines = [f"{importer} -> {imported}" for importer in sorted(edges) for imported in sorted(edges[importer])]
    found = circles(edges)
    lines.append("circles: " + ("; ".join(" <-> ".join(c) for c in found) if found else "none"))
    return "\n".join(lines)


def as_dot(edges: Mapping[str, Iterable[str]]) -> str:
    """Graphviz dot, importers above what they import."""
    lines = ["digraph structure {", "  rankdir=TB;", "  node [shape=box];"]
    lines += [f'  "{node}";' for node in sorted(edges)]
    lines += [f'  "{importer}" -> "{imported}";' for importer in sorted(edges) for imported in sorted(edges[importer])]
    return "\n".join([*lines, "}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dot", action="store_true", help="print Graphviz dot instead of text")
    edges = package_edges(import_graph())
    print(as_dot(edges) if parser.parse_args().dot else as_text(edges))


if __name__ == "__main__":
    main()
