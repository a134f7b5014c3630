"""``guardtune serve`` on the embedded default: healthy and ready within 30 s,
with no services; it starts an embedded worker and the embedded inference process
(``guardtune infer``) beside the API and stops both with itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import child_env, free_port, stop_process, wait_http


@pytest.mark.slow  # three real processes: the API, an embedded worker and the inference server
def test_serve_embedded_default_is_ready(tmp_path):
    port, infer_port = free_port(), free_port()
    env = child_env(
        {"GUARDTUNE_HOME": str(tmp_path / "var"), "GUARDTUNE_PORT": str(port), "GUARDTUNE_INFER_PORT": str(infer_port)}
    )
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.guardtune", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
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
        wait_http(f"http://127.0.0.1:{infer_port}/health", 90, process)
        assert httpx.get(f"http://127.0.0.1:{infer_port}/health").json()["status"] == "ok"
    finally:
        stop_process(process)
    log = (tmp_path / "serve.log").read_text()
    for child in ("worker", "inference"):
        match = re.search(rf"embedded {child} started \(pid (\d+)\)", log)
        assert match, log
        pid = int(match.group(1))
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid), f"stopping serve must stop its embedded {child}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting its parent counts as gone
        return f.read().split()[2] != "Z"
