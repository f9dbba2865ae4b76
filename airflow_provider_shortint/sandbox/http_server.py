"""HTTP plumbing of the sandbox (http.server): a threaded server whose handler bounds slow clients,
sends truncated bodies on request, and hands every request to one ``Router``."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import socketserver
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from airflow_provider_shortint.sandbox.config import SandboxConfig

MAX_BODY: Final = 1 << 20


@dataclass
class Reply:
    """One HTTP response; ``truncate`` sends only half the body and then closes the connection."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    truncate: bool = False
    delay: float = 0.0


def json_reply(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])


def api_error(ret_code: int, code: str, message: str, status: int = 200) -> Reply:
    """An API error in the envelope of DESIGN §2."""
    payload = {"ret_code": ret_code, "ret_msg": message, "error": {"code": code, "message": message}}
    return json_reply(status, payload)


def gateway_error(
    status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
) -> Reply:
    """A gateway-level error (401, 404, 405, 429...): JSON ``{"error": ...}`` without ret_code."""
    return json_reply(status, {"error": {"code": code, "message": message}}, headers)


class Router(Protocol):
    """What the HTTP server serves: the settings it reads and one call per request."""

    @property
    def config(self) -> SandboxConfig: ...

    def route(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Reply: ...

    def pause(self, seconds: float) -> None: ...


class _Handler(BaseHTTPRequestHandler):
    """Routes requests; never lets an exception escape, logs only when verbose."""

    server: HTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True

    #: Monotonic time by which the current request (line, headers, body) must have arrived, or None.
    read_deadline: float | None = None

    def version_string(self) -> str:
        return "shortint-sandbox/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.router.config.socket_timeout)
        # Reads go through _DeadlineReader: the socket timeout bounds each read, the deadline the request.
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self))

    def handle_one_request(self) -> None:
        """One request; it must arrive whole within 2 x socket_timeout of the wait for it starting.

        The per-read socket timeout alone lets a client that sends a byte now and then (slowloris) hold
        a thread forever. The idle wait of a keep-alive connection stays bounded by the socket timeout.
        """
        self.read_deadline = time.monotonic() + 2 * self.server.router.config.socket_timeout
        try:
            super().handle_one_request()
        finally:
            self.read_deadline = None

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.router.config.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes | None:
        """The request body (None when too large or unreadable)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        router = self.server.router
        try:
            body = self._read_body()
            self.read_deadline = None  # the request is in: injected delays and the answer are not limited
            if body is None:
                self.close_connection = True
                self._send(gateway_error(413, "bad_request", "request body missing, malformed or too large"))
                return
            parts = urlsplit(self.path)
            reply = router.route(method, parts.path, parts.query, self.headers, body)
            if reply.delay > 0:
                router.pause(reply.delay)
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # the server must survive anything
            self.close_connection = True
            if router.config.verbose:
                sys.stderr.write(f"sandbox: internal error: {err!r}\n")
            with contextlib.suppress(OSError):
                self._send(api_error(-5, "internal_error", "sandbox internal error", 500))

    def _send(self, reply: Reply) -> None:
        """Write a reply; a truncated one announces the full Content-Length, sends half and closes."""
        self.send_response(reply.status)
        names = {name.lower() for name, _ in reply.headers}
        for name, value in reply.headers:
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(reply.body)))
        if reply.truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body[: len(reply.body) // 2] if reply.truncate else reply.body)
        self.wfile.flush()


class _DeadlineReader(io.RawIOBase):
    """The raw socket reader of a handler: each read waits at most the socket timeout and never past
    the handler's ``read_deadline`` (then TimeoutError, which http.server and ``_dispatch`` handle by
    dropping the connection)."""

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self._handler = handler
        self._sock: socket.socket = handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        timeout = self._handler.server.router.config.socket_timeout
        deadline = self._handler.read_deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request did not arrive in time")
            timeout = min(timeout, remaining)
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._handler.server.router.config.socket_timeout)


class HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server bound to one router; skips the reverse DNS lookup of ``HTTPServer``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        self.router = router
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.router.config.verbose:
            super().handle_error(request, client_address)
