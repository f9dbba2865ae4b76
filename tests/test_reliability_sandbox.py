"""Sandbox robustness: abusive requests never crash it, slow clients are cut off, service continues.

tests/test_sandbox.py already covers a 404 path, POST -> 405, a 9000-character symbol, a 70 KB path
(414) and one client that stalls half-way through its request line. This file adds the rest: every
other method, >64 KB query strings, invalid percent-encoding, binary garbage and TLS instead of HTTP,
header floods, bad Content-Length, pipelining, control-API abuse, stalls at every stage of a request,
a client that drips one byte at a time, and 150 concurrent slow clients. After each abuse the same
server must answer a normal request.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer
from tests._helpers import wait_until

PATH = "/v1/quote/{}/short-selling/short-interest"
API = PATH.format("HK.00700")
SOCKET_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(rate_limit_calls=0, socket_timeout=SOCKET_TIMEOUT)) as server:
        yield server


def connect(sb: SandboxServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((sb.host, sb.port), timeout=timeout)


def exchange(sb: SandboxServer, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection (or ``timeout``)."""
    received = b""
    with connect(sb, timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before we finish sending
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def statuses(reply: bytes) -> list[int]:
    """Status codes of every answer in ``reply``; an HTTP/0.9-style answer (no status line) by its body."""
    found = [int(code) for code in re.findall(rb"HTTP/1\.[01] ([0-9]{3}) ", reply)]
    return found or [int(code) for code in re.findall(rb"Error code: ([0-9]{3})", reply)]


def assert_healthy(sb: SandboxServer) -> None:
    """The server still answers a normal request with real data, its accept loop alive."""
    response = requests.get(sb.url + API, params={"count": 2}, timeout=5)
    assert response.status_code == 200 and len(response.json()["data"]["items"]) == 2
    assert sb._thread is not None and sb._thread.is_alive()


def request(line: str, *headers: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([line, "Host: sandbox", "Connection: close", *headers])
    return head.encode("latin-1") + b"\r\n\r\n" + body


BIG_QUERY = "&".join(f"p{i}=" + "x" * 20 for i in range(2_200))  # ~60 KB, under the 64 KB line limit
ABUSE: list[object] = [
    # paths
    pytest.param(request("GET /v1/quote//short-selling/short-interest HTTP/1.1"), [404], id="empty-symbol"),
    pytest.param(request(f"GET {API}/extra HTTP/1.1"), [404], id="path-suffix"),
    pytest.param(request("GET /../../etc/passwd HTTP/1.1"), [404], id="traversal"),
    pytest.param(request("GET * HTTP/1.1"), [404], id="asterisk"),
    pytest.param(request(f"GET http://elsewhere{API}?count=1 HTTP/1.1"), [200], id="absolute-form"),
    pytest.param(request(f"GET {PATH.format('HK%2F00700')} HTTP/1.1"), [400], id="encoded-slash"),
    pytest.param(request("GET /_sandbox/../_sandbox/state HTTP/1.1"), [404], id="control-traversal"),
    # methods
    *[
        pytest.param(request(f"{method} {API} HTTP/1.1"), [405], id=f"method-{method}")
        for method in ("PUT", "DELETE", "PATCH", "POST")
    ],
    *[
        pytest.param(request(f"{method} {API} HTTP/1.1"), [501], id=f"method-{method}")
        for method in ("HEAD", "OPTIONS", "TRACE", "CONNECT", "BREW", "get")
    ],
    # query strings
    pytest.param(request(f"GET {API}?count=%FF HTTP/1.1"), [400], id="count-invalid-utf8"),
    pytest.param(request(f"GET {API}?count=1&count=2 HTTP/1.1"), [400], id="count-twice"),
    pytest.param(request(f"GET {API}?count=1&next_key=%E0%80%80 HTTP/1.1"), [400], id="key-overlong-utf8"),
    pytest.param(request(f"GET {API}?count=1&next_key={'A' * 60_000} HTTP/1.1"), [400], id="key-60kb"),
    pytest.param(request(f"GET {API}?count=1&{BIG_QUERY} HTTP/1.1"), [200], id="query-60kb"),
    pytest.param(request(f"GET {API}?count=1&pad={'x' * 70_000} HTTP/1.1"), [414], id="query-70kb"),
    pytest.param(request(f"GET {API}?{'&' * 66_000}count=1 HTTP/1.1"), [414], id="query-65k-ampersands"),
    pytest.param(request(f"GET {API}?count=1;count=2 HTTP/1.1"), [400], id="query-semicolon"),
    # percent-encoding in the path
    pytest.param(request(f"GET {PATH.format('%ZZ')} HTTP/1.1"), [400], id="percent-zz"),
    pytest.param(request(f"GET {PATH.format('HK.%C3%28')} HTTP/1.1"), [400], id="percent-bad-utf8"),
    pytest.param(request(f"GET {PATH.format('HK.%00700')} HTTP/1.1"), [400], id="percent-nul"),
    pytest.param(request(f"GET {PATH.format('%')} HTTP/1.1"), [400], id="percent-alone"),
    pytest.param(request(f"GET {PATH.format('HK.0070%30')}?count=1 HTTP/1.1"), [200], id="percent-digit"),
    pytest.param(request(f"GET {PATH.format('US.%C5%BF')} HTTP/1.1"), [400], id="percent-long-s"),
    # garbage instead of HTTP
    pytest.param(b"\x00\xff\xfe" * 200 + b"\r\n\r\n", [400], id="binary-line"),
    pytest.param(bytes(range(256)) * 4, [400], id="all-bytes"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 300, [], id="tls-hello"),
    pytest.param(b"\r\n" * 1000, [], id="only-newlines"),
    pytest.param(b"GET\r\n\r\n", [400], id="method-only"),
    pytest.param(b"GET / HTTP/9.9\r\n\r\n", [505], id="http-9.9"),
    pytest.param(b"GET / HTTP/1.1.1\r\n\r\n", [400], id="bad-version"),
    pytest.param(b"GET " + b"A" * 70_000 + b"\r\n", [414], id="line-70kb-no-version"),
    # headers and bodies
    pytest.param(request(f"GET {API} HTTP/1.1", *[f"X-{i}: y" for i in range(150)]), [431], id="150-headers"),
    pytest.param(request(f"GET {API} HTTP/1.1", "X-Big: " + "y" * 70_000), [431], id="header-70kb"),
    pytest.param(request(f"GET {API} HTTP/1.1", "Content-Length: abc"), [413], id="length-abc"),
    pytest.param(request(f"GET {API} HTTP/1.1", "Content-Length: -5"), [413], id="length-negative"),
    pytest.param(request(f"GET {API} HTTP/1.1", "Content-Length: " + "9" * 30), [413], id="length-huge"),
    pytest.param(request(f"GET {API} HTTP/1.1", "Authorization: Bearer \xff\xfe"), [200], id="auth-latin1"),
    pytest.param(request(f"GET {API} HTTP/1.1", "Transfer-Encoding: chunked", body=b"zz\r\n"), [200, 400]),
    # control API abuse
    pytest.param(
        request("POST /_sandbox/config HTTP/1.1", "Content-Length: 200000", body=b"[" * 200_000),
        [400],
        id="control-deep-json",
    ),
    pytest.param(
        request("POST /_sandbox/config HTTP/1.1", "Content-Length: 2000000", body=b"x" * 2_000_000),
        [413],
        id="control-2mb",
    ),
    pytest.param(
        request("POST /_sandbox/config HTTP/1.1", "Content-Length: 16", body=b'{"seed": "1e400"}'[:16]),
        [400],
        id="control-cut-json",
    ),
    pytest.param(
        request("POST /_sandbox/config HTTP/1.1", "Content-Length: 16", body=b'{"seed": 1e9999}'),
        [400],
        id="control-infinite-seed",
    ),
    pytest.param(
        request("POST /_sandbox/publish?market=%FF HTTP/1.1", "Content-Length: 0"), [400], id="publish-bad"
    ),
    pytest.param(request("GET /_sandbox/history?symbol=%00 HTTP/1.1"), [400], id="history-nul"),
]


@pytest.mark.parametrize(("data", "expected"), ABUSE)
def test_abusive_request_then_normal_service(sb: SandboxServer, data: bytes, expected: list[int]) -> None:
    """``expected``: the acceptable statuses of the first answer; [] = dropped without an answer."""
    reply = exchange(sb, data)
    got = statuses(reply)
    assert (got[0] in expected) if got else (expected == []), reply[:300]
    assert b"sandbox internal error" not in reply
    assert_healthy(sb)


def test_pipelined_requests_all_answered(sb: SandboxServer) -> None:
    one = f"GET {API}?count=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    last = f"GET {API}?count=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    reply = exchange(sb, one * 5 + last)
    assert statuses(reply) == [200] * 6
    assert_healthy(sb)


# ------------------------------------------------------------------------------------------------
# Stalls and slow clients: every one is cut off within bounded time
# ------------------------------------------------------------------------------------------------


def closed_by_server(sock: socket.socket, guard: float) -> None:
    """Read (and discard any answer) until the server closes ``sock``; ``guard`` only stops a hang."""
    sock.settimeout(guard)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept a stalled connection open for more than {guard} s")


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"", id="idle-connection"),
        pytest.param(b"GET /v1/quote/HK.00700/short-sel", id="half-request-line"),
        pytest.param(f"GET {API} HTTP/1.1\r\nHost: x\r\nX-Half: ".encode(), id="half-headers"),
        pytest.param(
            b'POST /_sandbox/config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"seed"', id="half-body"
        ),
        pytest.param(
            f"GET {API} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n".encode(), id="missing-body"
        ),
    ],
)
def test_stalled_client_is_dropped(sb: SandboxServer, partial: bytes) -> None:
    with connect(sb) as sock:
        sock.sendall(partial)
        assert_healthy(sb)  # others are served while this one stalls
        closed_by_server(sock, 20 * SOCKET_TIMEOUT)
    assert_healthy(sb)


def test_dripping_client_is_cut_off(sb: SandboxServer) -> None:
    """One byte every 0.6 x socket_timeout: each read succeeds in time, but the request never ends.

    The per-read socket timeout alone would let it hold a server thread forever; the request as a
    whole (line, headers, body) must arrive within 2 x socket_timeout.
    """
    data = request(f"GET {API} HTTP/1.1", *[f"X-Drip-{i}: {'y' * 20}" for i in range(20)])
    closed = False
    with connect(sb) as sock:
        sent = 0
        with contextlib.suppress(OSError):
            while sent < len(data):
                sock.sendall(data[sent : sent + 1])
                sent += 1
                # The drip's pace (the behaviour under test), and a look whether the server hung up.
                if select.select([sock], [], [], 0.6 * SOCKET_TIMEOUT)[0] and sock.recv(1024) == b"":
                    closed = True
                    break
    assert closed and sent < len(data), "the whole request was accepted at one byte per 0.3 s"
    # Within the request deadline of 2 x socket_timeout, the drip gets through only a few bytes.
    assert sent <= 2 / 0.6 + 2, f"{sent} bytes accepted before the cut-off"
    assert_healthy(sb)


def test_many_concurrent_slow_clients(sb: SandboxServer) -> None:
    """150 clients stall at once: normal requests are still served at once; every stall is dropped."""
    baseline = threading.active_count()
    slow = [connect(sb) for _ in range(150)]
    try:
        for index, sock in enumerate(slow):
            sock.sendall(
                [b"", b"GET /v1/quote/HK.0", f"GET {API} HTTP/1.1\r\nHost: x\r\n".encode()][index % 3]
            )
        with requests.Session() as session:
            for _ in range(20):
                response = session.get(sb.url + API, params={"count": 1}, timeout=5)
                assert response.status_code == 200
        for sock in slow:
            closed_by_server(sock, 20 * SOCKET_TIMEOUT)
    finally:
        for sock in slow:
            sock.close()
    assert wait_until(lambda: threading.active_count() <= baseline + 2), (
        "handler threads of dropped clients linger"
    )
    assert_healthy(sb)


def test_clients_that_vanish_mid_answer(sb: SandboxServer) -> None:
    """Clients time out during an injected delay, or close before reading a large answer."""
    answered = sum(sb.stats()["by_status"].values())
    sb.configure(delay_rate=1.0, delay_seconds=0.3)
    try:
        for _ in range(10):
            with pytest.raises(requests.exceptions.ReadTimeout):
                requests.get(sb.url + API, timeout=0.05)
    finally:
        sb.configure(delay_rate=0.0)
    for _ in range(10):
        with connect(sb) as sock:
            sock.sendall(request("GET /_sandbox/history?symbol=HK.00700 HTTP/1.1"))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # The delayed answers are then written into closed sockets: wait until all ten are answered.
    assert wait_until(lambda: sum(sb.stats()["by_status"].values()) >= answered + 10)
    assert_healthy(sb)
    assert sb.stats()["faults"]["delay"] == 10
