"""The futu-api SDK loaded once and tamed: no files in $HOME, its log in ours, SIGINT left alone, every
connection made through a bounded :mod:`.link`, and every thread and socket it starts for us stopped when
our last context closes.

This is the one module that relies on futu-api beyond its documented API (tested with futu-api
10.11.7108; docs/OPEND.md, "futu-api internals relied on"). Importing it does not import futu.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_shortint.exceptions import InvalidParameterError, NonRetryableError
from airflow_provider_shortint.transports.opend.link import (
    GetAddrInfo,
    LinkFailure,
    Relay,
    connect,
    resolve,
)

INSTALL_HINT = 'pip install "airflow-provider-shortint[futu]"'
#: The futu-api versions these internals were checked against (pyproject pins the same range).
TESTED_FUTU = "10.x (checked with 10.11.7108)"
#: The SDK's own log records (warnings and above by default) are re-emitted on this logger.
SDK_LOGGER = "airflow_provider_shortint.opend.sdk"
_STOP_WAIT = 5.0  # longest wait for an SDK thread or connection to wind down
#: The SDK's own messages for a link that broke or went silent (futu-api 10: ``PacketErr`` names, the
#: query-timeout tick, ``ReqInfo.wait``, ``Err``), as opposed to an answer the gateway sent.
SDK_LINK_FAILURES = frozenset(
    {
        "Disconnect",
        "PacketErr.Disconnect",
        "Timeout",
        "PacketErr.Timeout",
        "SendFail",
        "PacketErr.SendFail",
        "Abnormal event timeout",
        "Context status bad",
        "Connection closed",
        "Connection lost",
        "Not connected",
        "Connect timeout",
    }
)
#: NetManager attributes :func:`_stop_idle_network` uses (none is public; see docs/OPEND.md), class
#: attributes first.
NETWORK_INTERNALS = (
    "_default_inst",
    "_default_inst_lock",
    "_conn_map",
    "_req_queue",
    "_w_sock",
    "_close_all",
    "_thread",
)

log = logging.getLogger(__name__)
_load_lock = threading.Lock()
_futu: types.ModuleType | None = None
_users_lock = threading.Lock()
_users = 0  # contexts of ours open or opening in this process


class FutuNotInstalledError(NonRetryableError):
    """futu-api (the optional extra ``[futu]``) is missing or cannot load its dependencies."""

    default_error_code = "futu_not_installed"


def load_futu() -> types.ModuleType:
    """The ``futu`` package, imported on first use with the SDK's file log and SIGINT handler disarmed."""
    global _futu
    with _load_lock:
        if _futu is None:
            _futu = _import_quietly()
        return _futu


def _import_quietly() -> types.ModuleType:
    if importlib.util.find_spec("futu") is None:
        raise FutuNotInstalledError(
            f"a futu_opend connection needs the futu-api SDK, which is not installed: {INSTALL_HINT}"
        )
    fresh = "futu" not in sys.modules
    on_main = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.getsignal(signal.SIGINT) if on_main else None
    # futu's logger creates $HOME/.com.futunn.FutuOpenD/Log and opens a file there when it is first
    # imported: HOME (APPDATA on Windows) points at a throwaway folder for that one import.
    with tempfile.TemporaryDirectory(prefix="shortint-futu-import-") as scratch:
        saved = {name: os.environ.get(name) for name in ("HOME", "APPDATA")}
        if fresh:
            os.environ.update(HOME=scratch, APPDATA=scratch)
        try:
            futu: types.ModuleType = importlib.import_module("futu")
        except ImportError as err:
            raise FutuNotInstalledError(f"futu-api could not be imported ({err}): {INSTALL_HINT}") from None
        except SystemExit:  # futu/__init__.py exits when pandas, simplejson or pycryptodome is missing
            raise FutuNotInstalledError(
                f"futu-api is installed but one of its dependencies is missing: {INSTALL_HINT}"
            ) from None
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if on_main and previous_sigint is not None:
                # futu installs a SIGINT handler that calls os._exit(0): a Ctrl-C would "succeed" a task.
                signal.signal(signal.SIGINT, previous_sigint)
        _route_sdk_log(futu.logger)  # closes the file it opened in the throwaway folder
    # A context its user forgot to close must not keep the process alive (the SDK's default: it does).
    futu.SysConfig.set_all_thread_daemon(True)
    return futu


class _ToProviderLog(logging.Handler):
    """Re-emits the SDK's records on :data:`SDK_LOGGER` (the task log in a task)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SDK_LOGGER).log(record.levelno, "futu-api: %s", record.getMessage())


def _route_sdk_log(ftlog: Any) -> None:
    """The SDK's file and console output -> our logger, at WARNING unless SDK_LOGGER's level says less."""
    ftlog.file_logger.removeHandler(ftlog.fileHandler)
    ftlog.fileHandler.close()
    ftlog.enable_console_log(False)  # console lines repeat the file ones
    ftlog.file_logger.addHandler(_ToProviderLog())
    wanted = logging.getLogger(SDK_LOGGER).level or logging.WARNING
    ftlog.file_level = wanted
    ftlog.console_level = max(wanted, logging.WARNING)


# -- one connection: the link, the context, and what ends them -------------------------------------------


@dataclass
class Connection:
    """An ``OpenQuoteContext`` connected through its own :class:`~.link.Relay`; ``built`` holds the context
    (or the exception) its ``connector`` thread constructed."""

    relay: Relay
    connector: threading.Thread
    built: list[Any]

    @property
    def ctx(self) -> Any:
        """The context, None while (or if) the constructor has not returned one."""
        return self.built[0] if self.built and not isinstance(self.built[0], BaseException) else None

    @property
    def failure(self) -> LinkFailure | None:
        """Why the relay cut the link, if it did."""
        return self.relay.failure

    @property
    def is_ready(self) -> bool:
        """Whether the context is still connected (the SDK marks it CLOSED when its link drops)."""
        ctx = self.ctx
        return (
            ctx is not None
            and self.relay.failure is None
            and bool(ctx.status == load_futu().ContextStatus.READY)
        )


def open_connection(
    host: str,
    port: int,
    *,
    is_encrypt: bool,
    rsa_file: str | None,
    security_firm: str | None,
    timeout: float,
    getaddrinfo: GetAddrInfo = socket.getaddrinfo,
    clock: Callable[[], float] = time.monotonic,
) -> Connection:
    """A connected context, resolved, connected and through InitConnect within ``timeout`` seconds in all.

    Raises ``LinkFailure`` (its kind says why; nothing of the attempt is left running) or
    ``InvalidParameterError`` for a ``security_firm`` the SDK does not know (before any connection).
    """
    futu = load_futu()
    firm = security_firm or futu.SecurityFirm.NONE
    if not futu.SecurityFirm.if_has_key(firm):
        raise InvalidParameterError(
            f"futu_opend connection: security_firm {firm!r} is not a futu-api SecurityFirm "
            f"({', '.join(futu.SecurityFirm.get_all_keys())})"
        )
    deadline = clock() + timeout
    upstream = connect(resolve(host, port, timeout, getaddrinfo), deadline, clock)
    settled = threading.Event()  # the context is READY, or the relay ended, or the constructor returned
    relay = Relay(upstream, timeout=timeout, is_encrypt=is_encrypt, on_end=settled.set)
    _use()
    built: list[Any] = []
    abandoned = threading.Event()
    connector = threading.Thread(
        target=_build,
        args=(built, settled, abandoned, relay.port, is_encrypt, firm),
        name="shortint-opend-connect",
        daemon=True,
    )
    connection = Connection(relay, connector, built)
    try:
        relay.start()
        # Process-wide in the SDK, and read for *every* InitConnect: a key left set by an encrypted
        # connection would encrypt the handshake of a plain one, which OpenD then cannot read.
        futu.SysConfig.set_init_rsa_file(rsa_file if is_encrypt and rsa_file else "")
        connector.start()
        settled.wait(max(deadline - clock(), 0.0))
        if connection.is_ready:
            connection.ctx.set_sync_query_connect_timeout(timeout)
            return connection
        if relay.failure is not None:
            raise relay.failure
        if built and isinstance(built[0], BaseException):
            raise LinkFailure("init_unreadable", f"futu-api failed to connect ({type(built[0]).__name__})")
        if relay.ended:
            raise LinkFailure("init_unreadable", "futu-api did not accept its answer to InitConnect")
        raise LinkFailure("init_timeout", f"no answer to InitConnect within {timeout:g} s")
    except BaseException:
        abandoned.set()
        _close(connection)
        raise


def _build(
    built: list[Any],
    settled: threading.Event,
    abandoned: threading.Event,
    port: int,
    is_encrypt: bool,
    firm: str,
) -> None:
    """Construct the context (the SDK connects in its constructor) in a thread of ours, so the caller
    waits on its own deadline whatever the SDK does."""
    try:
        built.append(
            _context_class()(
                abandoned, settled, host="127.0.0.1", port=port, is_encrypt=is_encrypt, security_firm=firm
            )
        )
    except BaseException as err:
        built.append(err)
    finally:
        settled.set()


def close_connection(connection: Connection) -> None:
    """Close the context and its relay and wait (bounded) until their sockets and threads are gone; stop
    the SDK's network thread once no context of ours is left."""
    _close(connection)


def _close(connection: Connection) -> None:
    try:
        _close_context(connection.ctx)
        connection.relay.close()  # the SDK sees a disconnect: a constructor still waiting returns
        if connection.connector.ident:
            connection.connector.join(_STOP_WAIT)
            _close_context(connection.ctx)  # one the constructor returned meanwhile (already closed)
    finally:
        _release(quiet=not connection.connector.is_alive())


def _close_context(ctx: Any) -> None:
    if ctx is None:
        return
    ctx.close()  # public: also turns the SDK's reconnect timer off
    closed = load_futu().ContextStatus.CLOSED
    _wait_until(lambda: ctx.status == closed)


def _use() -> None:
    global _users
    with _users_lock:
        _users += 1


def _release(*, quiet: bool) -> None:
    global _users
    with _users_lock:
        _users -= 1
        last = _users == 0
    if last and quiet:
        _stop_idle_network()


def _wait_until(done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _STOP_WAIT
    pause = threading.Event()
    while not done():
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.002)
    return True


# -- the SDK's network thread (the only use of futu-api private attributes) ------------------------------


def network_internals_missing() -> list[str]:
    """The private attributes :func:`_stop_idle_network` needs that this futu-api (or Python) lacks."""
    from futu.common.network_manager import NetManager

    missing = [f"NetManager.{name}" for name in NETWORK_INTERNALS[:2] if not hasattr(NetManager, name)]
    manager = getattr(NetManager, "_default_inst", None)
    if manager is not None:
        missing += [f"NetManager.{name}" for name in NETWORK_INTERNALS[2:] if not hasattr(manager, name)]
        if not hasattr(getattr(manager, "_thread", None), "_invoke_excepthook"):
            missing.append("threading.Thread._invoke_excepthook")
    return missing


def _stop_idle_network() -> None:
    """End the SDK's process-wide network thread and close its socket pair when no connection uses them.

    futu-api never stops that thread (``NetManager._loop`` has no exit): a function queued into it closes
    its selector and sockets and raises :class:`_StopNetwork`, whose report that one thread's excepthook
    skips. A connection made outside this provider keeps it running. On a futu-api whose internals differ,
    the thread is left running (one idle thread per process) and a warning says so.
    """
    from futu.common.network_manager import NetManager

    missing = network_internals_missing()
    if missing:
        log.warning(
            "futu-api %s lacks %s (tested: %s): its network thread is left running",
            getattr(load_futu(), "__version__", "?"),
            ", ".join(missing),
            TESTED_FUTU,
        )
        return
    manager = NetManager._default_inst
    if manager is None:
        return
    thread = manager._thread
    report = thread._invoke_excepthook

    def quiet(thread_: threading.Thread) -> None:
        if not isinstance(sys.exc_info()[1], _StopNetwork):
            report(thread_)

    def stop() -> None:
        with _users_lock, NetManager._default_inst_lock:
            if _users or manager._conn_map or NetManager._default_inst is not manager:
                return  # a context opened meanwhile, or a connection not of ours, still uses it
            NetManager._default_inst = None  # the next context starts a fresh one
        manager._close_all()
        thread._invoke_excepthook = quiet  # this thread only: its end is not an error to report
        raise _StopNetwork

    manager._req_queue.put(stop)
    try:
        manager._w_sock.send(b"1")
    except (OSError, AttributeError):  # stopped meanwhile by another caller
        return
    if thread is not threading.current_thread():
        thread.join(_STOP_WAIT)


class _StopNetwork(BaseException):
    """Ends the SDK's network thread (raised inside it, never seen by callers)."""


_CONTEXT_CLASS: type | None = None


def _context_class() -> type:
    """``OpenQuoteContext`` that never reconnects by itself and tells the provider when it is ready.

    The SDK reconnects after a disconnect every 6 s, to an address that is the relay's closed loopback
    port here; closing the context (public ``close()``) turns that off. Only public callbacks are
    overridden: ``on_api_socket_reconnected`` (ready), ``on_connect`` and ``on_disconnect``.
    """
    global _CONTEXT_CLASS
    if _CONTEXT_CLASS is None:
        futu = load_futu()

        class ProviderQuoteContext(futu.OpenQuoteContext):  # type: ignore[misc,name-defined]
            def __init__(self, abandoned: threading.Event, ready: threading.Event, **kwargs: Any) -> None:
                self.shortint_abandoned = abandoned
                self.shortint_ready = ready
                super().__init__(**kwargs)

            def on_api_socket_reconnected(self) -> tuple[int, str]:
                result: tuple[int, str] = super().on_api_socket_reconnected()
                self.shortint_ready.set()
                return result

            def on_connect(self, conn_id: Any = 0, conn_info: Any = None) -> None:
                if conn_info is None:  # futu-api 10 passes only conn_info when connect() fails at once
                    conn_id, conn_info = 0, conn_id
                if self.shortint_abandoned.is_set():  # a retry after the provider gave up: stop here
                    self.close()
                super().on_connect(conn_id, conn_info)

            def on_disconnect(self, conn_id: int, reason: Any, msg: str) -> None:
                self.close()  # before the SDK's own handling: no reconnect timer, its loop returns
                super().on_disconnect(conn_id, reason, msg)

        _CONTEXT_CLASS = ProviderQuoteContext
    return _CONTEXT_CLASS
