"""Bounds on one HTTP response: a total deadline (connect to last byte) and a byte cap after decompression.

``requests``' own ``timeout`` bounds each socket operation, so a server that drips a header or a body one
byte a second keeps a request alive for ever. :class:`DeadlineAdapter` treats a request's ``timeout`` as
the whole response's deadline: connect gets that long, then every read of the status line, headers and
body is bounded by what is left of it. :func:`read_body` reads a (streamed) body with a byte cap on the
wire and decodes ``Content-Encoding`` itself with the same cap, so a gzip bomb stops at the cap instead
of inflating gigabytes.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    import requests
    from urllib3.poolmanager import PoolManager

_CURRENT = threading.local()  # .deadline: monotonic time the response in progress must be complete by
CHUNK = 64 * 1024


class ResponseTooLarge(Exception):
    """The body (on the wire or decompressed) is larger than the cap."""


class BadEncoding(Exception):
    """The body does not decode as its ``Content-Encoding`` says."""


class _DeadlineSocket:
    """The socket a response is read from, every read bounded by what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def recv_into(self, *args: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the response's deadline passed")
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining if previous is None else min(previous, remaining))
        try:
            return self._sock.recv_into(*args)
        finally:
            self._sock.settimeout(previous)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        # What socket.makefile("rb") does, reading through this wrapper. The real socket counts the
        # reference so that closing the connection leaves the response readable, as without us.
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE if buffering < 1 else buffering)

    def _decref_socketios(self) -> None:
        self._sock._decref_socketios()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineMixin:
    """Reads the response of a request sent inside :meth:`DeadlineAdapter.send` under its deadline."""

    sock: Any

    def getresponse(self) -> Any:
        deadline = getattr(_CURRENT, "deadline", None)
        real = self.sock
        if deadline is None or real is None:
            return super().getresponse()  # type: ignore[misc]
        wrapper = _DeadlineSocket(real, deadline)
        self.sock = wrapper
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            if self.sock is wrapper:  # http.client sets None when the server closes the connection
                self.sock = real


class _HTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _use_deadline_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}  # type: ignore[assignment]
    return manager


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose numeric ``timeout`` is a deadline for the whole response, not per socket read.

    Connecting may take all of it; the status line, headers and (also when streamed) body must arrive
    before it ends, else ``requests.ReadTimeout`` / ``urllib3.exceptions.ReadTimeoutError``. Name
    resolution is not bounded by it (the resolver offers no timeout).
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_deadline_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        return _use_deadline_pools(super().proxy_manager_for(proxy, **proxy_kwargs))

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            return super().send(request, *args, **kwargs)
        _CURRENT.deadline = time.monotonic() + timeout
        try:
            return super().send(request, *args, **kwargs)
        finally:
            _CURRENT.deadline = None


def read_body(response: requests.Response, limit: int) -> bytes:
    """The body of a streamed response, decoded per ``Content-Encoding``, at most ``limit`` bytes.

    Raises :class:`ResponseTooLarge` past the cap (announced, on the wire or decompressed),
    :class:`BadEncoding` for an unknown or corrupt encoding; read errors and timeouts propagate as
    urllib3 raises them.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"it announces {int(declared):,} bytes")
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = response.raw.read(CHUNK, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge(f"more than {limit:,} bytes arrived")
        parts.append(chunk)
    body = b"".join(parts)
    encodings = [e.strip().lower() for e in response.headers.get("Content-Encoding", "").split(",")]
    for encoding in reversed([e for e in encodings if e and e != "identity"]):
        body = _decode(body, encoding, limit)
    return body


def _decode(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return _inflate(data, 16 + zlib.MAX_WBITS, limit)
    if encoding == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send
        try:
            return _inflate(data, zlib.MAX_WBITS, limit)
        except BadEncoding:
            return _inflate(data, -zlib.MAX_WBITS, limit)
    raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r}")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress ``data`` (all its gzip members) without ever holding more than ``limit + 1`` bytes."""
    out = bytearray()
    try:
        while data:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit or inflater.unconsumed_tail:
                raise ResponseTooLarge(f"it inflates to more than {limit:,} bytes")
            out += inflater.flush()
            if not inflater.eof:
                raise BadEncoding("the compressed body is truncated")
            data = inflater.unused_data
    except zlib.error as err:
        raise BadEncoding(f"the body is not valid {'gzip' if wbits > 16 else 'deflate'} ({err})") from None
    if len(out) > limit:
        raise ResponseTooLarge(f"it inflates to more than {limit:,} bytes")
    return bytes(out)
