"""A fake OpenAI-compatible judge endpoint: a real local HTTP server for tests and benches.

Not part of the product. It speaks the one call :class:`safety.judge.OpenAICompatibleJudge`
makes, ``POST {url}/chat/completions``, so the client's real HTTP path (retries,
concurrency, parsing) runs against it. The tests and the benches (``bench/probe_quality.py``)
share this one implementation.

Contract of :func:`serve_judge`: each request is recorded in :attr:`FakeJudge.requests`
(``path``, ``auth`` header, JSON ``body``), then answered after ``latency_s`` by the next
action of :attr:`FakeJudge.plan` (``"ok"`` once the plan is empty): ``"500"`` / ``"429"``
/ ``"401"`` answer that HTTP status with an OpenAI-style error body; ``"garbage"`` a 200
whose content no verdict parser reads (``GARBAGE``); ``"ok"`` a 200 whose content is
``verdict(content of the request's first message)``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GARBAGE = "I like turtles."
_ERRORS = {"500": "boom", "429": "slow down", "401": "bad key"}


@dataclass
class FakeJudge:
    """A running fake judge: its base URL (``.../v1``) and its mutable script and log."""

    url: str
    verdict: Callable[[str], str]
    latency_s: float = 0.0
    plan: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self, record: dict[str, Any]) -> str:
        """Log a request; the action that answers it."""
        with self.lock:
            self.requests.append(record)
            return self.plan.pop(0) if self.plan else "ok"


@contextmanager
def serve_judge(verdict: Callable[[str], str], *, latency_s: float = 0.0) -> Iterator[FakeJudge]:
    """Serve a :class:`FakeJudge` on a free local port until the block ends."""
    judge = FakeJudge(url="", verdict=verdict, latency_s=latency_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (stdlib name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            action = judge.next_action({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            time.sleep(judge.latency_s)
            if action in _ERRORS:
                self._send(int(action), {"error": {"message": _ERRORS[action]}})
                return
            content = GARBAGE if action == "garbage" else judge.verdict(body["messages"][0]["content"])
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    judge.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield judge
    finally:
        server.shutdown()
        server.server_close()
