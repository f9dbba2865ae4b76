"""A hostile OpenD gateway: the sandbox's frame server (futu-api's own framing and ``_pb2`` messages) with a
dispatcher that misbehaves as a test tells it to, and helpers to see what of ours is left after a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_shortint.budget import RateLimiter
from airflow_provider_shortint.sandbox import futu_sdk
from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.opend_wire import (
    INIT_CONNECT,
    Frame,
    FrameServer,
    Session,
    encode,
    frame,
)
from tests._helpers import wait_until

GET_SHORT_INTEREST = 3249
KEEP_ALIVE = 1004
TWO_GIB = 2 * 1024**3


@dataclass
class Behaviour:
    """What the gateway does. ``init``: "ok", "silent" (never answers), "refuse" (retType -1 with
    ``message``). ``answer`` (Qot_GetShortInterest): "page" (``items`` HK items, newest first), "error"
    (retType -1 with ``message``), "huge" (a header declaring ``declared`` bytes, then zeros until the
    client leaves or ``stream_limit`` bytes went out, then the connection closes), "silent", "close".
    ``only``: a security code (e.g. "00005") the misbehaviour is kept for; others get a 3-item page."""

    init: str = "ok"
    answer: str = "page"
    items: int = 3
    message: str = ""
    declared: int = TWO_GIB
    stream_limit: int = 64 * 1024 * 1024
    only: str | None = None


@dataclass
class Seen:
    """What the gateway received and sent (counted under its lock)."""

    init_connects: int = 0
    requests: int = 0
    streamed: int = 0
    nums: list[int | None] = field(default_factory=list)


class HostileGateway:
    """An OpenD gateway on 127.0.0.1 that behaves as :attr:`behaviour` says (replaced per test)."""

    def __init__(self) -> None:
        self.sdk = futu_sdk.load()
        self.behaviour = Behaviour()
        self.seen = Seen()
        self.request_seen = threading.Event()
        self._lock = threading.Lock()
        self._conn_ids = 0
        self._config = SandboxConfig(rate_limit_calls=0, socket_timeout=5.0)
        self._server = FrameServer(("127.0.0.1", 0), self)
        self._server.start()

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def port(self) -> int:
        return self._server.port

    def behave(self, **changes: Any) -> None:
        """A fresh behaviour (defaults plus ``changes``) and fresh counters."""
        with self._lock:
            self.behaviour = Behaviour(**changes)
            self.seen = Seen()
            self.request_seen.clear()

    def close(self) -> None:
        self._server.stop()

    # -- the dispatcher --------------------------------------------------------------------------------------

    def serve(self, session: Session, request: Frame) -> None:
        pb = self.sdk.pb
        behaviour = self.behaviour
        if request.proto_id == INIT_CONNECT:
            with self._lock:
                self.seen.init_connects += 1
            if behaviour.init == "silent":
                return
            if behaviour.init == "refuse":
                session.send(
                    encode(
                        self.sdk, request, pb.InitConnect_pb2.Response(retType=-1, retMsg=behaviour.message)
                    )
                )
                return
            with self._lock:
                self._conn_ids += 1
                conn_id = self._conn_ids
            response = pb.InitConnect_pb2.Response(retType=0, retMsg="")
            s2c = response.s2c
            s2c.serverVer, s2c.loginUserID, s2c.connID = 1000, 10_000_001, conn_id
            s2c.connAESKey, s2c.keepAliveInterval = "0" * 16, 10
            session.send(encode(self.sdk, request, response))
        elif request.proto_id == KEEP_ALIVE:
            session.send(encode(self.sdk, request, pb.KeepAlive_pb2.Response(retType=0)))
        elif request.proto_id == GET_SHORT_INTEREST:
            self._short_interest(session, request, behaviour)

    def _short_interest(self, session: Session, request: Frame, behaviour: Behaviour) -> None:
        module = self.sdk.pb.Qot_GetShortInterest_pb2
        parsed = module.Request()
        parsed.ParseFromString(request.body)
        with self._lock:
            self.seen.requests += 1
            self.seen.nums.append(parsed.c2s.num if parsed.c2s.HasField("num") else None)
        self.request_seen.set()
        if behaviour.only is not None and parsed.c2s.security.code != behaviour.only:
            session.send(encode(self.sdk, request, hk_page(module, 3)))
        elif behaviour.answer == "silent":
            return
        elif behaviour.answer == "close":
            session.close()
        elif behaviour.answer == "error":
            session.send(encode(self.sdk, request, module.Response(retType=-1, retMsg=behaviour.message)))
        elif behaviour.answer == "page":
            session.send(encode(self.sdk, request, hk_page(module, behaviour.items)))
        elif behaviour.answer == "huge":
            self._stream(session, request, behaviour)

    def _stream(self, session: Session, request: Frame, behaviour: Behaviour) -> None:
        """A header declaring ``declared`` bytes, then zeros as fast as the client takes them."""
        session.send(
            frame(self.sdk, request.proto_id, request.fmt, request.serial, b"", declared=behaviour.declared)
        )
        chunk = bytes(256 * 1024)
        sent = 0
        while not session.closed and sent < behaviour.stream_limit:
            session.send(chunk)
            sent += len(chunk)
        with self._lock:
            self.seen.streamed = sent
        session.close()


def hk_page(module: Any, count: int) -> Any:
    """A successful Qot_GetShortInterest Response with ``count`` HK items, one trading day apart."""
    response = module.Response(retType=0)
    day = dt.date(2026, 5, 15)
    for _ in range(count):
        stamp = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) - 8 * 3600
        response.s2c.hkItemList.add(
            timestamp=stamp,
            timestampStr=day.isoformat(),
            closePrice=456.4,
            lastClosePrice=454.9,
            aggregatedShort=54_177_721,
            aggregatedShortRatio=0.59,
        )
        day -= dt.timedelta(days=1)
    response.s2c.nextKey = "-1"
    return response


@pytest.fixture(scope="module")
def hostile_opend(futu_quiet: None) -> Iterator[HostileGateway]:
    """One hostile gateway per test module; each test sets its behaviour with ``behave``."""
    gateway = HostileGateway()
    try:
        yield gateway
    finally:
        gateway.close()


class CountingLimiter(RateLimiter):
    """A real in-process budget that also counts the slots taken and not yet given back (``acquire``
    takes its slot through ``try_acquire``)."""

    def __init__(self) -> None:
        super().__init__(1000, 1.0)
        self.in_flight = 0

    def try_acquire(self) -> str | tuple[float, str]:
        taken = super().try_acquire()
        if isinstance(taken, str):
            self.in_flight += 1
        return taken

    def release(self, slot_id: str) -> None:
        self.in_flight -= 1
        super().release(slot_id)


def open_sockets() -> int:
    """Sockets this process has open (from /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@dataclass
class Leftovers:
    """Our threads and sockets before a failure, to compare with after it (the SDK's network thread is
    stopped once no context of ours is left)."""

    threads: set[threading.Thread]
    sockets: int

    @classmethod
    def now(cls) -> Leftovers:
        return cls(_our_threads(), open_sockets())

    def settled(
        self,
        *,
        ignore: Callable[[threading.Thread], bool] = lambda t: False,
        sockets: int = 0,
        guard: float = 30.0,
    ) -> tuple[set[threading.Thread], int]:
        """Threads (but those ``ignore`` names) and sockets beyond those of before (``sockets`` more are
        expected), once gone or after ``guard`` s (a hang guard only: threads that end on their own end
        within the connection's timeout)."""

        def extra() -> set[threading.Thread]:
            return {t for t in _our_threads() - self.threads if not ignore(t)}

        wait_until(lambda: not extra() and open_sockets() <= self.sockets + sockets, guard)
        return extra(), open_sockets() - self.sockets


def _our_threads() -> set[threading.Thread]:
    from tests._fixtures_slow import our_threads  # a fixture module of its own: imported once pytest has

    return our_threads()


@pytest.fixture
def leftovers(hostile_opend: HostileGateway) -> Callable[[], Leftovers]:
    """Take a :class:`Leftovers` snapshot (after the gateway and the SDK are loaded)."""
    return Leftovers.now
