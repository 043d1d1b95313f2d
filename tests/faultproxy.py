"""A small fault-injecting HTTP proxy on loopback, between regctl and a real MLflow server.

Each request is matched against the proxy's rules in order; the first rule that matches
decides what happens: forward it, answer with a status without forwarding, forward it
and then drop the response (the server has committed, the client never hears), or hang.
Every request is logged, and `on_forwarded` lets a test act (e.g. SIGKILL the client)
right after the server answered a request; inside it, `request_body()` is that request's
body.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def is_write(method: str, path: str) -> bool:
    """A request that changes state (searches are POSTs too, but only read)."""
    return method in WRITE_METHODS and not path.split("?")[0].endswith("/search")


@dataclass
class Rule:
    """`action`: forward | status | drop | hang. `times`: how often (None = always)."""

    method: str
    path_suffix: str
    action: str
    status: int = 503
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.method in ("*", method)) and path.split("?")[0].endswith(self.path_suffix)


class FaultProxy:
    """Start with `FaultProxy(upstream_url)`; use `.url` as the tracking URI."""

    def __init__(self, upstream: str) -> None:
        parsed = urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []  # (method, path, what happened)
        self.on_forwarded: Callable[[str, str, int], None] | None = None
        self.lock = threading.Lock()
        self._local = threading.local()
        self._hung: list[socket.socket] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._take(self.command, self.path)
                action = rule.action if rule else "forward"
                with proxy.lock:
                    proxy.log.append((self.command, self.path, action))
                if action == "status" and rule is not None:
                    data = rule.body.encode()
                    self.send_response(rule.status)
                    for k, v in rule.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if action == "hang":
                    proxy._hung.append(self.connection)
                    time.sleep(3600)
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                if proxy.on_forwarded is not None:
                    proxy._local.body = body
                    proxy.on_forwarded(self.command, self.path, status)
                if action == "drop":
                    # the server did the work; the client's connection dies unanswered
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def _forward(
        self, method: str, path: str, headers: object, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            fwd = {
                k: v
                for k, v in headers.items()  # type: ignore[attr-defined]
                if k.lower() not in ("host", "connection", "content-length")
            }
            fwd["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def request_body(self) -> bytes:
        """The body of the request whose `on_forwarded` call is running (in its thread)."""
        return bytes(getattr(self._local, "body", b""))

    def add(self, *rules: Rule) -> None:
        with self.lock:
            self.rules.extend(rules)

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def requests_to(self, suffix: str, method: str = "*") -> list[tuple[str, str, str]]:
        with self.lock:
            return [
                e for e in self.log if e[1].split("?")[0].endswith(suffix) and method in ("*", e[0])
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for sock in self._hung:
            with contextlib.suppress(OSError):
                sock.close()
