"""``core.waiting.wait_http``: returns once the URL answers as asked, fails fast when the
process dies, and times out on a silent port."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.waiting import wait_http
from tests.conftest import free_port


class _Status(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(503 if self.path == "/busy" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_returns_when_ready_and_waits_out_a_status_it_does_not_accept(server):
    wait_http(f"{server}/ok", 5)
    with pytest.raises(TimeoutError, match="did not answer within 1 s"):
        wait_http(f"{server}/busy", 1)
    wait_http(f"{server}/busy", 5, ready=lambda status: status < 600)


def test_a_process_that_exits_first_is_reported():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(RuntimeError, match="exited with code 3"):
        wait_http(f"http://127.0.0.1:{free_port()}/healthz", 5, process)
