"""Every benchmark script runs as the README says (``python bench/NAME.py``) from any folder: a
script run by path has only ``bench/`` on ``sys.path``, so one that imports the project's packages
must put the repository root there first (``bench/identity_shift.py`` once lacked that line and had
never started). Read from the scripts' syntax: running each would import torch twelve times."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

FIRST_PARTY = {"api", "bench", "cli", "core", "migrations", "ops", "safety", "worker"}
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "common.py")


def first_party_import_before_path_line(source: str) -> int | None:
    """The line of the first module-level import of a project package that comes before any
    module-level ``sys.path.insert(...)``, or None."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and "sys.path.insert" in ast.unparse(node):
            return None
        if isinstance(node, ast.If) and "sys.path.insert" in ast.unparse(node):
            return None
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if any(name.split(".")[0] in FIRST_PARTY for name in names):
            return node.lineno
    return None


def test_the_check_sees_a_missing_path_line():
    assert first_party_import_before_path_line("import sys\nfrom bench.common import REPO\n") == 2
    assert (
        first_party_import_before_path_line("import sys\nsys.path.insert(0, 'x')\nfrom bench import common\n") is None
    )
    assert first_party_import_before_path_line("import json\n") is None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_imports_the_project_only_after_putting_the_repository_on_the_path(script):
    assert {p.name for p in SCRIPTS} >= {"harmful_finetune.py", "identity_shift.py", "probe_formats.py"}
    assert first_party_import_before_path_line(script.read_text()) is None
