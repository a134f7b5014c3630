"""Helpers shared by the benchmark scripts: memory, machine facts, result files, ratio tables.

Nothing here imports torch or the project's packages, so every script (including the ones
that must not load torch, like the API load test) can use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"


# -- memory ------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``; KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


# The recipe's probe (and answer-side head), small, for a smoke run on a tiny model.
QUICK_PROBE = {"epochs": 5, "heads": 1, "hidden_units": 32, "max_len": 64}


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (``/proc/self/status``; falls back to peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def high_water_rss_mb() -> float:
    """Peak resident set size of this process since it started or since the last
    :func:`reset_high_water_rss`, in MiB (``VmHWM`` of ``/proc/self/status``; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("/proc/self/status has no VmHWM")


def reset_high_water_rss() -> None:
    """Set this process's peak RSS (``VmHWM``) to its current RSS (``/proc/self/clear_refs``,
    Linux ≥ 4.0), so that a later :func:`high_water_rss_mb` sees only what came after, and hand
    the heap's freed pages back first (glibc's ``malloc_trim``) so that they do not count."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


# -- statistics --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


# -- machine and code facts --------------------------------------------------------------------
def git_info() -> dict[str, Any]:
    """Commit of the working tree and whether it has uncommitted changes."""

    def run(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or None, "dirty": bool(status)}


def git_of_clean_tree(dirty_ok: bool) -> dict[str, Any] | None:
    """:func:`git_info` of the tree a benchmark is about to measure, or ``None`` (after saying
    why) when the tree has uncommitted changes and ``dirty_ok`` does not allow a marked result."""
    git = git_info()
    if git["dirty"] and not dirty_ok:
        print("refusing to run from a dirty tree (commit first, or pass --dirty-ok to record a marked result)")
        return None
    return git


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (CPU, cores usable by this process, memory, load)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "mem_total_gib": _mem_total_gib(),
    }
    try:
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def write_result(
    name: str, payload: dict[str, Any], *, argv: Sequence[str] | None = None, git: dict[str, Any] | None = None
) -> Path:
    """Write ``bench/results/<name>.json``: the payload plus when, how (the command line),
    on what machine and at which commit it was measured (``git``: :func:`git_info` taken when
    the run started, for a run that writes other results before this one; default: now)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    doc = {
        "benchmark": name,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, argv[1:])]),
        "git": git if git is not None else git_info(),
        "machine": machine_info(),
        **payload,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    return path


def json_safe(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``null``, paths and tuples plain values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def load_results(
    out: Path, benchmark: str, config: dict[str, Any], shared: Sequence[str], fresh: bool
) -> dict[str, Any]:
    """The results file of a benchmark split into commands, to merge this command's runs into:
    a new one (``parts``, ``runs``) with ``fresh`` or when none exists; refuses one whose
    ``shared`` configuration keys differ from this command's."""
    if fresh or not out.exists():
        return {"benchmark": benchmark, "version": 1, "parts": {}, "runs": {}}
    doc = json.loads(out.read_text())
    differ = [k for k in shared if doc["config"].get(k) != config.get(k)]
    if differ:
        raise SystemExit(f"{out} was made with other {', '.join(differ)}: pass --fresh to start it anew")
    return doc


def open_part(doc: dict[str, Any], argv: list[str] | None, git: dict[str, Any], dirty_ok: bool) -> str:
    """Record this command in ``doc["parts"]`` (its command line, git, start time, machine;
    not yet complete) and return its command line, the part's key."""
    args = argv if argv is not None else sys.argv[1:]
    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *args])
    doc["parts"][command] = {
        "command": command,
        "git": {**git, "dirty_ok": dirty_ok},
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "complete": False,
    }
    return command


def merged_git(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``git`` of a results file from its commands' (``parts``): the last one's commit,
    dirty when any was, and every commit that measured."""
    gits = [p["git"] for p in parts.values()]
    return {
        "commit": gits[-1]["commit"],
        "dirty": any(g["dirty"] for g in gits),
        "commits": sorted({g["commit"] for g in gits if g["commit"]}),
    }


# -- printing ----------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, ``None`` as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 2) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def add_model_run_options(parser: argparse.ArgumentParser, *, work_dir: str, out: str, threads: int) -> None:
    """The options every benchmark that trains or probes the real model takes: the base model, where
    its conversions are cached, the shared data, a work folder, the results file, torch's threads
    and ``--dirty-ok``."""
    parser.add_argument("--base", default="smollm2-135m-instruct", help="base model (built-in name or local dir)")
    parser.add_argument("--cache-dir", default="var/models")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work-dir", default=work_dir)
    parser.add_argument("--out", default=out)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--dirty-ok", action="store_true", help="record results from a dirty tree (marked in the JSON)")


def add_size_options(parser: argparse.ArgumentParser, full: Any, quick: Any) -> None:
    """One ``--field-name`` integer option per field of the sizes dataclass of ``full``
    (default: unset, i.e. ``full``'s value, or ``quick``'s with ``--quick``)."""
    for field in dataclasses.fields(full):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=int,
            default=None,
            help=f"default {getattr(full, field.name)} (quick {getattr(quick, field.name)})",
        )


def chosen_sizes(args: argparse.Namespace, full: Any, quick: Any) -> Any:
    """``quick`` with ``--quick``, else ``full``, with every size option given replacing its field."""
    base = quick if args.quick else full
    names = {field.name for field in dataclasses.fields(base)}
    return dataclasses.replace(base, **{k: v for k, v in vars(args).items() if k in names and v is not None})
