"""The API process under load: started from a source tree (this checkout or an older
commit's ``git archive``) the way that tree starts it, waited for, stopped; and the
counters read around each phase (CPU seconds of a process and of all local Postgres
processes from ``/proc``, the API's own request-latency histogram from ``/metrics``).

Contracts: the API runs with ``GUARDTUNE_ENV=production`` on 127.0.0.1, a free port, the
caller's environment minus every ``GUARDTUNE_*`` variable, and logs (JSON) to ``log_path``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from bench.common import REPO
from bench.load.fixtures import SECRET

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(url: str, home: Path, log_path: Path, tree: Path = REPO) -> tuple[subprocess.Popen, str]:
    """The API of source tree ``tree`` (this checkout, or an older commit's export), started
    the way that tree starts it: ``python -m api.server`` where it exists (the API's limits),
    else uvicorn's command line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDTUNE_")}
    env.update(
        {
            "GUARDTUNE_ENV": "production",
            "GUARDTUNE_DATABASE_URL": url,
            "GUARDTUNE_SECRET_KEY": SECRET,
            "GUARDTUNE_AUDIT_SIGNING_KEY": "bench-audit-signing-" + "y" * 40,
            "GUARDTUNE_HOME": str(home),
            "GUARDTUNE_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(tree),
        }
    )
    if (tree / "api" / "server.py").exists():
        argv = [
            sys.executable,
            "-m",
            "api.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ]
    log = log_path.open("ab")
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def export_tree(commit: str, into: Path) -> Path:
    """The files of ``commit`` (``git archive``), to run an older API against the same load."""
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_s() -> float | None:
    """CPU seconds of all local Postgres processes, including exited backends (their time is
    in the postmaster's children totals). ``None`` when Postgres is not visible in /proc."""
    total, seen = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not comm.startswith("postgres"):
            continue
        f = stat.rsplit(")", 1)[1].split()
        total += sum(int(x) for x in f[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
        seen = True
    return total if seen else None


_METRIC = re.compile(r'^guardtune_http_request_seconds_(sum|count)\{method="GET",route="([^"]+)"\} (\S+)$')


def server_latency(text: str) -> dict[str, tuple[float, float]]:
    """Per route: (sum of seconds, count) of the API's own request-latency histogram."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            out.setdefault(m.group(2), [0.0, 0.0])[0 if m.group(1) == "sum" else 1] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def route_metric(metrics: dict[str, tuple[float, float]], route: str) -> tuple[float, float]:
    """The histogram of ``route``; the API labels routes of the ``/v1`` routers without the
    prefix (``/fine_tuning/jobs/...``), so both spellings are looked up."""
    return metrics.get(route) or metrics.get(route.removeprefix("/v1")) or (0.0, 0.0)
