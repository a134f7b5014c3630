"""The README's first command as a new user runs it, timed: a fresh clone of HEAD, a new
``.venv`` (``make install``: torch from the CPU pin, the project, the default model's package),
then ``guardtune demo --no-serve`` (what ``make demo`` runs, exiting once the released model
has answered instead of serving on). Writes ``bench/results/demo.json``: install and demo
seconds, the demo's phase times and outcome (its ``--report``), the commit measured.

    python bench/demo_time.py                 # ~8 min on 2 idle cores (pip's cache warm)
    python bench/demo_time.py --keep DIR      # keep the clone (its .venv and var/) in DIR

The clone is of the committed HEAD, so uncommitted changes in this tree are not measured (and
the result records HEAD). Target (issue 12): ≤ 12 minutes from the command, install included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, git_info, write_result  # noqa: E402

TARGET_S = 12 * 60


def clean_env() -> dict[str, str]:
    """This environment without the project's settings and without this tree's virtualenv, as
    a new shell would have it."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if not (venv and p.startswith(venv))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDTUNE_") and k != "VIRTUAL_ENV"}
    return {**env, "PATH": os.pathsep.join(path)}


def timed(argv: list[str], cwd: Path, log: Path) -> float:
    """Run ``argv`` in ``cwd``, its output appended to ``log``; seconds taken. Exits on failure."""
    started = time.perf_counter()
    with log.open("ab") as out:
        code = subprocess.run(argv, cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv)} exited {code}; the log's end:\n{tail}")
    return time.perf_counter() - started


def measure(clone: Path) -> dict:
    """Clone, install, run the demo in ``clone``; the seconds of each and the demo's outcome."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    log = clone / "demo_time.log"
    install_s = timed(["make", "install"], clone, log)
    print(f"make install: {install_s:.0f} s", flush=True)
    report = clone / "demo_outcome.json"
    demo_s = timed([".venv/bin/guardtune", "demo", "--no-serve", "--report", str(report)], clone, log)
    print(f"guardtune demo --no-serve: {demo_s:.0f} s", flush=True)
    total = install_s + demo_s
    return {
        "install_seconds": round(install_s, 1),
        "demo_seconds": round(demo_s, 1),
        "total_seconds": round(total, 1),
        "target_seconds": TARGET_S,
        "met": total <= TARGET_S,
        "outcome": json.loads(report.read_text()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", type=Path, help="clone into this (new) directory and keep it")
    args = p.parse_args(argv)
    git = {**git_info(), "measured": "a fresh clone of HEAD"}
    if args.keep:
        result = measure(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="guardtune-demo-") as tmp:
            result = measure(Path(tmp) / "guardtune")
    path = write_result("demo", result, argv=sys.argv if argv is None else [sys.argv[0], *argv], git=git)
    minutes, seconds = divmod(round(result["total_seconds"]), 60)
    print(f"total {minutes} min {seconds} s (target ≤ 12 min: {'met' if result['met'] else 'missed'}); {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
