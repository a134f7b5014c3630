"""Waiting for a just-started HTTP process (the demo's server, the load bench's API, the
tests' servers) to answer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_http(
    url: str,
    timeout_s: float,
    process: subprocess.Popen[Any] | None = None,
    *,
    ready: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Poll ``url`` until a response's status satisfies ``ready``. Raises ``RuntimeError`` if
    ``process`` exits first and ``TimeoutError`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with code {process.returncode} before {url} answered")
        try:
            if ready(httpx.get(url, timeout=3).status_code):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
