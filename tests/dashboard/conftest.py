"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by
Playwright's Python package (never ``playwright install``: no browser downloads).

A missing browser is installed with ``scripts/install-browser.sh`` when this process
may run apt-get (root); otherwise the tests fail saying how to install it. Never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CHROMIUM = os.environ.get("GUARDTUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
INSTALL_SCRIPT = REPO / "scripts" / "install-browser.sh"
OUTPUT_DIR = REPO / "test-output" / "dashboard"


def _chromium_ready() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium binary; installs it with the project's script when possible."""
    if _chromium_ready():
        return CHROMIUM
    hint = f"Chromium was not found at {CHROMIUM}. Run `sudo scripts/install-browser.sh` (installs Debian's chromium)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            done = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{hint}; running it from the test set-up timed out.", pytrace=False)
        if done.returncode != 0 or not _chromium_ready():
            tail = (done.stdout + done.stderr)[-1500:]
            pytest.fail(f"{hint}; running it from the test set-up failed:\n{tail}", pytrace=False)
        return CHROMIUM
    pytest.fail(f"{hint}, or set GUARDTUNE_CHROMIUM to a Chromium binary.", pytrace=False)


@pytest.fixture(scope="module")
def browser(chromium_path) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """``test-output/dashboard/`` (gitignored): screenshots of the page."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR
