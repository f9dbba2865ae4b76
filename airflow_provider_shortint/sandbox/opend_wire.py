"""The OpenD wire: a threaded TCP server of "FT" frames (44-byte header with proto id, format, serial,
body length and SHA-1, then the body), one ``Session`` per client connection, replies framed in the SDK's
own header layout (``futu.common.constant.MESSAGE_HEAD_FMT``)."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Protocol

from airflow_provider_shortint.sandbox.config import STOP_POLL, SandboxConfig

INIT_CONNECT: Final = 1001
KEEP_ALIVE_INTERVAL: Final = 10  # seconds, told to the client in InitConnect (it pings every 4/5 of it)
IDLE_TIMEOUT: Final = 3 * KEEP_ALIVE_INTERVAL  # a silent connection is closed after this long
MAX_BODY: Final = 1 << 20
ENCRYPTED: Final = b"\x00encrypted"  # body of an InitConnect whose SHA-1 fails (RSA-encrypted)


@dataclass(frozen=True)
class Frame:
    """One request frame whose SHA-1 matched (or an encrypted InitConnect, body ``ENCRYPTED``)."""

    proto_id: int
    fmt: int
    serial: int
    body: bytes


class Dispatcher(Protocol):
    """What serves the frames: the SDK's modules, the live settings and one call per frame."""

    sdk: ModuleType

    @property
    def config(self) -> SandboxConfig: ...

    def serve(self, session: Session, frame: Frame) -> None: ...


def frame(
    sdk: ModuleType,
    proto_id: int,
    fmt: int,
    serial: int,
    body: bytes,
    *,
    declared: int | None = None,
    sha1: bytes | None = None,
) -> bytes:
    """One frame as futu-api lays it out (its ``MESSAGE_HEAD_FMT``: "FT", proto id, format, API version,
    serial, body length, SHA-1 of the body, 8 reserved bytes), then the body.

    ``declared`` and ``sha1`` replace the true length and checksum (a test gateway that lies).
    """
    constant = sdk.constant
    head = struct.pack(
        constant.MESSAGE_HEAD_FMT,
        b"F",
        b"T",
        proto_id,
        fmt,
        constant.API_PROTO_VER,
        serial,
        len(body) if declared is None else declared,
        hashlib.sha1(body).digest() if sha1 is None else sha1,
        bytes(8),
    )
    return head + body


def encode(sdk: ModuleType, request: Frame, response: Any, *, corrupt: bool = False) -> bytes:
    """A Response framed in the request's format, proto id and serial number (never encrypted).

    ``corrupt`` flips the body's bytes so that the header's SHA-1 no longer matches.
    """
    if request.fmt == sdk.constant.ProtoFMT.Json:
        from google.protobuf.json_format import MessageToJson

        body = MessageToJson(response).encode()
    else:
        body = response.SerializeToString()
    sha1 = hashlib.sha1(body).digest()
    if corrupt:
        body = bytes(b ^ 0x5A for b in body)
    return frame(sdk, request.proto_id, request.fmt, request.serial, body, sha1=sha1)


def decode(sdk: ModuleType, module: Any, frame: Frame) -> Any:
    """The ``Request`` message of ``module`` carried by the frame, or None when it does not decode."""
    try:
        request = module.Request()
        if frame.fmt == sdk.constant.ProtoFMT.Json:
            # protobuf's own parser: the SDK's pbjson.json2pb fails on protobuf >= 6 (FieldDescriptor.label)
            from google.protobuf import json_format

            json_format.Parse(frame.body.decode(), request)
        else:
            request.ParseFromString(frame.body)
        return request if request.IsInitialized() else None
    except Exception:  # DecodeError, UnicodeDecodeError, ValueError...: a bad packet, not a server fault
        return None


class Session(socketserver.BaseRequestHandler):
    """One client connection: frames read in order; replies (possibly from timer threads) under a lock."""

    server: FrameServer

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.write_lock = threading.Lock()
        self.conn_id: int | None = None  # set by a successful InitConnect
        self.closed = False
        self.server.track(self, True)

    def finish(self) -> None:
        self.server.track(self, False)
        self.close()

    def handle(self) -> None:
        while not self.closed:
            frame = self._read_frame()
            if frame is None:
                return
            self.server.dispatcher.serve(self, frame)

    def close(self) -> None:
        """Drop the connection (the client sees a disconnect)."""
        with self.write_lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

    def send(self, data: bytes) -> None:
        """Write bytes unless the connection is gone."""
        with self.write_lock:
            if self.closed or not data:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def _read_frame(self) -> Frame | None:
        """The next frame, or None when the client left, stalled, or sent garbage or a bad SHA-1.

        The wait for a frame may last ``IDLE_TIMEOUT``; once its first byte is in, the whole frame must
        arrive within 2 x socket_timeout (a client dripping bytes cannot hold a thread forever).
        """
        sdk = self.server.dispatcher.sdk
        first = self._recv(1, time.monotonic() + IDLE_TIMEOUT)
        if first is None:
            return None
        deadline = time.monotonic() + 2 * self.server.dispatcher.config.socket_timeout
        rest = self._recv(sdk.utils.get_message_head_len() - 1, deadline)
        if rest is None:
            return None
        head = sdk.utils.parse_head(first + rest)
        if (head["head_1"], head["head_2"]) != (b"F", b"T") or head["body_len"] > MAX_BODY:
            return None
        body = self._recv(head["body_len"], deadline)
        if body is None:
            return None
        if hashlib.sha1(body).digest() != head["sha20"]:
            if head["proto_id"] != INIT_CONNECT:
                return None
            body = ENCRYPTED
        return Frame(head["proto_id"], head["proto_fmt_type"], head["serial_no"], body)

    def _recv(self, size: int, deadline: float) -> bytes | None:
        """Exactly ``size`` bytes by ``deadline`` (each read waits at most socket_timeout), else None."""
        buffer = bytearray()
        while len(buffer) < size:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            try:
                self.sock.settimeout(min(wait, max(self.server.dispatcher.config.socket_timeout, 0.001)))
                chunk = self.sock.recv(size - len(buffer))
            except OSError:
                return None
            if not chunk:
                return None
            buffer += chunk
        return bytes(buffer)


class FrameServer(socketserver.ThreadingTCPServer):
    """Threaded TCP server of one dispatcher; ``stop`` also drops the connections still open."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Session)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": STOP_POLL},
            name="shortint-sandbox-opend",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, drop every open connection, close the socket (idempotent)."""
        if self._thread is not None:
            self.shutdown()
        self.server_close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def track(self, session: Session, is_open: bool) -> None:
        """Remember (or forget) an open session so that ``stop`` can close it."""
        with self._lock:
            if is_open:
                self._sessions.add(session)
            else:
                self._sessions.discard(session)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.dispatcher.config.verbose:
            super().handle_error(request, client_address)
