"""A hostile HTTP server on 127.0.0.1 that never finishes an answer (fixture ``drip_server``), a
heartbeat that shows whether an event loop was blocked, and the threads a test may leave behind.

It reads each request, then sends a status line and one header byte every ``interval`` seconds, so a
client's per-read socket timeout never fires: only a deadline of the client's own ends the wait. Each
connection is cut after ``hold`` seconds, and all of them when the fixture ends, so the client threads a
test abandons always finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest


class DripServer:
    """Accepts HTTP requests on 127.0.0.1 and answers them one byte per ``interval`` s, never completely."""

    def __init__(self, interval: float = 0.2, hold: float = 60.0) -> None:
        self.interval = interval
        self.hold = hold
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever a connection opens or closes
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0  # connections accepted so far
        self.max_open = 0  # most connections open at the same time
        self._acceptor = threading.Thread(target=self._accept_loop, name="drip-accept", daemon=True)
        self._acceptor.start()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._clients)

    def wait_for_open(self, count: int, limit: float = 20.0) -> bool:
        """Wait until ``count`` connections are open at once (``limit`` s only guards against a hang)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._clients) >= count, timeout=limit)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self._clients.add(client)
                self.accepted += 1
                self.max_open = max(self.max_open, len(self._clients))
                self._changed.notify_all()
            thread = threading.Thread(target=self._drip, args=(client,), name="drip-client", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drip(self, client: socket.socket) -> None:
        end = time.monotonic() + self.hold
        try:
            client.settimeout(5.0)
            received = b""
            while b"\r\n\r\n" not in received and len(received) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    return
                received += chunk
            client.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            while time.monotonic() < end and not self._stop.wait(self.interval):
                client.sendall(b"a")
        except OSError:
            pass
        finally:
            with self._changed:
                self._clients.discard(client)
                self._changed.notify_all()
            with contextlib.suppress(OSError):
                client.close()

    def close(self) -> None:
        """Stop accepting, cut every connection (the clients' reads fail at once) and join the threads."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def drip_server() -> Iterator[DripServer]:
    """A server on 127.0.0.1 that holds every request open, dripping a byte every 0.2 s (up to 60 s)."""
    server = DripServer()
    try:
        yield server
    finally:
        server.close()


async def heartbeat(gaps: list[float], stop: asyncio.Event) -> None:
    """Tick every 20 ms until ``stop`` and record the gaps: a blocked event loop shows as one long gap."""
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.02)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


def our_threads() -> set[threading.Thread]:
    """Live threads that are not the sandbox's (its own, and its socketserver's per-connection handlers,
    which end on their own once the client is gone): the SDK's and the triggers' own."""
    return {
        t
        for t in threading.enumerate()
        if t.is_alive()
        and not t.name.startswith(("sandbox", "MainThread"))
        and not t.name.endswith("(process_request_thread)")
    }
