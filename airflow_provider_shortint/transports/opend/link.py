"""The provider's own TCP link to OpenD: the bounds futu-api lacks, with public socket APIs only.

futu-api resolves and connects inside its network thread (a name that does not resolve leaves its
``ConnectInfo.wait()`` waiting for ever), buffers a frame until its declared body length has arrived (a
gateway that declares 2 GiB grows the process by as much as it streams) and waits 20 s for the answer to
InitConnect whatever it is told. So the provider resolves and connects itself, within the connection's
timeout, and hands the SDK a loopback :class:`Relay` to that socket. The relay reads each frame's 44-byte
header on the way; it cuts both sides when a body is longer than :data:`MAX_FRAME_BYTES`, when a request
is not answered within the timeout, or when OpenD refuses InitConnect or answers it unreadably. The SDK
then sees a disconnect and fails its pending call at once; :attr:`Relay.failure` says why.

Framing is read with the SDK's own helpers (``futu.common.utils.parse_head``, ``decrypt_rsp_body``,
``binary2pb``), imported when a relay starts (never at module import).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from airflow_provider_shortint.text import clip

#: Largest frame body accepted from OpenD (bytes). A page of 50 items is a few KB; anything this large is
#: not an answer to a short interest request.
MAX_FRAME_BYTES: Final = 1 << 20
#: Bytes read per socket read, and the most a relay holds for a side that is slower to read.
_CHUNK: Final = 64 * 1024
_HIGH_WATER: Final = 4 * _CHUNK
_INIT_CONNECT: Final = 1001
_STOP_WAIT: Final = 5.0  # longest wait for the relay thread to end once told to

AddrInfo = list[tuple[Any, ...]]
GetAddrInfo = Callable[..., AddrInfo]


class LinkFailure(Exception):
    """Why the link to OpenD could not be made or was cut: ``kind`` (below) and one line of ``detail``.

    Kinds: ``name_not_resolved``, ``name_resolution_failed`` (temporary), ``resolve_timeout``,
    ``connect_refused``, ``connect_timeout``, ``connect_failed``, ``answer_timeout``, ``gateway_closed``,
    ``frame_too_large``, ``garbled``, ``init_refused``, ``init_unreadable``, ``init_timeout``.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# -- resolving and connecting, each within the connection's timeout -----------------------------------------


def resolve(host: str, port: int, timeout: float, getaddrinfo: GetAddrInfo = socket.getaddrinfo) -> AddrInfo:
    """TCP addresses of ``host:port``, awaited at most ``timeout`` seconds.

    An IP address is used as given. A name is asked in a daemon thread: ``getaddrinfo`` cannot be
    interrupted, so a resolver that hangs past ``timeout`` keeps that thread until the system resolver
    gives up, while the caller gets ``LinkFailure("resolve_timeout")`` on time.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return _addresses(getaddrinfo, host, port)
    outcome: list[AddrInfo | BaseException] = []
    done = threading.Event()

    def ask() -> None:
        try:
            outcome.append(_addresses(getaddrinfo, host, port))
        except BaseException as err:  # handed to the caller below
            outcome.append(err)
        finally:
            done.set()

    threading.Thread(target=ask, name="shortint-opend-resolve", daemon=True).start()
    if not done.wait(timeout):
        raise LinkFailure("resolve_timeout", f"the name {host!r} did not resolve within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, socket.gaierror):
        reason = clip(str(result.strerror or result), 80)
        if result.errno == socket.EAI_AGAIN:
            raise LinkFailure("name_resolution_failed", f"temporary failure resolving {host!r} ({reason})")
        raise LinkFailure("name_not_resolved", f"the name {host!r} does not resolve ({reason})")
    if isinstance(result, BaseException):
        raise LinkFailure(
            "name_not_resolved", f"the name {host!r} does not resolve ({type(result).__name__})"
        )
    return result


def _addresses(getaddrinfo: GetAddrInfo, host: str, port: int) -> AddrInfo:
    found = list(getaddrinfo(host, port, 0, socket.SOCK_STREAM))
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return found


def connect(addresses: AddrInfo, deadline: float, clock: Callable[[], float]) -> socket.socket:
    """A socket connected to the first address that accepts, all attempts together ending by ``deadline``."""
    last: OSError | None = None
    for family, kind, proto, _, address in addresses:
        left = deadline - clock()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:  # TimeoutError included
            sock.close()
            last = err
    if last is None or isinstance(last, TimeoutError):
        raise LinkFailure("connect_timeout", "no TCP connection within the timeout")
    if isinstance(last, ConnectionRefusedError):
        raise LinkFailure("connect_refused", "nothing listens there (connection refused)")
    raise LinkFailure("connect_failed", f"no TCP connection ({clip(str(last), 80)})")


# -- the relay ---------------------------------------------------------------------------------------------


class _Frames:
    """Follows the frames of one direction as their bytes pass: each header checked, each body counted (and
    kept only when asked: InitConnect's answer)."""

    def __init__(self, futu_utils: Any, max_body: int, keep: Callable[[int], bool]) -> None:
        self._parse_head = futu_utils.parse_head
        self._head_len: int = futu_utils.get_message_head_len()
        self._max_body = max_body
        self._keep = keep
        self._head = bytearray()
        self._current: dict[str, Any] | None = None
        self._left = 0
        self._body: bytearray | None = None

    def feed(self, data: bytes, on_head: Callable[[dict[str, Any]], None] | None = None) -> list[Any]:
        """``(head, body or None)`` of each frame that ``data`` completes; ``on_head`` sees each header as
        it is read. Raises LinkFailure for a header that is not "FT" or declares too long a body."""
        done: list[tuple[dict[str, Any], bytes | None]] = []
        view, i, n = memoryview(data), 0, len(data)
        while i < n:
            if self._current is None:
                take = min(self._head_len - len(self._head), n - i)
                self._head += view[i : i + take]
                i += take
                if len(self._head) < self._head_len:
                    break
                head = self._parse_head(bytes(self._head))
                self._head.clear()
                if (head["head_1"], head["head_2"]) != (b"F", b"T"):
                    raise LinkFailure("garbled", "a frame header that does not start with 'FT'")
                if head["body_len"] > self._max_body:
                    raise LinkFailure(
                        "frame_too_large",
                        f"a frame of {head['body_len']:,} bytes (protocol {head['proto_id']}); at most "
                        f"{self._max_body:,} bytes per frame are accepted",
                    )
                if on_head is not None:
                    on_head(head)
                self._current, self._left = head, int(head["body_len"])
                self._body = bytearray() if self._keep(int(head["proto_id"])) else None
            take = min(self._left, n - i)
            if self._body is not None:
                self._body += view[i : i + take]
            i += take
            self._left -= take
            if self._left == 0:
                done.append((self._current, None if self._body is None else bytes(self._body)))
                self._current, self._body = None, None
        return done


class Relay:
    """Forwards bytes between the SDK (on a loopback port it accepts once) and OpenD (``upstream``), in one
    daemon thread, enforcing the bounds of the module docstring.

    ``on_end`` runs once when the relay stops for any reason (after :attr:`failure` is set, before the
    sockets close). ``is_encrypt``: whether the SDK encrypts (InitConnect's answer is then RSA-encrypted).
    """

    def __init__(
        self,
        upstream: socket.socket,
        *,
        timeout: float,
        is_encrypt: bool,
        on_end: Callable[[], None],
        max_frame: int = MAX_FRAME_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import futu.common.utils as futu_utils

        self.timeout = timeout
        self.max_frame = max_frame
        self.failure: LinkFailure | None = None
        self._futu = futu_utils
        self._is_encrypt = is_encrypt
        self._on_end = on_end
        self._clock = clock
        self._up = upstream
        self._down: socket.socket | None = None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._to_sdk = bytearray()
        self._to_gateway = bytearray()
        self._waiting: dict[tuple[int, int], float] = {}  # (proto_id, serial) of a request -> its deadline
        self._from_sdk = _Frames(
            futu_utils, 1 << 26, lambda proto: False
        )  # our own requests: read for their ids
        self._from_gateway = _Frames(futu_utils, max_frame, lambda proto: proto == _INIT_CONNECT)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port: int = self._listener.getsockname()[1]
        for sock in (self._listener, self._up, self._wake_r):
            sock.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, name=f"shortint-opend-relay-{self.port}", daemon=True
        )

    @property
    def ended(self) -> bool:
        """Whether the relay stopped (a failure, either side closing, or :meth:`close`)."""
        return self._ended.is_set()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop forwarding and close every socket of the relay; waits (bounded) for its thread to end."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(_STOP_WAIT)
        elif not self._thread.ident:  # never started
            self._close_sockets()

    # -- the thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            self._pump(selector)
        except LinkFailure as failure:
            self.failure = failure
        except OSError as err:
            self.failure = LinkFailure("gateway_closed", f"the connection failed ({clip(str(err), 80)})")
        except Exception as err:  # a framing helper that changed: cut rather than pass bytes unchecked
            self.failure = LinkFailure("garbled", f"a frame the relay could not read ({type(err).__name__})")
        finally:
            try:
                self._ended.set()
                self._on_end()
            finally:
                selector.close()
                self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._listener, self._down, self._up, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(self, selector: selectors.BaseSelector) -> None:
        interest: dict[socket.socket, int] = {}

        def want(sock: socket.socket, events: int, role: str) -> None:
            if interest.get(sock, 0) == events:
                return
            if events == 0:
                selector.unregister(sock)
                del interest[sock]
            elif sock in interest:
                selector.modify(sock, events, role)
                interest[sock] = events
            else:
                selector.register(sock, events, role)
                interest[sock] = events

        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        want(self._wake_r, read, "wake")
        want(self._listener, read, "accept")
        while not self._stopping.is_set():
            want(
                self._up,
                (read if len(self._to_sdk) < _HIGH_WATER else 0) | (write if self._to_gateway else 0),
                "up",
            )
            if self._down is not None:
                want(
                    self._down,
                    (read if len(self._to_gateway) < _HIGH_WATER else 0) | (write if self._to_sdk else 0),
                    "down",
                )
            for key, events in selector.select(self._next_deadline()):
                role = key.data
                if role == "wake":
                    return
                if role == "accept":
                    self._down, _ = self._listener.accept()
                    self._down.setblocking(False)
                    self._down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    want(self._listener, 0, "accept")
                    self._listener.close()  # one SDK connection per relay
                elif role == "up":
                    if events & read:
                        self._gateway_sent(self._recv(self._up))
                    if events & write:
                        self._send(self._up, self._to_gateway)
                elif role == "down" and self._down is not None:
                    if events & read:
                        data = self._down.recv(_CHUNK)
                        if not data:
                            return  # the SDK closed its side: the context was closed
                        self._from_sdk.feed(data, self._sdk_request)
                        self._to_gateway += data
                        self._send(self._up, self._to_gateway)
                    if events & write:
                        self._send(self._down, self._to_sdk)
            self._check_deadlines()

    def _recv(self, sock: socket.socket) -> bytes:
        data = sock.recv(_CHUNK)
        if not data:
            raise LinkFailure("gateway_closed", "the connection was closed by the gateway")
        return data

    @staticmethod
    def _send(sock: socket.socket | None, pending: bytearray) -> None:
        if sock is None or not pending:
            return
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            return
        del pending[:sent]

    def _sdk_request(self, head: dict[str, Any]) -> None:
        self._waiting[(int(head["proto_id"]), int(head["serial_no"]))] = self._clock() + self.timeout

    def _gateway_sent(self, data: bytes) -> None:
        """Check the frames in ``data`` before any of its bytes reach the SDK."""
        for head, body in self._from_gateway.feed(data):
            proto_id = int(head["proto_id"])
            self._waiting.pop((proto_id, int(head["serial_no"])), None)
            if proto_id == _INIT_CONNECT and body is not None:
                self._check_init_answer(head, body)
        self._to_sdk += data
        self._send(self._down, self._to_sdk)

    def _check_init_answer(self, head: dict[str, Any], body: bytes) -> None:
        """InitConnect's answer read as the SDK reads it: a refusal or an answer it could not read cuts the
        link (the SDK then fails the connection at once instead of retrying in 6 s)."""
        plain = hashlib.sha1(body).digest() == head["sha20"]
        if not plain:
            if not self._is_encrypt:
                raise LinkFailure("init_unreadable", "its answer to InitConnect failed its SHA-1 check")
            ret, message, body = self._futu.decrypt_rsp_body(body, head, 0, True)
            if ret != 0:
                raise LinkFailure(
                    "init_unreadable",
                    f"its answer to InitConnect cannot be read with the RSA key ({clip(str(message), 120)})",
                )
        answer = self._futu.binary2pb(body, _INIT_CONNECT, head["proto_fmt_type"])
        ret_type = getattr(answer, "retType", None)
        if ret_type is None:
            raise LinkFailure("init_unreadable", "its answer to InitConnect is not an InitConnect response")
        if ret_type != 0:
            raise LinkFailure("init_refused", clip(str(answer.retMsg).strip() or f"retType {ret_type}", 300))
        if plain and self._is_encrypt:
            raise LinkFailure(
                "init_unreadable", "it answered InitConnect unencrypted although is_encrypt is set"
            )

    def _next_deadline(self) -> float | None:
        if not self._waiting:
            return None
        return max(min(self._waiting.values()) - self._clock(), 0.0)

    def _check_deadlines(self) -> None:
        if not self._waiting:
            return
        now = self._clock()
        late = [key for key, deadline in self._waiting.items() if deadline <= now]
        if late:
            proto_id = late[0][0]
            what = "InitConnect" if proto_id == _INIT_CONNECT else f"protocol {proto_id}"
            raise LinkFailure("answer_timeout", f"no answer to {what} within {self.timeout:g} s")
