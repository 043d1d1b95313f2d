"""The controller's HTTP listener: a few routes on the standard library's threading server.

Routes are (method, path) -> handler(headers, body) -> Reply; nothing else is served
(404, 405). Bodies are read only for POST, up to `MAX_BODY` bytes (413 beyond, without
reading it), within `BODY_SECONDS` in all (408 after: a client trickling a byte every few
seconds does not hold its buffer for ever), and at most `MAX_BODIES` at once (503
beyond), so slow or huge clients cannot take the memory; GET (the probes) reads no body
and is never refused for them. Header names reach handlers lower-cased. No request is
logged here: the controller logs what it did with one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

__all__ = ["MAX_BODIES", "MAX_BODY", "Listener", "Reply", "Route"]

MAX_BODY: Final = 1 << 20
MAX_BODIES: Final = 16
BODY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[Mapping[str, str], bytes], Reply]


class Listener:
    """Serve `routes` on host:port in a daemon thread until `close()`."""

    def __init__(self, host: str, port: int, routes: Mapping[tuple[str, str], Route]) -> None:
        table = dict(routes)
        bodies = threading.BoundedSemaphore(MAX_BODIES)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                route = table.get((method, path))
                if route is None:
                    known = any(p == path for _, p in table)
                    self._send(Reply(405 if known else 404, b"not found\n"))
                    return
                body = self._post_body() if method == "POST" else b""
                if isinstance(body, Reply):
                    self.close_connection = True
                    self._send(body)
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    reply = route(headers, body)
                except Exception:  # a bug in a handler: 500, and the listener lives on
                    reply = Reply(500, b"internal error\n")
                self._send(reply)

            def _post_body(self) -> bytes | Reply:
                """The body, or the refusal: too large, too many at once, too slow."""
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    return Reply(413, b"body too large\n")
                if not bodies.acquire(blocking=False):
                    return Reply(503, b"busy\n")
                try:
                    got = _read_body(self.connection, self.rfile, length, self.timeout)
                finally:
                    bodies.release()
                return Reply(408, b"body too slow\n") if got is None else got

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="regctl-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _read_body(conn: socket.socket, rfile: Any, length: int, timeout: float) -> bytes | None:
    """`length` bytes from `rfile`, or None when they do not arrive within BODY_SECONDS
    (the socket's own timeout is per recv: a trickle would never trip it)."""
    deadline = time.monotonic() + BODY_SECONDS
    chunks: list[bytes] = []
    left = length
    try:
        while left > 0:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            conn.settimeout(wait)
            chunk = rfile.read1(min(left, 1 << 16))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:  # timed out, or the client went away
        return None
    finally:
        conn.settimeout(timeout)
    return b"".join(chunks)
