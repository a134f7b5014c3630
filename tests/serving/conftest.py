"""Fixtures of the serving tests: the embedded inference process (``guardtune infer``)."""

from __future__ import annotations

from pathlib import Path

from cli.guardtune import infer_argv
from tests.conftest import LiveServer, free_port, start_http_process


def start_infer(env: dict[str, str], log_path: Path) -> tuple[LiveServer, dict[str, str]]:
    """``guardtune infer`` on a free port; returns it and the env pointing an API at it."""
    port = free_port()
    env = {**env, "GUARDTUNE_INFER_PORT": str(port)}
    server = start_http_process(infer_argv(), env, log_path, port, "/health", 120, "infer")
    return server, {**env, "GUARDTUNE_INFERENCE_URL": server.base_url}
