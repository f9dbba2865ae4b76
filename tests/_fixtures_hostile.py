"""A hostile HTTP server on 127.0.0.1: it answers each request with whatever a test scripts, byte by byte.

Unlike the sandbox it keeps no contract: a behaviour is a function ``(conn, request, server)`` that writes
raw bytes (drip-fed headers or bodies, gzip bombs, endless pages, echoed tokens). Every loop is bounded
in count and time (``MAX_SECONDS``) and stops when the server stops; the server counts requests,
connections and the bytes each behaviour managed to send before the client went away.
:class:`RequestLog` shows the same requests from the client's side (an aiohttp ``TraceConfig`` given to
the hook): URLs, headers, connections opened.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MAX_SECONDS = 20.0  # no behaviour writes for longer than this
HEAD_LIMIT = 64 * 1024


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]


Behaviour = Callable[[socket.socket, Request, "HostileServer"], None]


@dataclass
class HostileServer:
    """Threaded one-response-per-connection HTTP server; ``behave`` sets what it does next."""

    tls: ssl.SSLContext | None = None
    raw: Callable[[socket.socket], None] | None = None  # handles the raw connection instead of HTTP
    https: bool = False  # the URL says https even without ``tls`` (for ``raw`` handlers)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    sent: list[int] = field(default_factory=list)  # bytes written per response before it ended
    behaviour: Behaviour | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="hostile-accept", daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls or self.https else 'http'}://127.0.0.1:{self.port}"

    def behave(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def settle(self) -> None:
        """Wait (bounded) until every behaviour started so far has finished writing."""
        for thread in list(self._threads):
            thread.join(timeout=MAX_SECONDS + 5)

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=MAX_SECONDS + 5)
        self._sock.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, raw: socket.socket) -> None:
        conn = raw
        if self.raw is not None:
            raw.settimeout(5)
            self.raw(raw)
            return
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
                if not head[:1].isalpha():  # e.g. a TLS ClientHello: answer as a plain HTTP server does
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    return
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            method, target, _ = [*lines[0].split(" "), "", ""][:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            request = Request(method, target, headers)
            with self._lock:
                self.requests.append(request)
            if self.behaviour is not None:
                self.behaviour(conn, request, self)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            conn.close()

    # -- building blocks for behaviours -----------------------------------------------------------------

    def write(self, conn: socket.socket, data: bytes, *, drip: float = 0.0) -> int:
        """Send ``data`` (one byte every ``drip`` seconds if set); returns the bytes the client took."""
        if not drip:
            try:
                conn.sendall(data)
            except OSError:
                return 0
            self._count(len(data))
            return len(data)
        ends = time.monotonic() + MAX_SECONDS
        written = 0
        for byte in data:
            if self._stop.is_set() or time.monotonic() > ends:
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
            written += 1
            time.sleep(drip)
        self._count(written)
        return written

    def _count(self, written: int) -> None:
        with self._lock:
            self.sent.append(written)


def head(status: int = 200, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    """A status line and headers (``Connection: close``; ``Content-Length`` if given)."""
    lines = [f"HTTP/1.1 {status} X", "Connection: close", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """A plain answer with a Content-Length."""

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        server.write(conn, head(status, headers, len(body)) + body)

    return behaviour


def chunked(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """An answer in chunked transfer encoding (no length announced up front)."""

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        hdrs = {"Transfer-Encoding": "chunked", **(headers or {})}
        parts = [head(status, hdrs)]
        for at in range(0, len(body), 256 * 1024):
            piece = body[at : at + 256 * 1024]
            parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        parts.append(b"0\r\n\r\n")
        for part in parts:
            if server.write(conn, part) < len(part):
                return

    return behaviour


def envelope(items: list[dict[str, Any]], next_key: str | None = "-1") -> bytes:
    return json.dumps(
        {"ret_code": 0, "ret_msg": "success", "data": {"items": items, "next_key": next_key}}
    ).encode()


def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzipped twice (``Content-Encoding: gzip, gzip``): a few KB on the wire."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [inner.compress(block) for _ in range(inflated // len(block))]
    parts.append(inner.flush())
    return gzip.compress(b"".join(parts), 9)


class RequestLog:
    """What the hook's session sent, seen by the client (pass ``trace`` as the hook's ``trace_configs``)."""

    def __init__(self) -> None:
        import aiohttp

        self.urls: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0  # new connections opened (keep-alive reuses them)
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._started)
        self.trace.on_connection_create_end.append(self._connected)

    async def _started(self, session: Any, context: Any, params: Any) -> None:
        self.urls.append(str(params.url))
        self.headers.append(dict(params.headers))

    async def _connected(self, session: Any, context: Any, params: Any) -> None:
        self.connections += 1


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def self_signed_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1 (clients do not trust it)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture
def hostile_tls(self_signed_tls: ssl.SSLContext) -> Iterator[HostileServer]:
    server = HostileServer(tls=self_signed_tls)
    yield server
    server.close()


def cut_handshake(conn: socket.socket) -> None:
    """Read a TLS ClientHello and close: the EOF a client sees when a load balancer restarts
    mid-handshake (reading it all first makes the close a FIN, not a RST)."""
    try:
        conn.recv(65536)
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        conn.close()


@pytest.fixture
def handshake_cutter() -> Iterator[HostileServer]:
    """An https:// server that cuts every TLS handshake; counts connections."""
    server = HostileServer(raw=cut_handshake, https=True)
    yield server
    server.close()
