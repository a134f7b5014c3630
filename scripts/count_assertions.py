"""Count what the test suite checks, so a restructuring can show that nothing was dropped.

Per file under ``tests/`` and in total:

* ``asserts``: ``assert`` statements (parsed with :mod:`ast`, so comments and strings
  never count);
* ``raises``: uses of ``pytest.raises`` / ``pytest.warns`` (as ``pytest.raises(...)`` or
  a bare ``raises(...)`` imported from pytest), each an assertion of its own;
* ``tests``: collected test ids (``pytest --collect-only -q -m ""``: every tier, the
  ``slow`` tests that the default run deselects included).

``python scripts/count_assertions.py`` prints the totals as JSON;
``--record before|after`` stores them under that key of ``bench/results/test_tiers.json``
(keeping the other keys); ``--check`` exits 1 when a total of the recorded ``after``, or a count of a
file recorded in both, is lower than in ``before``.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "test_tiers.json"
CHECKERS = {"raises", "warns"}
TOTALS = ("asserts", "raises", "tests")


def static_counts(path: Path) -> dict[str, int]:
    """``asserts`` and ``raises`` of one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    asserts = raises = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            asserts += 1
        elif isinstance(node, ast.Call):
            func = node.func
            on_pytest = isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "pytest"
            if (on_pytest and func.attr in CHECKERS) or (isinstance(func, ast.Name) and func.id in CHECKERS):
                raises += 1
    return {"asserts": asserts, "raises": raises}


def collected_tests(python: str) -> Counter[str]:
    """Collected test ids per file, every marker included."""
    argv = [python, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:cacheprovider"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"collection failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return Counter(line.split("::", 1)[0] for line in done.stdout.splitlines() if "::" in line)


def count(python: str) -> dict:
    tests = collected_tests(python)
    files = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        files[name] = {**static_counts(path), "tests": tests.get(name, 0)}
    total = {key: sum(f[key] for f in files.values()) for key in TOTALS}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {"commit": commit.strip(), "total": total, "files": files}


def check(recorded: dict) -> list[str]:
    """What went down from ``before`` to ``after``: a total, or a count of a file that both
    recorded (a file that was moved or split is held by the totals)."""
    before, after = recorded["before"], recorded["after"]
    lost = [
        f"{key}: {before['total'][key]} -> {after['total'][key]}"
        for key in TOTALS
        if after["total"][key] < before["total"][key]
    ]
    for name, counts in before["files"].items():
        kept = after["files"].get(name)
        if kept is not None:
            lost += [f"{name} {key}: {counts[key]} -> {kept[key]}" for key in TOTALS if kept[key] < counts[key]]
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", choices=["before", "after"], help=f"store them in {RESULTS.relative_to(REPO)}")
    parser.add_argument("--check", action="store_true", help="fail when a total of 'after' is below 'before'")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    args = parser.parse_args()
    recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.record or not args.check:
        counts = count(args.python)
        print(json.dumps(counts["total"]))
        if args.record:
            recorded[args.record] = counts
            RESULTS.write_text(json.dumps(recorded, indent=2) + "\n")
    if args.check:
        lost = check(recorded)
        print("\n".join(lost) or f"no total went down: {recorded['after']['total']}")
        sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
