"""``guardtune serve`` on the embedded default: healthy and ready within 30 s,
with no services, and its embedded worker executes tasks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx

from tests.conftest import child_env, free_port, stop_process, wait_http


def test_serve_embedded_default_is_ready(tmp_path):
    port = free_port()
    env = child_env({"GUARDTUNE_HOME": str(tmp_path / "var"), "GUARDTUNE_PORT": str(port)})
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        start = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", 30, process)
        while (ready := httpx.get(f"{base}/readyz")).status_code != 200 and time.monotonic() - start < 30:
            time.sleep(0.5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
        assert time.monotonic() - start < 30
        assert "guardtune_http_requests_total" in httpx.get(f"{base}/metrics").text
        assert (tmp_path / "var" / "guardtune.db").exists()
    finally:
        stop_process(process)
    log = (tmp_path / "serve.log").read_text()
    match = re.search(r"embedded worker started \(pid (\d+)\)", log)
    assert match, log
    worker_pid = int(match.group(1))
    deadline = time.monotonic() + 30
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker_pid), "stopping serve must stop its embedded worker"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting its parent counts as gone
        return f.read().split()[2] != "Z"
