"""ShortInterestHook against the real sandbox over HTTP: the whole REST contract of DESIGN.md §2-§5."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import json
import logging
import pickle
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    ShortInterestAuthError,
    ShortInterestError,
    ShortInterestResponseError,
    ShortInterestServerError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer
from tests._fixtures_hostile import RequestLog
from tests._helpers import MALFORMED, max_in_window

HookFactory = Callable[..., ShortInterestHook]
OK_PAGE = {"ret_code": 0, "ret_msg": "success", "data": {"items": [], "next_key": "-1"}}


def error_body(ret_code: int, code: str, message: str = "scripted") -> str:
    return json.dumps({"ret_code": ret_code, "ret_msg": message, "error": {"code": code, "message": message}})


def test_documented_values_typed(hook_for: HookFactory) -> None:
    page = hook_for().get_page("hk.700", count=2)
    assert (page.symbol, page.market) == ("HK.00700", "HK")
    first = page.items[0]
    assert first["trade_date"] == dt.date(2026, 5, 15)
    assert first["aggregated_short"] == 54177721 and first["avg_daily_short_volume"] == 3755740
    assert first["aggregated_short_ratio"] == 0.59 and first["timestamp"] == 1778774400000
    assert page.items[1]["trade_date"] == dt.date(2026, 5, 8)
    assert page.next_key


# -- the error table, row by row -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "error", "ret_code", "error_code"),
    [
        ("HK.99999", InvalidSymbolError, -7, "invalid_symbol"),
        ("US.NOSUCH", InvalidSymbolError, -7, "invalid_symbol"),
        ("HK.99998", UnsupportedSecurityError, -8, "unsupported"),
        ("US.VIX", UnsupportedSecurityError, -8, "unsupported"),
    ],
)
def test_non_retryable_codes(
    hook_for: HookFactory, sandbox: SandboxServer, symbol: str, error: type, ret_code: int, error_code: str
) -> None:
    with pytest.raises(error) as info:
        hook_for().get_page(symbol)
    assert (info.value.ret_code, info.value.error_code) == (ret_code, error_code)
    assert symbol in str(info.value)
    assert sandbox.stats()["requests"] == 1  # no retry


def test_invalid_parameter_from_server(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.enqueue(status=400, body=error_body(-3, "invalid_parameter", "count out of range"))
    with pytest.raises(InvalidParameterError, match="count out of range") as info:
        hook_for().get_page("HK.00700")
    assert info.value.ret_code == -3 and sandbox.stats()["requests"] == 1


@pytest.mark.parametrize("symbol", ["HK.99997", "US.NODATA"])
def test_no_data_is_empty_not_error(hook_for: HookFactory, symbol: str) -> None:
    hook = hook_for()
    page = hook.get_page(symbol)
    assert page.items == [] and page.next_key is None
    assert hook.get_latest(symbol) is None
    assert hook.get_history(symbol).num_rows == 0


def test_internal_error_retried_then_success(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.enqueue(body=error_body(-5, "internal_error"))
    sandbox.enqueue(status=503, body="<html>busy</html>", headers={"Content-Type": "text/html"})
    page = hook_for().get_page("HK.00700", count=1)
    assert page.items[0]["trade_date"] == dt.date(2026, 5, 15)
    assert sandbox.stats()["requests"] == 3


def test_internal_error_exhausts_retries(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.configure(internal_error_rate=1.0)
    with pytest.raises(ShortInterestServerError, match="gave up after 3 attempt") as info:
        hook_for(max_retries=2).get_page("HK.00700")
    assert info.value.ret_code == -5
    assert sandbox.stats()["requests"] == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retried_and_exhausted(hook_for: HookFactory, sandbox: SandboxServer, status: int) -> None:
    for _ in range(2):
        sandbox.enqueue(
            status=status, body="<html><h1>Bad gateway</h1></html>", headers={"Content-Type": "text/html"}
        )
    with pytest.raises(ShortInterestServerError, match=f"HTTP {status}.*Bad gateway") as info:
        hook_for(max_retries=1).get_page("HK.00700")
    assert info.value.status == status


def test_429_honours_retry_after(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    sleeps: list[float] = []
    sandbox.enqueue(status=429, body="{}", headers={"Retry-After": "2"})
    hook = ShortInterestHook(shortint_conn_id=use_conn(sandbox.url, conn_id="c429"), sleep=sleeps.append)
    assert hook.get_page("HK.00700", count=1).items
    assert len(sleeps) == 1 and 2.0 <= sleeps[0] <= 2.5


def test_backoff_grows_exponentially(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    sleeps: list[float] = []
    sandbox.configure(internal_error_rate=1.0)
    conn_id = use_conn(sandbox.url, conn_id="cbackoff", backoff_base=1.0)
    hook = ShortInterestHook(shortint_conn_id=conn_id, max_retries=4, sleep=sleeps.append)
    with pytest.raises(ShortInterestServerError):
        hook.get_page("HK.00700")
    assert len(sleeps) == 4
    for attempt, delay in enumerate(sleeps):
        assert 2**attempt / 2 <= delay <= 2**attempt  # jittered within [base*2^n / 2, base*2^n]


def test_timeout_retried(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.configure(delay_rate=1.0, delay_seconds=1.0)
    pattern = r"no answer from http://127\.0\.0\.1:\d+ within 0\.2 s"
    with pytest.raises(ShortInterestServerError, match=pattern) as info:
        hook_for(timeout=0.2, max_retries=1).get_page("HK.00700")
    assert (info.value.error_code, info.value.ret_code) == ("timeout", None)
    assert sandbox.stats()["requests"] == 2


def test_refused_port_retried_once(use_conn: Callable[..., str]) -> None:
    """A refused port may be a restarting server: one more attempt, then a message naming the cause."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = ShortInterestHook(
        shortint_conn_id=use_conn(f"http://127.0.0.1:{port}", conn_id="cdown", max_retries=5)
    )
    pattern = r"connection to http://127\.0\.0\.1:\d+ refused \(nothing listens.*after 2 attempt"
    with pytest.raises(ShortInterestServerError, match=pattern) as info:
        hook.get_page("HK.00700")
    assert info.value.error_code == "connection_refused" and hook.requests_made == 2


def test_truncated_transfer_is_retried(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.configure(malformed_rate=1.0)
    with pytest.raises(ShortInterestServerError, match=r"connection to .* failed") as info:
        hook_for(max_retries=1).get_page("HK.00700")
    assert (info.value.error_code, info.value.ret_code) == ("connection_error", None)
    sandbox.configure(malformed_rate=0.0)
    assert hook_for().get_page("HK.00700", count=1).items


@pytest.mark.parametrize(
    ("symbol", "pattern"),
    [
        ("US.HTML", r"US\.HTML: HTTP 200 with a body that is not the API's JSON envelope: '<!DOCTYPE html>"),
        ("US.BADJSON", r"US\.BADJSON: HTTP 200 with a body that is not the API's JSON envelope: '\{"),
        ("US.BADRET", r"US\.BADRET: HTTP 200 with unknown ret_code 42"),
    ],
)
def test_malformed_bodies(hook_for: HookFactory, sandbox: SandboxServer, symbol: str, pattern: str) -> None:
    with pytest.raises(ShortInterestResponseError, match=pattern) as info:
        hook_for().get_page(symbol)
    assert info.value.status == 200 and len(str(info.value)) < 300
    assert sandbox.stats()["requests"] == 1


@pytest.mark.parametrize(
    "body",
    [
        '{"ret_code": 0, "data": null}',
        '{"ret_code": 0, "data": {"items": {}}}',
        '{"ret_code": 0, "data": {"items": [], "next_key": 5}}',
        '{"ret_code": "0", "data": {"items": []}}',
        '{"ret_code": 0, "data": {"items": [{"timestamp_str": "yesterday"}]}}',
        "[1, 2, 3]",
        "",
    ],
)
def test_envelope_violations(hook_for: HookFactory, sandbox: SandboxServer, body: str) -> None:
    sandbox.enqueue(body=body)
    with pytest.raises(ShortInterestResponseError):
        hook_for().get_page("HK.00700")


def test_html_error_page_on_4xx(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    sandbox.enqueue(
        status=404, body="<html><body>Not Found</body></html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(ShortInterestResponseError, match=r"HTTP 404 .*Not Found"):
        hook_for().get_page("HK.00700")


# -- pagination ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["-1", "absent", "empty"])
def test_pagination_end_markers(hook_for: HookFactory, sandbox: SandboxServer, marker: str) -> None:
    sandbox.configure(end_marker=marker)
    expected = sandbox.history("HK.00700")
    hook = hook_for()
    pages = list(hook.iter_pages("HK.00700", page_size=90))
    assert pages[-1].next_key is None and all(p.next_key for p in pages[:-1])
    dates = [row["trade_date"].isoformat() for page in pages for row in page.items]
    assert dates == [item["timestamp_str"] for item in expected]
    assert len(pages) == -(-len(expected) // 90)  # ceil: no empty trailing request
    assert sandbox.stats()["requests"] == len(pages)


def test_repeated_key_raises(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    with pytest.raises(ShortInterestResponseError, match=r"next_key .* twice"):
        list(hook_for().iter_pages("US.LOOPKEY", page_size=5))
    assert sandbox.stats()["requests"] == 2


def test_stop_after_and_since_spend_no_extra_page(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    hook = hook_for()
    full = hook.get_history("US.AAPL")
    assert full.num_rows == len(sandbox.history("US.AAPL")) > 180
    sandbox.reset_stats()
    recent = hook.get_history("US.AAPL", since="2026-01-01", page_size=5)
    assert [d.isoformat() for d in recent.column("trade_date").to_pylist()] == [
        "2026-05-15", "2026-04-30", "2026-04-15", "2026-03-31", "2026-03-13",
        "2026-02-27", "2026-02-13", "2026-01-30", "2026-01-15",
    ]  # fmt: skip
    assert sandbox.stats()["requests"] == 2  # 5 + 5 rows reach 2025-12-31; no third page
    assert recent.schema.equals(full.schema)


def test_count_validated_before_request(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    hook = hook_for()
    for bad in (0, 91, -1, 1.5, "30", True, None):
        with pytest.raises(InvalidParameterError, match="from 1 to 90"):
            hook.get_page("HK.00700", count=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        list(hook.iter_pages("HK.00700", page_size=100))
    with pytest.raises(InvalidParameterError, match="ISO date"):
        hook.get_history("HK.00700", since="last week")
    with pytest.raises(InvalidParameterError, match="next_key"):
        hook.get_page("HK.00700", next_key="-1")
    assert sandbox.stats()["requests"] == 0


def test_malformed_symbols_send_nothing(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    hook = hook_for()
    bad = [*MALFORMED, "SH.600000", "SZ.000001"]
    assert len(bad) >= 15
    for symbol in bad:
        with pytest.raises((InvalidParameterError, UnsupportedSecurityError)):
            hook.get_page(symbol)  # type: ignore[arg-type]
        with pytest.raises((InvalidParameterError, UnsupportedSecurityError)):
            hook.get_history(symbol)  # type: ignore[arg-type]
    assert sandbox.stats()["requests"] == 0


# -- rate limit ----------------------------------------------------------------------------------------


def test_hook_respects_time_scaled_limit(use_conn: Callable[..., str]) -> None:
    """5 calls / 0.5 s on both sides: the server never answers 429 and no window holds more than 5."""
    with SandboxServer(SandboxConfig(rate_limit_calls=5, rate_limit_period=0.5)) as server:
        conn_id = use_conn(server.url, conn_id="climit", rate_limit_calls=5, rate_limit_period=0.5)
        hook = ShortInterestHook(shortint_conn_id=conn_id)
        pages = list(hook.iter_pages("US.AAPL", page_size=10))
        stats = server.stats()
    assert len(pages) >= 20
    assert stats["rate_limited"] == 0 and stats["by_status"] == {"200": len(pages)}
    assert max_in_window(stats["timestamps"], 0.5) == 5


def test_server_429_when_client_budget_too_loose(use_conn: Callable[..., str]) -> None:
    """If the server's budget is smaller than the connection says, 429s are retried and paging completes."""
    with SandboxServer(SandboxConfig(rate_limit_calls=3, rate_limit_period=0.3)) as server:
        conn_id = use_conn(server.url, conn_id="cloose", rate_limit_calls=100, max_retries=10)
        pages = list(ShortInterestHook(shortint_conn_id=conn_id).iter_pages("HK.00700", page_size=50))
        stats = server.stats()
    assert stats["rate_limited"] >= 1
    assert sum(len(p.items) for p in pages) == len(server.history("HK.00700"))


# -- connection and secrets ----------------------------------------------------------------------------


def test_token_sent_and_never_leaked(
    use_conn: Callable[..., str], caplog: pytest.LogCaptureFixture, request_log: RequestLog
) -> None:
    token = "s3cr3t-T0KEN-value"
    caplog.set_level(logging.DEBUG)
    with SandboxServer(SandboxConfig(rate_limit_calls=0, token=token)) as server:
        good = ShortInterestHook(
            shortint_conn_id=use_conn(server.url, conn_id="ctok", password=token),
            trace_configs=[request_log.trace],
        )
        assert good.get_page("HK.00700", count=1).items
        messages: list[str] = []
        for symbol in ("HK.99999", "US.HTML", "SH.600000"):
            with pytest.raises(ShortInterestError) as info:
                good.get_page(symbol)
            messages.append(str(info.value) + repr(info.value))
        server.configure(internal_error_rate=1.0)
        with pytest.raises(ShortInterestServerError) as info:
            good.get_page("HK.00700")
        messages.append(str(info.value))
        server.configure(internal_error_rate=0.0)
        bad = ShortInterestHook(shortint_conn_id=use_conn(server.url, conn_id="cbad", password="wrong"))
        with pytest.raises(ShortInterestAuthError, match="HTTP 401") as auth:
            bad.get_page("HK.00700")
        messages.append(str(auth.value))
        anonymous = ShortInterestHook(shortint_conn_id=use_conn(server.url, conn_id="canon"))
        ok, message = anonymous.test_connection()
        assert not ok and "401" in message
        messages.append(message)
    assert all(token not in text for text in messages)
    assert token not in caplog.text and all(token not in r.getMessage() for r in caplog.records)
    # The token travels in the Authorization header of every request, and nowhere else.
    assert request_log.headers and all(h["Authorization"] == f"Bearer {token}" for h in request_log.headers)
    assert all(token not in url for url in request_log.urls)
    settings = good.settings
    shown = [repr(settings), str(settings), repr(dataclasses.asdict(settings)), f"{settings.token}"]
    assert all(token not in text for text in shown) and "***" in repr(dataclasses.asdict(settings))
    assert settings.token is not None and settings.token.reveal() == token
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(settings)
    good.close()


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"timeout": "soon"}, "extra 'timeout'"),
        ({"timeout": 0}, "extra 'timeout'"),
        ({"rate_limit_calls": 0}, "extra 'rate_limit_calls'"),
        ({"max_retries": -1}, "extra 'max_retries'"),
        ({"verify_ssl": "maybe"}, "extra 'verify_ssl'"),
    ],
)
def test_bad_extras(
    use_conn: Callable[..., str], sandbox: SandboxServer, extra: dict[str, Any], pattern: str
) -> None:
    hook = ShortInterestHook(shortint_conn_id=use_conn(sandbox.url, conn_id="cextra", **extra))
    with pytest.raises(InvalidParameterError, match=pattern):
        hook.get_page("HK.00700")
    assert sandbox.stats()["requests"] == 0


def test_host_and_port_forms(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CPORT",
        json.dumps({"conn_type": "shortint", "host": "http://127.0.0.1", "port": sandbox.port}),
    )
    hook = ShortInterestHook(shortint_conn_id="cport")
    assert hook.settings.base_url == sandbox.url
    assert hook.get_latest("US.AAPL") is not None
    monkeypatch.setenv("AIRFLOW_CONN_CNOHOST", json.dumps({"conn_type": "shortint"}))
    with pytest.raises(InvalidParameterError, match="has no host"):
        ShortInterestHook(shortint_conn_id="cnohost").get_latest("US.AAPL")


def test_one_session_kept_alive_across_pages_and_symbols(
    sandbox: SandboxServer, use_conn: Callable[..., str], request_log: RequestLog
) -> None:
    """Every page of two symbols' histories goes over one connection of the hook's one session."""
    hook = ShortInterestHook(
        shortint_conn_id=use_conn(sandbox.url, conn_id="ckeep"), trace_configs=[request_log.trace]
    )
    client = hook.get_conn()
    hook.get_history("HK.00700")
    session = client.session
    hook.get_history("US.AAPL", page_size=30)
    assert hook.get_conn() is client and client.session is session is not None
    assert len(request_log.urls) == sandbox.stats()["requests"] == hook.requests_made > 5
    assert request_log.connections == 1
    print(f"\n{len(request_log.urls)} requests over 2 symbols: {request_log.connections} connection opened")
    hook.close()
    assert client.closed and client.session is None


def _our_sockets(port: int) -> list[Any]:
    import psutil

    return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port]


def test_close_leaves_nothing_behind_and_the_hook_works_again(
    sandbox: SandboxServer, use_conn: Callable[..., str]
) -> None:
    """close() ends the session's sockets, its event loop and its resolver threads; the next call opens
    anew. (A host name, not an address, so that the name is resolved in a thread of the loop.)"""
    before = set(threading.enumerate())
    url = f"http://localhost:{sandbox.port}"
    hook = ShortInterestHook(shortint_conn_id=use_conn(url, conn_id="cclose"))
    assert hook.get_latest("HK.00700") is not None
    assert len(_our_sockets(sandbox.port)) == 1  # kept alive between calls
    resolvers = [t for t in threading.enumerate() if t.name.startswith("asyncio_") and t not in before]
    assert resolvers  # the loop's executor resolved "localhost"
    client = hook.get_conn()
    hook.close()
    assert client.closed and _our_sockets(sandbox.port) == []
    assert not any(t.is_alive() for t in resolvers)
    assert {t for t in threading.enumerate() if t.is_alive()} - before <= {
        t for t in threading.enumerate() if t.name.endswith("(process_request_thread)")
    }  # only the sandbox's handler of the closed connection, which ends on its own
    assert hook.get_latest("US.AAPL") is not None and hook.get_conn() is not client
    hook.close()
    hook.close()  # closing twice is harmless
    assert _our_sockets(sandbox.port) == []


def test_an_unclosed_hook_is_closed_when_collected(
    sandbox: SandboxServer, use_conn: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """A hook dropped without close() (a notebook's habit) releases its socket when it is collected,
    without aiohttp's "Unclosed client session" complaint."""
    hook = ShortInterestHook(shortint_conn_id=use_conn(sandbox.url, conn_id="cdrop"))
    assert hook.get_latest("HK.00700") is not None
    assert len(_our_sockets(sandbox.port)) == 1
    del hook
    gc.collect()
    assert _our_sockets(sandbox.port) == []
    assert "Unclosed" not in caplog.text


def test_hook_from_any_thread_without_a_running_loop(
    sandbox: SandboxServer, use_conn: Callable[..., str]
) -> None:
    """The synchronous methods work from a plain thread and from asyncio.to_thread (as the triggers call
    them); inside a running event loop they refuse with one clear sentence; close() works from anywhere."""
    hook = ShortInterestHook(shortint_conn_id=use_conn(sandbox.url, conn_id="cthreads"))
    found: list[Any] = []
    worker = threading.Thread(target=lambda: found.append(hook.get_latest("HK.00700")))
    worker.start()
    worker.join(timeout=30)
    assert found and found[0]["trade_date"] == dt.date(2026, 5, 15)

    async def from_a_coroutine() -> tuple[Any, str]:
        latest = await asyncio.to_thread(hook.get_latest, "US.AAPL")
        with pytest.raises(RuntimeError, match="cannot run inside a running event loop") as refused:
            hook.get_latest("US.AAPL")
        hook.close()  # from the loop's own thread: closed in a helper thread
        return latest, str(refused.value)

    latest, refusal = asyncio.run(from_a_coroutine())
    assert latest is not None and "asyncio.to_thread" in refusal
    assert hook.get_conn().closed is False and _our_sockets(sandbox.port) == []
    assert hook.requests_made == sandbox.stats()["requests"] == 2


# -- inputs checked before any request ---------------------------------------------------------------


@pytest.mark.parametrize("conn_id", [None, "", "   "])
def test_missing_connection_id_is_the_providers_error(conn_id: Any) -> None:
    from airflow_provider_shortint.hooks.base import ahook_for
    from airflow_provider_shortint.hooks.base import hook_for as base_hook_for

    pattern = "connection id must name an Airflow connection"
    with pytest.raises(InvalidParameterError, match=pattern):
        ShortInterestHook(shortint_conn_id=conn_id)
    with pytest.raises(InvalidParameterError, match=pattern):
        base_hook_for(conn_id)
    with pytest.raises(InvalidParameterError, match=pattern):
        asyncio.run(ahook_for(conn_id))


def test_integral_counts_of_any_type(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    """numpy integers are integers (operator.index); numpy booleans and floats are not."""
    import numpy as np

    hook = hook_for()
    assert len(hook.get_page("HK.00700", count=np.int64(3)).items) == 3
    assert len(hook.get_history("US.AAPL", since="2026-01-01", page_size=np.int32(5))) == 9
    _, hk_df = hook.get_short_interest("HK.00700", num=np.uint8(2))
    assert len(hk_df) == 2
    requests = sandbox.stats()["requests"]
    for bad in (np.True_, np.float64(30.0), np.int64(91), np.int64(0)):
        with pytest.raises(InvalidParameterError, match="count must be an integer from 1 to 90"):
            hook.get_page("HK.00700", count=bad)
    assert sandbox.stats()["requests"] == requests


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param("abc\r\nX-Evil: 1", "control or non-printable", id="crlf"),
        pytest.param("abc\x00", "control or non-printable", id="nul"),
        pytest.param("abc\u2028", "control or non-printable", id="line-separator"),
        pytest.param("\ud800", "control or non-printable", id="lone-surrogate"),
        pytest.param("k" * 1025, "1,025 characters, more than the 1,024 allowed", id="1025-chars"),
        pytest.param("k" * 100_000, "100,000 characters", id="100-KB"),
    ],
)
def test_bad_next_key_from_the_caller_spends_no_request(
    hook_for: HookFactory, sandbox: SandboxServer, key: str, reason: str
) -> None:
    hook = hook_for()
    for call in (
        lambda: hook.get_page("HK.00700", next_key=key),
        lambda: hook.get_short_interest("HK.00700", next_key=key),
    ):
        with pytest.raises(InvalidParameterError, match=reason) as caught:
            call()
        assert len(caught.value.message) < 300 and "\n" not in caught.value.message
    assert sandbox.stats()["requests"] == 0 == hook.requests_made


def test_next_key_at_the_bound_is_sent(hook_for: HookFactory, sandbox: SandboxServer) -> None:
    """1,024 printable characters (any script) reach the server, which refuses the unknown key (-3)."""
    with pytest.raises(InvalidParameterError, match="next_key") as caught:
        hook_for().get_page("HK.00700", next_key="ключ" * 256)
    assert caught.value.ret_code == -3 and sandbox.stats()["requests"] == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param("k" * 1025, "1,025 characters", id="too-long"),
        pytest.param("next\r\nkey", "control or non-printable", id="crlf"),
    ],
)
def test_bad_next_key_from_the_server_is_refused(
    hook_for: HookFactory, sandbox: SandboxServer, key: str, reason: str
) -> None:
    body = {"ret_code": 0, "data": {"items": [], "next_key": key}}
    sandbox.enqueue(body=json.dumps(body))
    with pytest.raises(
        ShortInterestResponseError, match=rf"server's next_key .* cannot be sent back: .*{reason}"
    ):
        hook_for().get_page("HK.00700")
    assert sandbox.stats()["requests"] == 1


# -- SDK parity ----------------------------------------------------------------------------------------


def test_sdk_parity_hk(hook_for: HookFactory) -> None:
    hook = hook_for()
    us_df, hk_df = hook.get_short_interest("HK.00700", num=10)
    assert us_df.empty and us_df.attrs["next_key"] == "-1"
    assert list(hk_df.columns[:6]) == [
        "timestamp", "timestamp_str", "aggregated_short", "aggregated_short_ratio",
        "close_price", "last_close_price",
    ]  # fmt: skip
    assert len(hk_df) == 10 and hk_df.attrs["next_key"] not in ("", "-1")
    assert hk_df["timestamp_str"].tolist()[:3] == ["2026-05-15", "2026-05-08", "2026-04-30"]
    assert hk_df["timestamp"].iloc[2] == 1777478400  # seconds, as the SDK prints it
    assert hk_df["aggregated_short"].tolist()[2:4] == [51480638, 51888755]
    assert str(hk_df["aggregated_short"].dtype) == "int64"
    # Walk to the end: the last page's key is the SDK's "-1" sentinel.
    key = hk_df.attrs["next_key"]
    pages = 1
    while key != "-1":
        _, hk_df = hook.get_short_interest("HK.00700", next_key=key, num=90)
        key = hk_df.attrs["next_key"]
        pages += 1
    assert pages >= 5


def test_sdk_parity_us_and_errors(hook_for: HookFactory) -> None:
    hook = hook_for()
    us_df, hk_df = hook.get_short_interest("US.AAPL")
    assert hk_df.empty and len(us_df) == 30
    assert list(us_df.columns[:8]) == [
        "timestamp", "timestamp_str", "shares_short", "short_percent", "avg_daily_share_volume",
        "days_to_cover", "close_price", "last_close_price",
    ]  # fmt: skip
    with pytest.raises(InvalidSymbolError):
        hook.get_short_interest("US.NOSUCH")
    with pytest.raises(InvalidParameterError):
        hook.get_short_interest("US.AAPL", num=0)


def test_test_connection(hook_for: HookFactory) -> None:
    ok, message = hook_for().test_connection()
    assert ok and "2026-05-15" in message


def test_host_without_scheme_means_https() -> None:
    from types import SimpleNamespace

    from airflow_provider_shortint.transports.rest.settings import RestSettings

    conn = SimpleNamespace(conn_id="c", host="api.example.com/", port=8443, password="", extra_dejson={})
    settings = RestSettings.from_connection(conn)
    assert settings.base_url == "https://api.example.com:8443" and settings.token is None


def test_budget_key_and_redis_extras_choose_the_limiter(use_conn: Callable[..., str]) -> None:
    """Connections with one ``rate_limit_key`` share one window whatever their URL; the Redis extra is
    passed to the limiter (DESIGN §9); without a key every connection shares the account's default budget
    (``connection.DEFAULT_BUDGET_KEY``), whatever its endpoint."""
    a = ShortInterestHook(
        shortint_conn_id=use_conn("http://a.example", conn_id="ka", rate_limit_key="acct-7")
    )
    b = ShortInterestHook(
        shortint_conn_id=use_conn("http://b.example", conn_id="kb", rate_limit_key="acct-7")
    )
    c = ShortInterestHook(shortint_conn_id=use_conn("http://a.example", conn_id="kc"))
    d = ShortInterestHook(shortint_conn_id=use_conn("http://b.example", conn_id="kd"))
    assert a.rate_limiter is b.rate_limiter
    assert c.rate_limiter is d.rate_limiter and c.rate_limiter is not a.rate_limiter
    redis = ShortInterestHook(
        shortint_conn_id=use_conn("http://a.example", conn_id="kr", rate_limit_redis_conn_id="redis_budget")
    )
    assert type(redis.rate_limiter).__name__ == "RedisRateLimiter"
    assert redis.rate_limiter is not c.rate_limiter
