"""The futu-api SDK loaded once and tamed: no files in $HOME, its log in ours, SIGINT left alone, every
thread and socket it starts for us stopped when our last context closes.

Everything that reaches past the SDK's public API lives here and nowhere else (checked against
futu-api 10.x; see docs/OPEND.md, "Lifecycle"). Importing this module does not import futu.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_shortint.exceptions import NonRetryableError, ShortInterestConnectionError
from airflow_provider_shortint.text import clip

INSTALL_HINT = 'pip install "airflow-provider-shortint[futu]"'
#: The SDK's own log records (warnings and above by default) are re-emitted on this logger.
SDK_LOGGER = "airflow_provider_shortint.opend.sdk"
_FT_LOGGER_MODULE = "futu.common.ft_logger"
_STOP_WAIT = 5.0  # longest wait for an SDK thread or connection to wind down
#: The SDK's own messages for a link that broke or went silent (futu-api 10: ``PacketErr`` names, the
#: query-timeout tick, ``ReqInfo.wait``), as opposed to an answer the gateway sent.
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
    }
)

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
    finder = None if _FT_LOGGER_MODULE in sys.modules else _QuietLogFinder()
    if finder is not None:
        sys.meta_path.insert(0, finder)
    on_main = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.getsignal(signal.SIGINT) if on_main else None
    try:
        futu: types.ModuleType = importlib.import_module("futu")
    except ImportError as err:
        raise FutuNotInstalledError(f"futu-api could not be imported ({err}): {INSTALL_HINT}") from None
    except SystemExit:  # futu/__init__.py exits when pandas, simplejson or pycryptodome is missing
        raise FutuNotInstalledError(
            f"futu-api is installed but one of its dependencies is missing: {INSTALL_HINT}"
        ) from None
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
        if on_main and previous_sigint is not None:
            # futu installs a SIGINT handler that calls os._exit(0): a Ctrl-C would "succeed" a task.
            signal.signal(signal.SIGINT, previous_sigint)
    _route_sdk_log(sys.modules[_FT_LOGGER_MODULE].logger)
    # A context its user forgot to close must not keep the process alive (the SDK's default: it does).
    futu.SysConfig.set_all_thread_daemon(True)
    return futu


# -- the SDK's logger -------------------------------------------------------------------------------------


class _QuietLogFinder(importlib.abc.MetaPathFinder):
    """Loads ``futu.common.ft_logger`` so that its import-time logger creates no folder or file in $HOME."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname != _FT_LOGGER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _QuietLogLoader(spec.loader)
        return spec


class _QuietLogLoader(importlib.abc.Loader):
    """Runs the module's own code with ``os`` and ``logging`` seen through shims that never touch disk."""

    def __init__(self, loader: importlib.machinery.SourceFileLoader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        code = self._loader.get_code(module.__name__)
        if code is None:  # pragma: no cover - a source file always has code
            raise ImportError(f"no code for {module.__name__}")
        shims: dict[str, Any] = {"os": _os_shim(), "logging": _logging_shim()}

        def shim_import(name: str, *args: Any, **kwargs: Any) -> Any:
            imported = builtins.__import__(name, *args, **kwargs)
            return shims.get(name.partition(".")[0], imported)

        module.__dict__["__builtins__"] = {**vars(builtins), "__import__": shim_import}
        try:
            exec(code, module.__dict__)  # the SDK's own module code, unchanged
        finally:
            shims.clear()  # later imports (none in that module's functions) see the real modules
            module.__dict__.update(os=os, logging=logging, __builtins__=builtins)


def _os_shim() -> types.ModuleType:
    # HOME may even be unset in a service; nothing is created under it either way.
    return _Proxy("os", os, environ={**os.environ, "HOME": os.devnull}, makedirs=lambda *a, **k: None)


def _logging_shim() -> types.ModuleType:
    import logging.handlers

    handlers = _Proxy(
        "logging.handlers", logging.handlers, TimedRotatingFileHandler=lambda *a, **k: logging.NullHandler()
    )
    return _Proxy("logging", logging, handlers=handlers)


class _Proxy(types.ModuleType):
    """A module that answers with its own attributes first, then with those of ``target``."""

    def __init__(self, name: str, target: types.ModuleType, **overrides: Any) -> None:
        super().__init__(name)
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _ToProviderLog(logging.Handler):
    """Re-emits the SDK's records on :data:`SDK_LOGGER` (the task log in a task)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SDK_LOGGER).log(record.levelno, "futu-api: %s", record.getMessage())


def _route_sdk_log(ftlog: Any) -> None:
    """The SDK's file and console output -> our logger, at WARNING unless SDK_LOGGER's level says less."""
    for logger, name in ((ftlog.file_logger, "fileHandler"), (ftlog.console_logger, "consoleHandler")):
        handler = getattr(ftlog, name, None)
        if handler is not None:
            logger.removeHandler(handler)
            if isinstance(handler, logging.FileHandler):  # futu was imported before us: stop writing
                handler.close()
        setattr(ftlog, name, logging.NullHandler())  # the SDK's level setters expect a handler
    ftlog.file_logger.addHandler(_ToProviderLog())
    ftlog.console_logger.addHandler(logging.NullHandler())  # console lines repeat the file ones
    wanted = logging.getLogger(SDK_LOGGER).level or logging.WARNING
    ftlog.file_level = wanted
    ftlog.console_level = max(wanted, logging.WARNING)


# -- contexts and the SDK's threads -----------------------------------------------------------------------


def open_context(
    host: str, port: int, *, is_encrypt: bool, rsa_file: str | None, security_firm: str | None, timeout: float
) -> Any:
    """A connected ``OpenQuoteContext`` (one attempt, no background reconnects); whatever a failed
    attempt started is stopped first.

    Raises ``ShortInterestConnectionError`` (not retried) when the gateway answered InitConnect with a
    refusal (wrong RSA key, version mismatch...), ``ConnectionError`` when it could not be reached or
    did not answer (another attempt may succeed).
    """
    futu = load_futu()
    global _users
    with _users_lock:
        _users += 1
    ctx = None
    try:
        kwargs: dict[str, Any] = {"host": host, "port": port, "is_encrypt": is_encrypt}
        if security_firm:
            kwargs["security_firm"] = security_firm
        # Process-wide in the SDK, and read for *every* InitConnect: a key left set by an encrypted
        # connection would encrypt the handshake of a plain one, which OpenD then cannot read.
        futu.SysConfig.set_init_rsa_file(rsa_file if is_encrypt and rsa_file else "")
        ctx = _context_class()(**kwargs)
        if ctx.status != futu.ContextStatus.READY:
            if ctx.refusal is not None:
                raise ShortInterestConnectionError(
                    f"OpenD at {host}:{port} refused the connection (InitConnect): {ctx.refusal}"
                )
            reason = ctx.failure or "the connection was refused or timed out"
            raise ConnectionError(f"could not connect to OpenD at {host}:{port}: {reason}")
        ctx.set_sync_query_connect_timeout(timeout)
        ctx._query_timeout = timeout  # the SDK checks it once a second; its own ceiling is 20 s
        return ctx
    except BaseException:
        if ctx is not None:
            close_context(ctx)
        else:
            _release()
        raise


def is_ready(ctx: Any) -> bool:
    """Whether ``ctx`` is still connected (the SDK marks it CLOSED when its link drops)."""
    return bool(ctx.status == load_futu().ContextStatus.READY)


def close_context(ctx: Any) -> None:
    """Close ``ctx`` and wait (bounded) until its socket and threads are gone; stop the SDK's network
    thread once no context of ours is left."""
    futu = load_futu()
    try:
        ctx.close()
        _wait_until(lambda: ctx.status == futu.ContextStatus.CLOSED)
        # A context whose connection failed is already CLOSED and close() returns early, leaving its
        # (non-daemon) callback thread running: the process would never exit.
        executor = getattr(ctx, "_callback_executor", None)
        if executor is not None:
            executor.close()
            executor._thread.join(_STOP_WAIT)
    finally:
        _release()


def _release() -> None:
    global _users
    with _users_lock:
        _users -= 1
        if _users == 0:
            _stop_idle_network()


def _stop_idle_network() -> None:
    """End the SDK's process-wide network thread and its socket pair when no connection uses them.

    The SDK never stops that thread; a connection made outside this provider keeps it running.
    """
    from futu.common.network_manager import NetManager

    with NetManager._default_inst_lock:
        manager = NetManager._default_inst
        if manager is None or manager._conn_map:
            return
        NetManager._default_inst = None  # the next context starts a fresh one

    thread = manager._thread
    report = thread._invoke_excepthook

    def ignore_stop(thread_: threading.Thread) -> None:
        if not isinstance(sys.exc_info()[1], _StopNetwork):
            report(thread_)

    def stop() -> None:
        manager._close_all()
        raise _StopNetwork  # the only way out of NetManager._loop, which has no exit of its own

    thread._invoke_excepthook = ignore_stop  # this thread only: its end is not an error to report
    manager._req_queue.put(stop)
    manager._w_sock.send(b"1")
    thread.join(_STOP_WAIT)


class _StopNetwork(BaseException):
    """Ends the SDK's network thread (raised inside it, never seen by callers)."""


def _wait_until(done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _STOP_WAIT
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


_CONTEXT_CLASS: type | None = None


def _context_class() -> type:
    """``OpenQuoteContext`` that connects once and never reconnects by itself.

    The SDK's constructor retries a failed connection every 6 s forever, and after a disconnect it
    reconnects in a timer thread; here a failure returns (with its reason in ``failure``) and the
    provider's retry policy decides, on a fresh context.
    """
    global _CONTEXT_CLASS
    if _CONTEXT_CLASS is None:
        futu = load_futu()

        class OneShotQuoteContext(futu.OpenQuoteContext):  # type: ignore[misc,name-defined]
            failure: str | None = None  # why the connection failed (another attempt may succeed)
            refusal: str | None = None  # the gateway's own message when it answered InitConnect "no"

            def _init_connect_sync(self) -> int:
                ret: int = super()._init_connect_sync()
                if ret != futu.RET_OK:
                    self._auto_reconnect = False
                return ret

            def _send_init_connect_sync(self) -> tuple[int, str]:
                ret, msg = super()._send_init_connect_sync()
                if ret != futu.RET_OK:
                    if str(msg).strip() in SDK_LINK_FAILURES:  # no answer: the link broke or went silent
                        self.failure = f"InitConnect got no answer: {msg}"
                    else:
                        self.refusal = clip(str(msg).strip() or "no message", 300)
                return ret, msg

            def on_disconnect(self, conn_id: int, reason: Any, msg: str) -> None:
                with self._lock:
                    self._auto_reconnect = False
                super().on_disconnect(conn_id, reason, msg)

        _CONTEXT_CLASS = OneShotQuoteContext
    return _CONTEXT_CLASS
