"""The import structure (``scripts/structure.py``, read with grimp): no circle between the
project's modules or its top-level packages, and the HTTP service never reaches the worker.
Which package may import which is ``lint-imports``' (contracts in ``pyproject.toml``)."""

from __future__ import annotations

import pytest

from scripts.structure import ROOTS, as_dot, as_text, circles, import_graph, module_edges, package_edges


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_module_import_cycle(graph):
    """Function-level (lazy) imports count; ``if TYPE_CHECKING:`` ones do not."""
    edges = module_edges(graph)
    assert {"api.app", "cli.guardtune", "core.settings", "core.datasets", "worker.tasks"} <= set(edges)
    assert circles(edges) == []


def test_no_package_circle_and_no_api_to_worker_arrow(graph):
    edges = package_edges(graph)
    assert set(edges) == set(ROOTS)
    assert "core" in edges["api"]
    assert circles(edges) == []
    assert "worker" not in edges["api"]
    assert not any("cli" in imported for imported in edges.values())
    assert as_text(edges).endswith("circles: none")
    assert '"api" -> "core";' in as_dot(edges)


def test_circles_finds_every_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "e"}, "e": {"d"}, "f": {"a"}}
    assert circles(edges) == [["a", "b", "c"], ["d", "e"]]
    assert circles({"a": {"b"}, "b": set()}) == []
