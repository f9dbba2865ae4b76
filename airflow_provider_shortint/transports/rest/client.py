"""One aiohttp ``ClientSession`` on an event loop of the hook's own, driven from synchronous code.

The hook's methods are synchronous (DESIGN.md §5); aiohttp gives what the REST door needs through its
public API: a deadline for a whole request (``ClientTimeout(total=...)``: name resolution, connect,
headers and body), the body as sent (``auto_decompress=False``), no redirects. :class:`RestClient` owns
an ``asyncio.Runner`` (a loop of its own, never installed as a thread's current loop) and the session on
it: keep-alive across pages and symbols, usable from any thread that has no running event loop, one call
at a time. :meth:`RestClient.close` (or the garbage collector, or the interpreter's exit) closes the
session, its sockets, the loop and the loop's resolver threads; nothing is left behind.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp

_T = TypeVar("_T")

#: Longest wait for closing from a thread whose own event loop is running (closing runs in a helper
#: thread then; it sends nothing, so it takes milliseconds).
CLOSE_WAIT = 5.0


class _State:
    """What a client owns; kept apart from the client so that its finalizer can close it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runner: asyncio.Runner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.closed = False


def _shutdown(state: _State) -> None:
    """Close the session (its connections) and the loop; from a thread with a running loop, in a helper
    thread (a loop cannot be run inside another)."""
    if _loop_running():
        helper = threading.Thread(target=_shutdown, args=(state,), name="shortint-rest-close", daemon=True)
        helper.start()
        helper.join(CLOSE_WAIT)
        return
    with state.lock:
        state.closed = True
        runner, session = state.runner, state.session
        state.runner = state.session = None
        if runner is None:
            return
        try:
            if session is not None:
                runner.run(session.close())
        finally:
            runner.close()  # cancels what is left, joins the loop's executor threads, closes the loop


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def refuse_running_loop() -> None:
    """Raise ``RuntimeError`` in a thread whose event loop is running: a synchronous request there would
    block every coroutine of that loop (before any budget slot is taken)."""
    if _loop_running():
        raise RuntimeError(
            "the short interest hook is synchronous and cannot run inside a running event loop; "
            "call it from a thread (e.g. asyncio.to_thread)"
        )


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, minus
    ``NO_PROXY``), as other HTTP clients read it; None for a direct connection."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and urlsplit(proxy).scheme not in ("http", "https"):
        from airflow_provider_shortint.exceptions import InvalidParameterError

        raise InvalidParameterError(
            f"the environment names a {urlsplit(proxy).scheme or 'schemeless'} proxy for {parts.scheme} "
            "URLs; the REST hook speaks only to http(s) proxies: unset it, or add the API's host to NO_PROXY"
        )
    return proxy or None


class RestClient:
    """A keep-alive HTTP session for synchronous callers; :meth:`run` one coroutine at a time.

    :param verify_ssl: check the server's certificate against the system's CA store.
    :param proxy: the proxy URL to send through, or None.
    :param trace_configs: aiohttp ``TraceConfig`` objects that observe the session's requests.
    """

    def __init__(
        self, *, verify_ssl: bool = True, proxy: str | None = None, trace_configs: Sequence[Any] = ()
    ) -> None:
        self.verify_ssl = verify_ssl
        self.proxy = proxy
        self.trace_configs = list(trace_configs)
        self._state = _State()
        self._finalizer = weakref.finalize(self, _shutdown, self._state)

    @property
    def closed(self) -> bool:
        return self._state.closed

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session once the first request opened it (None before and after)."""
        return self._state.session

    def run(self, call: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, _T]]) -> _T:
        """``call(session)`` run to completion on the client's loop; its result or its exception.

        Raises ``RuntimeError`` in a thread whose event loop is running (the hook is synchronous: call
        it through ``asyncio.to_thread`` there) or once the client is closed.
        """
        refuse_running_loop()
        state = self._state
        with state.lock:
            if state.closed:
                raise RuntimeError("this HTTP client is closed")
            if state.runner is None:
                state.runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
            return state.runner.run(self._with_session(call))

    async def _with_session(self, call: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, _T]]) -> _T:
        state = self._state
        if state.session is None:
            state.session = self._new_session()
        return await call(state.session)

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.verify_ssl),
            auto_decompress=False,  # the transport decodes the body itself, under its byte cap
            trace_configs=self.trace_configs or None,
        )

    def close(self) -> None:
        """Close the session, its sockets and the loop (waits for a request another thread is running)."""
        self._finalizer()
