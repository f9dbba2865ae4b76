"""The REST hook against a hostile server (tests/_fixtures_hostile.py) and against misconfiguration.

Each case asserts what the provider did — the exception class and message, the number of requests or
connections the server saw, the bytes it managed to send, the peak of Python allocations — never how
long it took (the machine is noisy); times are measured in docs/RELIABILITY.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pickle
import socket
import time
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    RejectedSymbolsError,
    ShortInterestConnectionError,
    ShortInterestError,
    ShortInterestResponseError,
    ShortInterestServerError,
)
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.records import midnight_ms
from airflow_provider_shortint.retry import MAX_TOTAL_WAIT
from airflow_provider_shortint.transports.rest.http import MAX_RESPONSE_BYTES
from tests._fixtures_hostile import (
    HostileServer,
    Request,
    chunked,
    envelope,
    gzip_bomb,
    head,
    respond,
)

HookFactory = Callable[..., ShortInterestHook]
_ids = iter(range(1_000_000))


@pytest.fixture
def hook_on(use_conn: Callable[..., str]) -> HookFactory:
    """A hook on ``url`` with the test connection's fast retries; extras may be overridden."""

    def build(url: str, sleep: Callable[[float], None] | None = None, **extra: Any) -> ShortInterestHook:
        password = extra.pop("password", None)
        conn_id = use_conn(url, conn_id=f"hostile_{next(_ids)}", password=password, **extra)
        options: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        return ShortInterestHook(shortint_conn_id=conn_id, **options)

    return build


def item(symbol: str, day: dt.date) -> dict[str, Any]:
    zone = "Asia/Hong_Kong" if symbol.startswith("HK.") else "America/New_York"
    return {"timestamp": midnight_ms(zone, day), "timestamp_str": day.isoformat(), "close_price": 1.5}


# -- every wait bounded: a total deadline per response ----------------------------------------------------


@pytest.mark.parametrize("part", ["body", "headers"])
def test_drip_fed_response_is_cut_at_the_deadline(
    hostile: HostileServer, hook_on: HookFactory, part: str
) -> None:
    """One byte every 50 ms never trips a per-read timeout of 1 s; the 1-s deadline cuts it anyway."""
    body = envelope([item("HK.00700", dt.date(2026, 5, 15))]).ljust(1000)
    pad = {"X-Pad": "a" * 1000}

    def drip(conn: socket.socket, request: Request, server: HostileServer) -> None:
        if part == "headers":
            server.write(conn, head(200, pad, len(body)), drip=0.05)
        else:
            server.write(conn, head(200, None, len(body)))
            server.write(conn, body, drip=0.05)

    hostile.behave(drip)
    hook = hook_on(hostile.url, timeout=1, max_retries=0)
    hook.get_conn(), hook.transport  # settings read and modules imported: only the request is timed
    import aiohttp  # noqa: F401

    started = time.perf_counter()
    with pytest.raises(ShortInterestServerError, match=r"no answer from .* within 1 s") as caught:
        hook.get_page("HK.00700", count=1)
    elapsed = time.perf_counter() - started  # printed, never asserted (the machine is shared)
    assert caught.value.error_code == "timeout" and hook.requests_made == 1
    hostile.settle()
    dripped = hostile.sent[-1]
    print(
        f"\n{part} dripped at 1 byte / 50 ms: cut by the 1-s deadline after {elapsed:.2f} s, {dripped} bytes"
    )
    # 1 s / 50 ms = 20 bytes, and a few more before the server notices the client left; never the 1000+.
    assert 0 < dripped < 100, dripped


def test_deadline_allows_a_slow_but_complete_answer(hostile: HostileServer, hook_on: HookFactory) -> None:
    """A drip that ends before the deadline is read whole (the deadline is not a per-read timeout)."""
    body = envelope([item("HK.00700", dt.date(2026, 5, 15))])

    def slow(conn: socket.socket, request: Request, server: HostileServer) -> None:
        server.write(conn, head(200, None, len(body)))
        server.write(conn, body[:20], drip=0.01)
        server.write(conn, body[20:])

    hostile.behave(slow)
    page = hook_on(hostile.url, timeout=30, max_retries=0).get_page("HK.00700", count=1)
    assert page.items[0]["trade_date"] == dt.date(2026, 5, 15)


# -- every byte bounded: the cap holds after decompression --------------------------------------------------


def failure_and_peak(call: Callable[[], object], pattern: str) -> tuple[ShortInterestError, int]:
    """The ShortInterestResponseError ``call`` raises, and the peak of Python allocations meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(ShortInterestResponseError, match=pattern) as caught:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value, peak


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(256 * 1024 * 1024)  # 256 MiB of zeros, a few hundred KB on the wire


def test_gzip_bomb_stops_at_the_cap(hostile: HostileServer, hook_on: HookFactory, bomb: bytes) -> None:
    hook = hook_on(hostile.url, max_retries=3)
    hostile.behave(respond(200, envelope([])))
    hook.get_page("HK.00700", count=5)  # the session, its loop and the imports exist before measuring
    hostile.behave(respond(200, bomb, {"Content-Encoding": "gzip, gzip"}))
    error, peak = failure_and_peak(lambda: hook.get_page("HK.00700", count=5), "inflates to more than")
    print(f"\ngzip bomb of 256 MiB ({len(bomb):,} bytes on the wire): peak Python allocations {peak:,} bytes")
    assert len(bomb) < MAX_RESPONSE_BYTES < 256 * 1024 * 1024
    assert peak < 4 * MAX_RESPONSE_BYTES, f"peak {peak:,} bytes"
    assert len(hostile.requests) == 2 and hook.requests_made == 2  # a malformed answer is not retried
    assert "limit is 2,097,152 bytes" in error.message


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_page_of_a_million_items(hostile: HostileServer, hook_on: HookFactory, framing: str) -> None:
    body = json.dumps({"ret_code": 0, "data": {"items": [{}] * 1_000_000, "next_key": "-1"}}).encode()
    hook = hook_on(hostile.url)
    hostile.behave(respond(200, envelope([])))
    hook.get_page("HK.00700", count=30)  # warm: only the hostile answer is measured
    hostile.behave(chunked(200, body) if framing == "chunked" else respond(200, body))
    error, peak = failure_and_peak(lambda: hook.get_page("HK.00700", count=30), "response too large")
    assert peak < 4 * MAX_RESPONSE_BYTES, f"peak {peak:,} bytes"
    print(f"\n{len(body):,}-byte page ({framing}): peak Python allocations {peak:,} bytes")
    expected = "announces" if framing == "content-length" else "more than 2,097,152 bytes arrived"
    assert expected in error.message and hook.requests_made == 2


def test_more_items_than_asked_for(hostile: HostileServer, hook_on: HookFactory) -> None:
    days = [dt.date(2026, 5, 15) - dt.timedelta(days=7 * n) for n in range(6)]
    hostile.behave(respond(200, envelope([item("HK.00700", day) for day in days])))
    with pytest.raises(ShortInterestResponseError, match=r"sent 6 items for count=5"):
        hook_on(hostile.url).get_page("HK.00700", count=5)


# -- every page loop bounded -------------------------------------------------------------------------------


def endless(symbol: str) -> Callable[[socket.socket, Request, HostileServer], None]:
    """A fresh key and an ever older record on every page, for ever."""

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        n = len(server.requests)
        day = dt.date(2026, 5, 15) - dt.timedelta(days=n)
        server.write(conn, head(200, None, None) + envelope([item(symbol, day)], next_key=f"key-{n}"))

    return behaviour


@pytest.mark.parametrize(("symbol", "bound"), [("HK.00700", 60), ("US.AAPL", 31)])
def test_endless_next_keys_stop_at_the_history_bound(
    hostile: HostileServer, hook_on: HookFactory, symbol: str, bound: int
) -> None:
    """New keys for ever (not a cycle): paging stops after the most pages a history can take."""
    hostile.behave(endless(symbol))
    hook = hook_on(hostile.url)
    with pytest.raises(ShortInterestResponseError, match=rf"still had a next page after {bound} pages"):
        list(hook.iter_pages(symbol, page_size=90))
    assert len(hostile.requests) == bound == hook.max_pages(symbol, 90)
    with pytest.raises(ShortInterestResponseError, match="more than the history of one security"):
        hook.get_history(symbol, since="1900-01-01", page_size=90)
    assert len(hostile.requests) == 2 * bound


def test_repeated_trade_date_across_pages(hostile: HostileServer, hook_on: HookFactory) -> None:
    """Overlapping pages with the same values are merged; with different values the hook refuses them."""
    first, second = dt.date(2026, 5, 15), dt.date(2026, 5, 8)
    changed = {**item("HK.00700", second), "close_price": 9.0}
    mode = {"name": "overlap"}
    pages = {
        None: envelope([item("HK.00700", first), item("HK.00700", second)], "k1"),
        "k1": envelope([item("HK.00700", second), item("HK.00700", dt.date(2026, 4, 30))], "-1"),
        "k2": envelope([changed], "-1"),
    }

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        key = request.target.partition("next_key=")[2] or None
        body = pages["k2" if mode["name"] == "conflict" and key == "k1" else key]
        server.write(conn, head(200, None, len(body)) + body)

    hostile.behave(behaviour)
    hook = hook_on(hostile.url)
    dates = hook.get_history("HK.00700", page_size=2).column("trade_date").to_pylist()
    assert dates == [first, second, dt.date(2026, 4, 30)]
    pages_seen = list(hook.iter_pages("HK.00700", page_size=2))
    assert [len(p.items) for p in pages_seen] == [2, 1]
    mode["name"] = "conflict"
    for call in (
        lambda: hook.get_history("HK.00700", page_size=2),
        lambda: list(hook.iter_pages("HK.00700", 2)),
    ):
        with pytest.raises(
            ShortInterestResponseError, match=r"2026-05-08 came twice .*close_price 1\.5 vs 9\.0"
        ):
            call()


# -- no secret in any text --------------------------------------------------------------------------------

TOKEN = "tok-ECHOED-0123456789abcdef"


def echo(status: int, template: str) -> Callable[[socket.socket, Request, HostileServer], None]:
    """Answers with the request's Authorization header (the token) pasted into ``template``."""

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        body = template.replace("AUTH", request.headers.get("authorization", "")).encode()
        server.write(
            conn, head(status, {"X-Echo": request.headers.get("authorization", "")}, len(body)) + body
        )

    return behaviour


def texts_of(err: BaseException) -> str:
    parts = [str(err), repr(err), getattr(err, "message", ""), "".join(traceback.format_exception(err))]
    parts += [repr(pickle.loads(pickle.dumps(err))), repr(vars(err))]
    return "\n".join(parts)


def test_echoed_token_is_masked_everywhere(
    hostile: HostileServer, hook_on: HookFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = hook_on(hostile.url, password=TOKEN, max_retries=1)
    seen: list[str] = []
    cases: list[tuple[type[ShortInterestError], str, int, str]] = [
        (
            InvalidSymbolError,
            "HK.00700",
            200,
            '{"ret_code": -7, "error": {"code": "AUTH", "message": "bad AUTH"}}',
        ),
        (ShortInterestServerError, "HK.00700", 200, '{"ret_code": -5, "ret_msg": "busy for AUTH"}'),
        (ShortInterestServerError, "HK.00700", 503, "<html>AUTH is overloaded</html>"),
        (ShortInterestResponseError, "HK.00700", 200, '{"ret_code": 77, "ret_msg": "AUTH"}'),
        (ShortInterestResponseError, "HK.00700", 404, "no route for AUTH"),
        (
            ShortInterestResponseError,
            "HK.00700",
            200,
            '{"ret_code": 0, "data": {"items": [{"timestamp_str": "AUTH"}]}}',
        ),
        (
            ShortInterestResponseError,
            "HK.00700",
            200,
            '{"ret_code": 0, "data": {"items": [], "next_key": "next-AUTH"}}',
        ),
    ]
    for error, symbol, status, template in cases:
        hostile.behave(echo(status, template))
        with pytest.raises(error) as caught:
            hook.get_page(symbol, count=5)
        seen.append(texts_of(caught.value))
    ok, message = hook.test_connection()
    assert not ok
    seen.append(message)
    assert all(request.headers["authorization"] == f"Bearer {TOKEN}" for request in hostile.requests)

    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    hostile.behave(echo(200, '{"ret_code": -7, "error": {"code": "invalid_symbol", "message": "no AUTH"}}'))
    op = ShortInterestToParquetOperator(
        task_id="echo",
        symbols="HK.00700",
        lake_path=str(tmp_path / "lake"),
        shortint_conn_id=hook.shortint_conn_id,
    )
    from airflow.sdk.execution_time.context import OutletEventAccessors

    with pytest.raises(RejectedSymbolsError) as rejected:
        op.execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    seen.append(texts_of(rejected.value) + repr(rejected.value.failures))
    everything = "\n".join(seen) + caplog.text
    assert "bad Bearer ***" in everything and "next-Bearer ***" not in everything
    assert TOKEN not in everything and TOKEN[4:] not in everything


# -- misconfiguration fails fast, with its cause ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_port_with_default_settings_fails_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default extras (5 retries, backoff 1 s): a refused port gets 2 attempts and one wait of <= 1 s."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_REFUSED_DEFAULTS", json.dumps({"conn_type": "shortint", "host": url}))
    slept: list[float] = []
    hook = ShortInterestHook(shortint_conn_id="refused_defaults", sleep=slept.append)
    started = time.perf_counter()
    with pytest.raises(
        ShortInterestServerError, match=r"refused \(nothing listens on 127\.0\.0\.1:\d+"
    ) as caught:
        hook.get_latest("HK.00700")
    elapsed = time.perf_counter() - started
    print(f"\nrefused port: 2 attempts in {elapsed:.3f} s plus one backoff of {slept[0]:.2f} s")
    assert caught.value.error_code == "connection_refused"
    assert hook.requests_made == 2 and len(slept) == 1 and slept[0] <= 1.0
    ok, message = hook.test_connection()
    assert not ok and "refused" in message and hook.requests_made == 3 and len(slept) == 1  # no retry


@pytest.mark.parametrize(
    ("case", "pattern", "error_code"),
    [
        ("unresolvable", r"cannot resolve the host .*name not resolved", "name_not_resolved"),
        (
            "http-on-https",
            r"TLS handshake with 127\.0\.0\.1:\d+ failed: the server answered in plain HTTP",
            "tls_handshake_failed",
        ),
        ("untrusted-cert", r"TLS certificate of 127\.0\.0\.1:\d+ not trusted", "tls_handshake_failed"),
    ],
)
def test_misconfiguration_is_not_retried(
    hostile: HostileServer,
    hostile_tls: HostileServer,
    hook_on: HookFactory,
    case: str,
    pattern: str,
    error_code: str,
) -> None:
    hostile.behave(respond(200, envelope([])))
    hostile_tls.behave(respond(200, envelope([])))
    url = {
        "unresolvable": "http://no-such-host.invalid",
        "http-on-https": hostile.url.replace("http://", "https://"),
        "untrusted-cert": hostile_tls.url,
    }[case]
    hook = hook_on(url, max_retries=5, password=TOKEN)
    with pytest.raises(ShortInterestConnectionError, match=pattern) as caught:
        hook.get_latest("HK.00700")
    assert caught.value.error_code == error_code and hook.requests_made == 1
    ok, message = hook.test_connection()
    assert not ok and "ShortInterestConnectionError" in message and hook.requests_made == 2
    assert TOKEN not in texts_of(caught.value) + message
    server = hostile if case == "http-on-https" else hostile_tls
    assert server.connections == (2 if case != "unresolvable" else 0)
    assert hostile.requests == [] and hostile_tls.requests == []  # no request ever got through


def test_tls_works_when_verification_is_off(hostile_tls: HostileServer, hook_on: HookFactory) -> None:
    """The deadline adapter serves https too: the self-signed server answers once verify_ssl is false."""
    hostile_tls.behave(respond(200, envelope([item("HK.00700", dt.date(2026, 5, 15))])))
    page = hook_on(hostile_tls.url, verify_ssl=False).get_page("HK.00700", count=1)
    assert page.items[0]["trade_date"] == dt.date(2026, 5, 15) and len(hostile_tls.requests) == 1


def test_handshake_cut_by_the_server_is_retried(
    handshake_cutter: HostileServer, hook_on: HookFactory
) -> None:
    """An EOF in the TLS handshake (a load balancer restarting) is transient: retried, then a server error;
    only an untrusted certificate or plain HTTP on https fails at once (test_misconfiguration_is_not_retried).
    """
    slept: list[float] = []
    hook = hook_on(handshake_cutter.url, sleep=slept.append, max_retries=2)
    with pytest.raises(
        ShortInterestServerError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed"
    ) as caught:
        hook.get_latest("HK.00700")
    assert (
        caught.value.error_code == "connection_error" and "gave up after 3 attempt(s)" in caught.value.message
    )
    assert hook.requests_made == 3 == handshake_cutter.connections and len(slept) == 2


# -- redirects, stale pages, odd statuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "shown_as"),
    [
        ("/v1/quote/HK.00700/short-selling/short-interest?count=1", "http://127.0.0.1:{port}"),  # a loop
        ("https://user:secret@elsewhere.example:8443/api?token=leak#frag", "https://elsewhere.example:8443"),
    ],
)
def test_redirect_is_one_request_and_a_clear_error(
    hostile: HostileServer, hook_on: HookFactory, location: str, shown_as: str
) -> None:
    """A 3xx is not followed (each hop would escape the budget slot, the deadline and the byte cap), nor
    retried; the error names the status and the target's scheme and host, never its credentials or query."""
    hostile.behave(respond(302, b"", {"Location": location}))
    hook = hook_on(hostile.url, max_retries=5)
    with pytest.raises(ShortInterestResponseError, match=r"HTTP 302 redirect to ") as caught:
        hook.get_latest("HK.00700")
    message = caught.value.message
    assert shown_as.format(port=hostile.port) in message and caught.value.status == 302
    assert not any(secret in texts_of(caught.value) for secret in ("user", "secret", "token=leak", "frag"))
    assert len(hostile.requests) == 1 == hook.requests_made


def test_same_page_under_fresh_keys_stops(hostile: HostileServer, hook_on: HookFactory) -> None:
    """A server re-serving one page under ever new keys is stopped at the second page, naming the symbol."""
    page = [item("US.AAPL", dt.date(2026, 5, 15)), item("US.AAPL", dt.date(2026, 4, 30))]

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        server.write(conn, head(200, None, None) + envelope(page, next_key=f"fresh-{len(server.requests)}"))

    hostile.behave(behaviour)
    hook = hook_on(hostile.url)
    pattern = r"US\.AAPL: page 2 reaches back only to 2026-04-30, no older than the page before it"
    with pytest.raises(ShortInterestResponseError, match=pattern) as caught:
        hook.get_history("US.AAPL", page_size=2)
    assert caught.value.symbol == "US.AAPL" and len(hostile.requests) == 2


def test_408_with_an_html_body_is_retried(hostile: HostileServer, hook_on: HookFactory) -> None:
    """408 (the server timed out waiting for us) is transient like a 5xx, whatever its body."""

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        if len(server.requests) == 1:
            page = b"<html>Request Timeout</html>"
            server.write(conn, head(408, None, len(page)) + page)
        else:
            body = envelope([item("HK.00700", dt.date(2026, 5, 15))])
            server.write(conn, head(200, None, len(body)) + body)

    hostile.behave(behaviour)
    slept: list[float] = []
    hook = hook_on(hostile.url, sleep=slept.append)
    latest = hook.get_latest("HK.00700")
    assert latest is not None and latest["trade_date"] == dt.date(2026, 5, 15)
    assert len(hostile.requests) == 2 and len(slept) == 1


def test_internal_error_honours_retry_after(hostile: HostileServer, hook_on: HookFactory) -> None:
    """ret_code -5 with Retry-After: the wait is at least what the server asked for."""
    busy = json.dumps({"ret_code": -5, "ret_msg": "busy"}).encode()

    def behaviour(conn: socket.socket, request: Request, server: HostileServer) -> None:
        if len(server.requests) == 1:
            server.write(conn, head(200, {"Retry-After": "7"}, len(busy)) + busy)
        else:
            body = envelope([])
            server.write(conn, head(200, None, len(body)) + body)

    hostile.behave(behaviour)
    slept: list[float] = []
    assert hook_on(hostile.url, sleep=slept.append).get_latest("HK.00700") is None
    assert len(slept) == 1 and 7.0 <= slept[0] <= 7.8 and len(hostile.requests) == 2


def test_retries_stop_at_the_total_wait_budget(hostile: HostileServer, hook_on: HookFactory) -> None:
    """Retry-After: 300 on every answer and 100 retries allowed: the waits stop at MAX_TOTAL_WAIT (900 s),
    not after 100 x 300 s, with a message saying why."""
    hostile.behave(respond(429, b"{}", {"Retry-After": "300"}))
    slept: list[float] = []
    hook = hook_on(hostile.url, sleep=slept.append, max_retries=100)
    with pytest.raises(ShortInterestServerError, match=r"over the 900 s allowed per request") as caught:
        hook.get_latest("HK.00700")
    assert slept == [300.0, 300.0, 300.0] and sum(slept) <= MAX_TOTAL_WAIT
    assert len(hostile.requests) == 4 and "gave up after 4 attempt(s)" in caught.value.message


def test_test_connection_does_not_wait_for_a_busy_budget(
    hostile: HostileServer, hook_on: HookFactory
) -> None:
    """A budget with no free slot answers "busy" at once: no request, no wait (one call per 10 min here)."""
    hostile.behave(respond(200, envelope([item("HK.00700", dt.date(2026, 5, 15))])))
    slept: list[float] = []
    hook = hook_on(
        hostile.url,
        sleep=slept.append,
        rate_limit_calls=1,
        rate_limit_period=600,
        rate_limit_key=f"busy-{hostile.port}",  # a budget of this test's own
    )
    ok, message = hook.test_connection()
    assert ok and message == f"Connected to {hostile.url}: HK.00700 newest record 2026-05-15"
    ok, message = hook.test_connection()  # the one slot of this budget is used for 10 minutes
    assert not ok and message.startswith("request budget busy (full, 1 used in the last period")
    assert len(hostile.requests) == 1 == hook.requests_made and slept == []


# -- Airflow's Test button: a temporary connection id is never named --------------------------------------

TEMPORARY_ID = "4B7AXTgr"  # what Airflow's UI gives the connection it tests


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("bad-extra", "this connection: extra 'timeout' has an invalid value"),
        ("no-host", "this connection has no host"),
        ("refused-token", "refused the API token (check the password of this connection)"),
        ("redirect", "set the host of this connection to the API's final base URL"),
        ("unresolvable", "check the host of this connection"),
        ("untrusted-cert", "set verify_ssl false on this connection"),
        ("http-on-https", "Use http:// in the host of this connection"),
    ],
)
def test_test_connection_names_no_temporary_id(
    hostile: HostileServer,
    hostile_tls: HostileServer,
    use_conn: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    phrase: str,
) -> None:
    """While test_connection probes, messages say "this connection"; the same failure outside it names
    the connection's id."""
    hostile.behave(respond(401, b"{}"))
    if case == "redirect":
        hostile.behave(respond(302, b"", {"Location": "https://elsewhere.example/"}))
    hostile_tls.behave(respond(200, envelope([])))
    url = {
        "unresolvable": "http://no-such-host.invalid",
        "untrusted-cert": hostile_tls.url,
        "http-on-https": hostile.url.replace("http://", "https://"),
    }.get(case, hostile.url)
    extra: dict[str, Any] = {"timeout": "soon"} if case == "bad-extra" else {}
    use_conn(url, conn_id=TEMPORARY_ID, password=TOKEN, max_retries=0, **extra)
    if case == "no-host":
        monkeypatch.setenv(f"AIRFLOW_CONN_{TEMPORARY_ID.upper()}", json.dumps({"conn_type": "shortint"}))
    ok, message = ShortInterestHook(shortint_conn_id=TEMPORARY_ID).test_connection()
    assert not ok and phrase in message, message
    assert TEMPORARY_ID not in message and TEMPORARY_ID.lower() not in message.lower()
    with pytest.raises(ShortInterestError) as caught:
        ShortInterestHook(shortint_conn_id=TEMPORARY_ID).get_latest("HK.00700")
    assert phrase.replace("this connection", f"connection {TEMPORARY_ID!r}") in caught.value.message


# -- proxies from the environment, as other HTTP clients read them ----------------------------------------


def test_proxy_from_the_environment(
    hostile: HostileServer, hook_on: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY sends the request through the proxy (absolute URL in the request line, token in the
    header only); NO_PROXY naming the host bypasses it (here: a name that does not resolve)."""
    hostile.behave(respond(200, envelope([item("HK.00700", dt.date(2026, 5, 15))])))
    monkeypatch.setenv("HTTP_PROXY", hostile.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    hook = hook_on("http://api.example.invalid:8080", password=TOKEN)
    assert hook.get_latest("HK.00700") is not None
    (seen,) = hostile.requests
    assert seen.target.startswith("http://api.example.invalid:8080/v1/quote/HK.00700/short-selling/")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}" and TOKEN not in seen.target
    hook.close()
    monkeypatch.setenv("NO_PROXY", "api.example.invalid")
    bypassing = hook_on("http://api.example.invalid:8080", max_retries=0)
    with pytest.raises(ShortInterestConnectionError, match="cannot resolve the host"):
        bypassing.get_latest("HK.00700")
    assert len(hostile.requests) == 1
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:1080")
    socks = hook_on("http://api.example.invalid:8080")
    with pytest.raises(InvalidParameterError, match=r"speaks only to http\(s\) proxies") as caught:
        socks.get_latest("HK.00700")
    assert "pw" not in caught.value.message and socks.requests_made == 0


def test_tls_session_closes_its_sockets(hostile_tls: HostileServer, hook_on: HookFactory) -> None:
    """Over TLS too, the hook keeps its connection alive between calls and close() leaves no socket."""
    import psutil

    def ours() -> list[Any]:
        conns = psutil.Process().net_connections("tcp")
        return [c for c in conns if c.raddr and c.raddr.port == hostile_tls.port]

    body = envelope([])

    def keep_alive(conn: socket.socket, request: Request, server: HostileServer) -> None:
        head_lines = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        server.write(conn, head_lines.encode() + body)
        conn.recv(1)  # holds the connection until the client closes it (or the 5-s socket timeout)

    hostile_tls.behave(keep_alive)
    hook = hook_on(hostile_tls.url, verify_ssl=False)
    assert hook.get_latest("HK.00700") is None
    assert len(ours()) == 1  # kept alive
    hook.close()
    assert ours() == [] and hook.get_conn().session is None
