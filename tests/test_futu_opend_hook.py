"""FutuOpenDHook with the real futu-api client against the sandbox's OpenD door (DESIGN.md §8)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import pickle
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    ShortInterestAuthError,
    ShortInterestConnectionError,
    ShortInterestResponseError,
    ShortInterestServerError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.retry import TransientFailure
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.transports.opend.transport import classify
from tests._fixtures_opend_hook import opend_conn, run_child
from tests._helpers import max_in_window

HookFactory = Callable[..., FutuOpenDHook]
SDK_HK = [
    "timestamp",
    "timestamp_str",
    "aggregated_short",
    "aggregated_short_ratio",
    "close_price",
    "last_close_price",
]
SDK_US = [
    "timestamp",
    "timestamp_str",
    "shares_short",
    "short_percent",
    "avg_daily_share_volume",
    "days_to_cover",
    "close_price",
    "last_close_price",
]


def opend_requests(sb: SandboxServer) -> int:
    return int(sb.stats()["by_transport"]["opend"])


# -- rows, pages, frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["HK.00700", "US.AAPL"])
def test_same_rows_as_rest(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer, symbol: str, monkeypatch: Any
) -> None:
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_REST_SAME", json.dumps({"conn_type": "shortint", "host": opend_sandbox.url})
    )
    rest = ShortInterestHook(shortint_conn_id="rest_same").get_history(symbol)
    opend = opend_hook_for().get_history(symbol)
    missing = list(MARKETS[symbol[:2]].opend_missing)
    assert opend.num_rows == rest.num_rows > 60  # several pages of 50 over OpenD
    assert opend.schema == rest.schema
    for name in missing:
        assert opend.column(name).null_count == opend.num_rows  # the SDK does not carry them
        assert rest.column(name).null_count < rest.num_rows
    keep = [name for name in rest.column_names if name not in (*missing, "ingested_at")]
    assert opend.select(keep).equals(rest.select(keep))  # timestamps in ms on both paths


def test_documented_values_and_milliseconds(opend_hook_for: HookFactory) -> None:
    page = opend_hook_for().get_page("hk.700", count=2)
    first = page.items[0]
    assert (page.symbol, first["trade_date"]) == ("HK.00700", dt.date(2026, 5, 15))
    assert first["timestamp"] == 1778774400000 and first["aggregated_short"] == 54177721
    assert first["aggregated_short_ratio"] == 0.59 and first["avg_cost"] is None
    assert page.next_key


def test_paging_across_pages(opend_hook_for: HookFactory, opend_sandbox: SandboxServer) -> None:
    hook = opend_hook_for()
    pages = list(hook.iter_pages("HK.00700", page_size=7))
    assert len(pages) >= 4 and pages[-1].next_key is None
    assert all(len(p.items) == 7 for p in pages[:-1])
    keys = [p.next_key for p in pages[:-1]]
    assert len(set(keys)) == len(keys)
    dates = [row["trade_date"] for p in pages for row in p.items]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == len(dates)
    assert opend_requests(opend_sandbox) == len(pages) == hook.requests_made
    # stop_after: paging ends at the first page that reaches the bound
    opend_sandbox.reset_stats()
    bound = dates[10]
    table = hook.get_history("HK.00700", since=bound, page_size=7)
    assert table.num_rows == 10 and pc.min(table.column("trade_date")).as_py() > bound
    assert opend_requests(opend_sandbox) == 2


def test_get_short_interest_returns_the_sdks_frames(opend_hook_for: HookFactory) -> None:
    hook = opend_hook_for()
    us_df, hk_df = hook.get_short_interest("HK.00700", num=3)
    assert list(hk_df.columns) == SDK_HK and list(us_df.columns) == SDK_US and len(us_df) == 0
    assert hk_df["timestamp"].tolist()[0] == 1778774400  # seconds, as the SDK gives them
    assert hk_df.attrs["next_key"] and hk_df.attrs["next_key"] != "-1"
    seen, key = len(hk_df), hk_df.attrs["next_key"]
    for _ in range(20):
        _, hk_df = hook.get_short_interest("HK.00700", next_key=key, num=50)
        seen, key = seen + len(hk_df), hk_df.attrs["next_key"]
        if key == "-1":
            break
    assert key == "-1" and seen == hook.get_history("HK.00700").num_rows
    us_df, hk_df = hook.get_short_interest("US.AAPL")  # num None: the gateway's default page (10)
    assert list(us_df.columns) == SDK_US and len(us_df) == 10 and len(hk_df) == 0
    us_df, hk_df = hook.get_short_interest("US.NODATA")
    assert len(us_df) == len(hk_df) == 0 and us_df.attrs["next_key"] == "-1"


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "error", "ret_code"),
    [
        ("HK.99999", InvalidSymbolError, -7),
        ("US.NOSUCH", InvalidSymbolError, -7),
        ("HK.99998", UnsupportedSecurityError, -8),
        ("US.VIX", UnsupportedSecurityError, -8),
    ],
)
def test_rejected_security_fails_at_once(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer, symbol: str, error: type, ret_code: int
) -> None:
    with pytest.raises(error) as info:
        opend_hook_for().get_history(symbol)
    assert info.value.ret_code == ret_code and info.value.symbol == symbol
    assert symbol in str(info.value) and "OpenD:" in str(info.value)  # the gateway's own message
    assert opend_requests(opend_sandbox) == 1  # no retry


def test_gateway_parameter_error_and_malformed_answers(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    hook = opend_hook_for()
    with pytest.raises(InvalidParameterError, match="next_key"):
        hook.get_page("HK.00700", next_key="not-a-key-of-this-server")
    with pytest.raises(ShortInterestResponseError, match="sha"):  # a frame that fails its checksum
        hook.get_page("US.BADJSON")
    with pytest.raises(ShortInterestResponseError, match="unknown error"):
        hook.get_page("US.BADRET")
    with pytest.raises(ShortInterestResponseError, match="twice"):
        hook.get_history("US.LOOPKEY", page_size=5)
    assert opend_requests(opend_sandbox) == 1 + 1 + 1 + 2  # none of these retried
    for symbol in ("HK.99997", "US.NODATA"):
        page = hook.get_page(symbol)
        assert page.items == [] and page.next_key is None
    assert hook.get_latest("HK.99997") is None


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda h: h.get_page("HK.00700", count=0), "count must be an integer from 1 to 50"),
        (lambda h: h.get_page("HK.00700", count=51), "count must be an integer from 1 to 50"),
        (lambda h: h.get_page("HK.00700", count=True), "count"),
        (lambda h: h.get_history("HK.00700", page_size=51), "page_size must be an integer from 1 to 50"),
        (lambda h: h.get_short_interest("HK.00700", num=51), "num must be an integer from 1 to 50"),
        (lambda h: h.get_page("HK.123456"), "malformed symbol"),
        (lambda h: h.get_page("700"), "symbol"),
        (lambda h: h.get_page(None), "symbol"),
        (lambda h: h.get_page("HK.00700", next_key="-1"), "next_key"),
        (lambda h: h.get_short_interest("HK.00700", next_key="-1"), "next_key"),
        (lambda h: h.get_history("HK.00700", since="yesterday"), "since"),
    ],
)
def test_bad_input_costs_no_request(
    opend_hook_for: HookFactory,
    opend_sandbox: SandboxServer,
    call: Callable[[FutuOpenDHook], Any],
    pattern: str,
) -> None:
    hook = opend_hook_for()
    with pytest.raises(InvalidParameterError, match=pattern):
        call(hook)
    assert opend_requests(opend_sandbox) == 0 and not (hook._transport and hook._transport.is_open)


@pytest.mark.parametrize("symbol", ["SH.600000", "SZ.000001", "JP.7203"])
def test_other_markets_refused_locally(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer, symbol: str
) -> None:
    with pytest.raises(UnsupportedSecurityError):
        opend_hook_for().get_page(symbol)
    assert opend_requests(opend_sandbox) == 0


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("unknown security: security HK.99999 does not exist", InvalidSymbolError),
        ("未知股票", InvalidSymbolError),
        ("invalid_symbol: gone", InvalidSymbolError),
        ("unsupported security: US.VIX is an index", UnsupportedSecurityError),
        ("不支持该品种", UnsupportedSecurityError),
        ("invalid parameter: num must be within 1..50, got 60", InvalidParameterError),
        ("Disconnect", "connection_error"),
        ("Connection closed", "connection_error"),
        ("PacketErr.Timeout", "timeout"),
        ("Abnormal event timeout", "timeout"),
        ("NN_ProtoRet_TimeOut (injected fault)", "timeout"),
        ("request too frequent: at most 30 requests per 30 seconds (retry in 12.3 s)", "rate_limited"),
        ("internal error (injected fault)", "internal_error"),
        ("行情未登录", "not_logged_in"),
        ("OpenD is not logged in", "not_logged_in"),
        ("proto_id:3249 conn_id:1 check sha error!", ShortInterestResponseError),
        ("", ShortInterestResponseError),
        ("no data", None),
        ("No data.", None),
        ("暂无数据", None),
        ("no_data: nothing here", None),
        ("No data permission", ShortInterestAuthError),
        ("无权限获取该数据", ShortInterestAuthError),
        ("unknown security US.XYZ: no data", InvalidSymbolError),
        ("no data yet, ask again tomorrow", ShortInterestResponseError),
        ("Connect timeout", "timeout"),
    ],
)
def test_message_classification(message: str, expected: Any) -> None:
    failure = classify("HK.00700", message)
    if expected is None:
        assert failure is None
    elif isinstance(expected, str):
        assert isinstance(failure, TransientFailure) and failure.error_code == expected
        if expected == "rate_limited":
            assert failure.retry_after == 12.3
    else:
        assert type(failure) is expected and "HK.00700" in str(failure)


# -- retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"internal_error_rate": 1.0}, "internal error"),
        ({"http5xx_rate": 1.0}, "TimeOut"),
        ({"malformed_rate": 1.0}, "closed by the gateway"),  # the gateway drops it with no reply
        ({"http429_rate": 1.0}, "too frequent"),
    ],
)
def test_transient_failures_retried_then_server_error(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer, fault: dict[str, float], reason: str
) -> None:
    opend_sandbox.configure(**fault)
    hook = opend_hook_for(max_retries=2)
    with pytest.raises(ShortInterestServerError, match=reason) as info:
        hook.get_page("HK.00700")
    assert "gave up after 3 attempt(s)" in str(info.value) and info.value.symbol == "HK.00700"
    assert hook.requests_made == 3 and opend_requests(opend_sandbox) == 3


def test_dropped_connections_recovered_on_a_fresh_one(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    clean = opend_hook_for().get_history("US.AAPL", page_size=20)
    opend_sandbox.configure(malformed_rate=0.4, internal_error_rate=0.2, seed=7)
    hook = opend_hook_for(max_retries=10)
    table = hook.get_history("US.AAPL", page_size=20)
    faults = opend_sandbox.stats()["faults"]
    assert faults["malformed"] > 0 and faults["internal_error"] > 0
    assert hook.requests_made > 13  # 13 pages plus the retries
    keep = [n for n in clean.column_names if n != "ingested_at"]
    assert table.select(keep).equals(clean.select(keep))


def test_unanswered_request_times_out_and_is_retried(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    opend_sandbox.configure(delay_rate=1.0, delay_seconds=4.0)
    hook = opend_hook_for(max_retries=1, timeout=1)
    with pytest.raises(ShortInterestServerError, match="no answer to protocol 3249 within 1 s"):
        hook.get_page("HK.00700")
    assert hook.requests_made == 2
    opend_sandbox.configure(delay_rate=0.0)
    assert hook.get_page("HK.00700", count=1).items  # the same hook works again (fresh context)


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_connection_retried_then_server_error(opend_hook_for: HookFactory) -> None:
    port = unused_port()
    hook = opend_hook_for(port=port, max_retries=2)
    with pytest.raises(ShortInterestServerError, match=f"could not connect to OpenD at 127.0.0.1:{port}"):
        hook.get_page("HK.00700")
    assert hook.requests_made == 3
    ok, message = hook.test_connection()
    assert not ok and "could not connect" in message


def test_refused_init_connect_fails_at_once_naming_the_gateways_message(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer, rsa_key_file: str
) -> None:
    # The sandbox answers an encrypted InitConnect with a refusal (as OpenD does a wrong RSA key).
    hook = opend_hook_for(is_encrypt=True, rsa_private_key=rsa_key_file, max_retries=4)
    with pytest.raises(ShortInterestConnectionError) as info:
        hook.get_page("HK.00700")
    message = str(info.value)
    assert f"OpenD at 127.0.0.1:{opend_sandbox.opend_port} refused the connection" in message
    assert "without encryption only" in message  # the gateway's own words
    assert hook.requests_made == 1 and not hook.transport.is_open  # one attempt, nothing left open
    assert opend_requests(opend_sandbox) == 0  # refused at the handshake: no request reached the door


def test_gateway_timeout_retried_on_the_same_connection(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    # The sandbox numbers the sessions it accepts (InitConnect's connID): 1 here means no reconnect.
    clean = opend_hook_for().get_history("US.AAPL", page_size=20)
    opend_sandbox.configure(http5xx_rate=0.4, seed=5)  # OpenD replies NN_ProtoRet_TimeOut (retType -100)
    hook = opend_hook_for(max_retries=10)
    table = hook.get_history("US.AAPL", page_size=20)
    stats = opend_sandbox.stats()
    assert stats["faults"]["http5xx"] >= 3 and stats["by_ret_type"]["-100"] == stats["faults"]["http5xx"]
    pages = math.ceil(len(opend_sandbox.history("US.AAPL")) / 20)
    assert hook.requests_made == pages + stats["faults"]["http5xx"]  # plus one retry per fault
    keep = [n for n in clean.column_names if n != "ingested_at"]
    assert table.select(keep).equals(clean.select(keep))
    assert hook.get_conn().get_sync_conn_id() == 2  # the clean hook had 1; no reconnect for hook 2
    # A connection the gateway drops is closed: each retry reconnects.
    opend_sandbox.configure(http5xx_rate=0.0, malformed_rate=1.0)
    dropped = opend_hook_for(max_retries=2)
    with pytest.raises(ShortInterestServerError, match="closed by the gateway"):
        dropped.get_page("US.AAPL", count=1)
    opend_sandbox.configure(malformed_rate=0.0)
    assert dropped.get_conn().get_sync_conn_id() == 3 + 3  # sessions 3, 4, 5 dropped; 6 is fresh
    assert hook.get_conn().get_sync_conn_id() == 2 and hook.get_page("US.AAPL", count=1).items


def test_gateway_rate_limit_waits_and_succeeds(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    opend_sandbox.configure(rate_limit_calls=3, rate_limit_period=1.0)
    hook = opend_hook_for(max_retries=5)  # the client's own budget is larger than the server's here
    for _ in range(5):
        assert hook.get_page("HK.00700", count=1).items
    assert opend_sandbox.stats()["rate_limited"] >= 1 and hook.requests_made > 5


# -- budget, connection, factory --------------------------------------------------------------------------


def test_every_sdk_call_takes_a_budget_slot(
    opend_hook_for: HookFactory, opend_sandbox: SandboxServer
) -> None:
    hook = opend_hook_for(rate_limit_calls=4, rate_limit_period=0.5)
    hook.get_history("HK.00700", since="2025-09-01", page_size=3)  # ~12 weekly pages
    starts = opend_sandbox.stats()["timestamps"]
    assert len(starts) == hook.requests_made >= 10
    assert max_in_window(starts, 0.5) <= 4


def test_budget_shared_with_rest_by_rate_limit_key(opend_sandbox: SandboxServer, monkeypatch: Any) -> None:
    from airflow_provider_shortint.hooks.base import hook_for

    extra = {"rate_limit_key": "account-42", "rate_limit_calls": 7}
    monkeypatch.setenv("AIRFLOW_CONN_OPEND_K", opend_conn(opend_sandbox.opend_port, **extra))
    rest = {"conn_type": "shortint", "host": opend_sandbox.url, "extra": {**extra, "rate_limit_period": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_REST_K", json.dumps(rest))
    opend, rest_hook = hook_for("opend_k"), hook_for("rest_k")
    assert isinstance(opend, FutuOpenDHook)
    assert opend.rate_limiter is rest_hook.rate_limiter  # type: ignore[attr-defined]


def test_factory_picks_the_hook_of_the_conn_type(opend_sandbox: SandboxServer, monkeypatch: Any) -> None:
    from airflow_provider_shortint.hooks.base import ahook_for, hook_for
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    monkeypatch.setenv("AIRFLOW_CONN_F_OPEND", opend_conn(opend_sandbox.opend_port))
    monkeypatch.setenv(
        "AIRFLOW_CONN_F_REST", json.dumps({"conn_type": "shortint", "host": opend_sandbox.url})
    )
    monkeypatch.setenv("AIRFLOW_CONN_F_HTTP", json.dumps({"conn_type": "http", "host": "example.com"}))
    assert type(hook_for("f_rest")) is ShortInterestHook
    hook = hook_for("f_opend", max_retries=0)
    assert type(hook) is FutuOpenDHook and hook.max_retries == 0 and hook.max_count == 50
    with pytest.raises(InvalidParameterError, match=r"conn_type 'http'.*'shortint' and 'futu_opend'"):
        hook_for("f_http")
    loaded = asyncio.run(ahook_for("f_opend"))
    assert isinstance(loaded, FutuOpenDHook) and loaded._loaded is not None
    assert loaded.settings.port == opend_sandbox.opend_port
    with pytest.raises(InvalidParameterError, match="conn_type 'http'"):
        asyncio.run(ahook_for("f_http"))


@pytest.mark.parametrize(
    ("conn", "pattern"),
    [
        ({"host": "http://127.0.0.1"}, "bare host name"),
        ({"port": 70000}, "port must be 1 to 65535"),
        ({"extra": {"timeout": 13}}, "timeout.*at most 12"),
        ({"extra": {"is_encrypt": True}}, "no rsa_private_key"),
        ({"extra": {"rsa_private_key": "/nonexistent/key.pem"}}, "rsa_private_key"),
        ({"extra": {"max_retries": -1}}, "max_retries"),
    ],
)
def test_bad_connection_settings(monkeypatch: Any, conn: dict[str, Any], pattern: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BAD_OPEND", json.dumps({"conn_type": "futu_opend", **conn}))
    with pytest.raises(InvalidParameterError, match=pattern):
        FutuOpenDHook(futu_opend_conn_id="bad_opend").get_page("HK.00700")


@pytest.mark.parametrize("host", ["http://user:s3cretpw@gw", "user:s3cretpw@gw", " opend:s3cretpw@127.0.0.1"])
def test_user_info_in_host_refused_without_echoing_it(monkeypatch: Any, host: str) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_USERINFO", json.dumps({"conn_type": "futu_opend", "host": host, "port": 11111})
    )
    hook = FutuOpenDHook(futu_opend_conn_id="userinfo")
    with pytest.raises(InvalidParameterError, match="must not carry a user name or password") as info:
        hook.get_page("HK.00700")  # refused while reading the connection: no context is ever opened
    error = info.value
    shown_to_users = [
        str(error),
        repr(error),
        error.message,
        pickle.dumps(error),
        str(pickle.loads(pickle.dumps(error))),
    ]
    for text in shown_to_users:
        assert (b"s3cretpw" if isinstance(text, bytes) else "s3cretpw") not in text
    assert "***@" in str(error) and hook.requests_made == 0 and hook._transport is None


def test_defaults_and_unknown_security_firm(opend_hook_for: HookFactory, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DEFAULTS", json.dumps({"conn_type": "futu_opend"}))
    settings = FutuOpenDHook(futu_opend_conn_id="defaults").settings
    assert (settings.host, settings.port, settings.timeout, settings.is_encrypt) == (
        "127.0.0.1",
        11111,
        12.0,
        False,
    )
    hook = opend_hook_for(security_firm="NOT_A_FIRM")
    with pytest.raises(InvalidParameterError, match="SecurityFirm"):
        hook.get_page("HK.00700")


def test_test_connection(opend_hook_for: HookFactory, opend_sandbox: SandboxServer) -> None:
    ok, message = opend_hook_for().test_connection()
    assert ok and f"127.0.0.1:{opend_sandbox.opend_port}" in message and "2026-05-15" in message


# -- lifecycle and the SDK's side effects (in a child interpreter: its own threads, sockets, $HOME) ----------

LIFECYCLE_CHILD = """
import json, logging, os, signal, sys, threading
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
sdk_log = logging.getLogger("airflow_provider_shortint.opend.sdk")
sdk_log.addHandler(Keep())
sdk_log.setLevel(logging.INFO)  # read when futu is first imported: the SDK's INFO lines pass
handler = signal.getsignal(signal.SIGINT)
from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
from airflow_provider_shortint.exceptions import ShortInterestServerError

def census():
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    return len(threading.enumerate()), sum(fd.startswith("socket:") for fd in fds), len(fds)

assert "futu" not in sys.modules  # importing the hook does not import the SDK
warm = FutuOpenDHook("leak")
warm.get_latest("HK.00700")  # warm up imports (they open no socket of their own)
warm.close()
before = census()
for i in range(100):
    hook = FutuOpenDHook("leak")
    assert hook.get_latest("HK.00700")["symbol"] == "HK.00700"
    hook.get_page("US.AAPL", count=2)
    hook.close()
for i in range(5):  # failed connections leave nothing behind either
    try:
        FutuOpenDHook("refused").get_page("HK.00700")
    except ShortInterestServerError:
        pass
after = census()
names = sorted(t.name for t in threading.enumerate())
print(json.dumps({
    "before": before,
    "after": after,
    "threads": names,
    "sigint_kept": signal.getsignal(signal.SIGINT) is handler,
    "sdk_lines": sum(message.startswith("futu-api: ") and "Recv" in message for message in records),
}))
FutuOpenDHook("leak").get_latest("HK.00700")  # never closed: must not keep the process alive
"""


def test_lifecycle_no_thread_socket_or_file_left_and_the_sdks_log_in_ours(
    opend_sandbox: SandboxServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "AIRFLOW_CONN_LEAK": opend_conn(opend_sandbox.opend_port),
        "AIRFLOW_CONN_REFUSED": opend_conn(unused_port(), max_retries=0),
        "HOME": str(home),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    result = run_child(LIFECYCLE_CHILD, env)  # also proves the child exits: no non-daemon SDK thread left
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"before"')))
    # 100 hooks and 5 refused connections: the same threads (MainThread only), sockets and descriptors.
    assert report["after"] == report["before"], report
    assert report["before"][0] == 1 and report["threads"] == ["MainThread"]
    assert opend_sandbox.stats()["by_transport"]["opend"] == 1 + 200 + 1
    assert report["sigint_kept"], "futu replaced the SIGINT handler"
    assert report["sdk_lines"] >= 200  # the SDK's records reach our logger...
    assert not re.search(r"\| \d+ \| \d+ \|", result.stdout)  # ...and nothing its console handler prints
    assert list(home.rglob("*")) == []  # nor any file under $HOME


def test_without_futu_a_clear_error_naming_the_extra(tmp_path: Path) -> None:
    code = """
import sys
sys.modules["futu"] = None  # as if futu-api were not installed
from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
from airflow_provider_shortint.transports.opend.sdk import FutuNotInstalledError
try:
    FutuOpenDHook("nofutu").get_page("HK.00700")
except FutuNotInstalledError as err:
    print(err)
print(FutuOpenDHook("nofutu").test_connection())
"""
    env = {"AIRFLOW_CONN_NOFUTU": opend_conn(1), "AIRFLOW_HOME": str(tmp_path)}
    result = run_child(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('pip install "airflow-provider-shortint[futu]"') == 2
    assert "(False," in result.stdout


# -- futu-api internals relied on (docs/OPEND.md): one test each, failing loudly on an upgrade ------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("_default_inst", "the NetManager"),
        ("_default_inst_lock", "a lock"),
        ("_conn_map", "a dict"),
        ("_req_queue", "a queue"),
        ("_w_sock", "a socket"),
        ("_close_all", "a method"),
        ("_thread", "a thread"),
        ("Thread._invoke_excepthook", "a function"),
    ],
)
def test_internal_network_manager_attributes(opend_client: Any, name: str, kind: str) -> None:
    import queue
    import threading

    from futu.common.network_manager import NetManager

    manager = NetManager._default_inst  # the SDK's one network manager, in use by opend_client
    checks: dict[str, Callable[[], bool]] = {
        "_default_inst": lambda: isinstance(manager, NetManager) and NetManager.default() is manager,
        "_default_inst_lock": lambda: hasattr(NetManager._default_inst_lock, "acquire"),
        "_conn_map": lambda: isinstance(manager._conn_map, dict) and len(manager._conn_map) >= 1,
        "_req_queue": lambda: isinstance(manager._req_queue, queue.Queue),
        "_w_sock": lambda: isinstance(manager._w_sock, socket.socket),
        "_close_all": lambda: callable(manager._close_all),
        "_thread": lambda: isinstance(manager._thread, threading.Thread) and manager._thread.is_alive(),
        "Thread._invoke_excepthook": lambda: callable(manager._thread._invoke_excepthook),
    }
    assert checks[name](), f"futu-api's NetManager {name} is no longer {kind}: see docs/OPEND.md"


def test_internal_network_manager_runs_queued_work_in_its_thread(opend_client: Any) -> None:
    import threading

    from futu.common.network_manager import NetManager

    from airflow_provider_shortint.transports.opend.sdk import network_internals_missing

    manager = NetManager._default_inst
    ran_in: list[threading.Thread] = []
    done = threading.Event()

    def work() -> None:
        ran_in.append(threading.current_thread())
        done.set()

    manager._req_queue.put(work)
    manager._w_sock.send(b"1")
    assert done.wait(10) and ran_in == [manager._thread]
    assert network_internals_missing() == []


def test_network_thread_and_its_sockets_stop_with_the_last_context(opend_hook_for: HookFactory) -> None:
    from futu.common.network_manager import NetManager

    hook = opend_hook_for()
    assert hook.get_latest("HK.00700")
    manager = NetManager._default_inst
    assert len(manager._conn_map) == 1  # only this hook's connection uses it
    thread, pair = manager._thread, (manager._r_sock, manager._w_sock)
    hook.close()
    assert not thread.is_alive() and NetManager._default_inst is None
    assert all(sock is None or sock.fileno() == -1 for sock in pair) and manager._r_sock is None


def test_internal_framing_helpers(futu_quiet: None) -> None:
    import hashlib

    import futu.common.utils as utils
    from futu.common.constant import MESSAGE_HEAD_FMT
    from futu.common.pb import InitConnect_pb2

    from airflow_provider_shortint.sandbox import futu_sdk
    from airflow_provider_shortint.sandbox.opend_wire import frame

    assert MESSAGE_HEAD_FMT == "<1s1sI2B2I20s8s" and utils.get_message_head_len() == 44
    body = InitConnect_pb2.Response(retType=-1, retMsg="refused").SerializeToString()
    raw = frame(futu_sdk.load(), 1001, 0, 7, body)
    head = utils.parse_head(raw[:44])
    assert (head["head_1"], head["proto_id"], head["serial_no"], head["body_len"]) == (
        b"F",
        1001,
        7,
        len(body),
    )
    assert head["sha20"] == hashlib.sha1(body).digest() and head["proto_fmt_type"] == 0
    ret, _, plain = utils.decrypt_rsp_body(raw[44:], head, 0, False)
    answer = utils.binary2pb(plain, 1001, head["proto_fmt_type"])
    assert ret == 0 and (answer.retType, answer.retMsg) == (-1, "refused")


def test_internal_logger_and_callbacks(futu_quiet: None) -> None:
    import inspect
    import logging

    import futu

    ftlog = futu.logger
    assert isinstance(ftlog.file_logger, logging.Logger) and callable(ftlog.enable_console_log)
    assert isinstance(ftlog.fileHandler, logging.FileHandler)  # opened at import: hence the throwaway HOME
    assert not any(isinstance(h, logging.FileHandler) for h in ftlog.file_logger.handlers)  # ours removed it
    assert ftlog.file_level == logging.WARNING and ftlog.console_level == logging.WARNING
    parameters = {
        name: list(inspect.signature(getattr(futu.OpenQuoteContext, name)).parameters)
        for name in ("on_api_socket_reconnected", "on_connect", "on_disconnect")
    }
    assert parameters == {
        "on_api_socket_reconnected": ["self"],
        "on_connect": ["self", "conn_id", "conn_info"],
        "on_disconnect": ["self", "conn_id", "reason", "msg"],
    }


def test_internal_sdk_request_timeout_is_not_below_ours(opend_client: Any) -> None:
    from airflow_provider_shortint.transports.opend.settings import SDK_MAX_TIMEOUT

    # futu-api ends an unanswered request after _query_timeout s: the provider's timeout (at most
    # SDK_MAX_TIMEOUT) must end it first, so the relay's reason is the one reported.
    assert opend_client._query_timeout >= SDK_MAX_TIMEOUT
