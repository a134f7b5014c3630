"""Fixtures of the serving tests: the embedded inference process (``guardtune infer``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from api.cli import infer_argv
from tests.conftest import REPO, LiveServer, child_env, free_port, stop_process, wait_http


def start_infer(env: dict[str, str], log_path: Path) -> tuple[LiveServer, dict[str, str]]:
    """``guardtune infer`` on a free port; returns it and the env pointing an API at it."""
    port = free_port()
    env = {**env, "GUARDTUNE_INFER_PORT": str(port)}
    log = log_path.open("ab")
    process = subprocess.Popen(infer_argv(), cwd=REPO, env=child_env(env), stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_http(f"{server.base_url}/health", 120, process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"infer did not start:\n{server.log()[-3000:]}") from None
    return server, {**env, "GUARDTUNE_INFERENCE_URL": server.base_url}
