"""The HTTP server: uvicorn with the API's limits. ``guardtune serve`` and the tests start
the API through :func:`run` (``python -m api.server``), so both get the same limits:

* request line + headers are bounded (``GUARDTUNE_MAX_HEADER_BYTES``): h11 stops buffering
  at the limit and the client gets ``431`` with an OpenAI-shaped error body. The server then
  half-closes and reads on, discarding, for up to :data:`LINGER_BYTES` / :data:`LINGER_S`
  (a "lingering close"): a client that sends its whole request before reading the answer
  (most do) reads the 431 instead of a reset connection, and none can make the server read
  an unbounded header;
* endpoint threads: ``GUARDTUNE_API_THREADS`` (set in ``api.app``'s lifespan), the database
  pool sized from the same number (``core.db.pool_size``)."""

from __future__ import annotations

import argparse
import json

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.logging import configure_logging
from core.settings import Settings, get_settings

HEADER_TOO_LARGE = json.dumps(
    {
        "error": {
            "message": "The request line and headers are larger than this server accepts.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_header_fields_too_large",
        }
    }
).encode()


# An idle keep-alive connection is closed after this long. uvicorn's 5 s races clients
# whose event loop lags under load: the server closes as the next request goes out.
KEEP_ALIVE_S = 30
# After a 431: what the server still reads (and discards) before it closes the connection.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_S = 5.0


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 431 (not 400) when h11 gave up on a request head
    longer than ``h11_max_incomplete_event_size``, then closing lingeringly (see the module)."""

    linger_left: int | None = None  # bytes still to discard before closing; None: not lingering

    def data_received(self, data: bytes) -> None:
        if self.linger_left is None:
            super().data_received(data)
            return
        self.linger_left -= len(data)
        if self.linger_left <= 0:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        limit = self.config.h11_max_incomplete_event_size  # :func:`server` sets it
        if self.conn.their_state is not h11.ERROR or limit is None or len(buffered) <= limit:
            super().send_400_response(msg)
            return
        self.logger.warning("Request header fields too large.")
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large"),
            h11.Data(data=HEADER_TOO_LARGE),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the answer, then FIN; what the client still sends is discarded
        self.linger_left = LINGER_BYTES
        self.loop.call_later(LINGER_S, self.transport.close)


def config(
    settings: Settings, host: str | None = None, port: int | None = None, log_level: str | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_level=(log_level or settings.log_level).lower(),
        proxy_headers=True,
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_config=None,  # uvicorn's lines go through the app's structured logging (core.logging)
    )


def run(host: str | None = None, port: int | None = None, log_level: str | None = None) -> None:
    """Serve the API in this process until it is stopped."""
    configure_logging()
    uvicorn.Server(config(get_settings(), host, port, log_level)).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the guardtune API (no migration, no worker).")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-level")
    args = parser.parse_args()
    run(args.host, args.port, args.log_level)
