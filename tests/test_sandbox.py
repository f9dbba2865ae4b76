"""Tests of the sandbox server over real HTTP: data, calendars, paging, faults, limits, control API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer
from airflow_provider_shortint.sandbox import data as sbdata
from tests._helpers import HK_ITEM

PATH = "/v1/quote/{}/short-selling/short-interest"
TODAY = date(2026, 5, 15)

# HK.00700 as quoted in the vendor's documents: date -> (aggregated_short, ratio, close, last_close).
DOCUMENTED = {
    "2026-05-15": ("54177721", 0.59, 456.4, 454.9),
    "2026-05-08": ("44972868", 0.49, 466.1, 472.1),
    "2026-04-30": ("51480638", 0.56, 467.8, 479.2),
    "2026-04-24": ("51888755", 0.56, 493.4, 495.2),
    "2026-04-17": ("47974208", 0.52, 510.5, 517.0),
    "2026-04-10": ("48424833", 0.53, 504.5, 508.5),
    "2026-04-02": ("49982828", 0.54, 489.2, 496.6),
    "2026-03-27": ("52744147", 0.57, 493.4, 495.6),
    "2026-03-20": ("51710854", 0.56, 508.0, 513.0),
    "2026-03-13": ("48105325", 0.52, 547.5, 546.5),
    "2026-03-06": ("42404275", 0.46, 519.0, 502.0),
    "2026-02-27": ("36037870", 0.39, 518.0, 512.0),
}
DEFAULTS: dict[str, Any] = {
    "rate_limit_calls": 0,
    "rate_limit_period": 30.0,
    "internal_error_rate": 0.0,
    "http5xx_rate": 0.0,
    "http429_rate": 0.0,
    "delay_rate": 0.0,
    "delay_seconds": 2.0,
    "malformed_rate": 0.0,
    "end_marker": "-1",
    "token": None,
    "socket_timeout": 10.0,
    "today": TODAY,
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(rate_limit_calls=0, seed=0)) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(sb: SandboxServer) -> Iterator[None]:
    yield
    sb.configure(**DEFAULTS)
    sb.reset()


def get(sb: SandboxServer, symbol: str, timeout: float = 5.0, **params: Any) -> requests.Response:
    return requests.get(sb.url + PATH.format(symbol), params=params, timeout=timeout)


def walk(sb: SandboxServer, symbol: str, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All items of a symbol page by page, plus the raw data object of every page."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    key: str | None = None
    while True:
        params: dict[str, Any] = {"count": count}
        if key:
            params["next_key"] = key
        body = get(sb, symbol, **params).json()
        assert body["ret_code"] == 0, body
        pages.append(body["data"])
        items += body["data"]["items"]
        key = body["data"].get("next_key")
        if key in (None, "", "-1"):
            return items, pages
        assert len(pages) < 100


# ---------------------------------------------------------------------------------------------- data


def test_hk_00700_documented_values(sb: SandboxServer) -> None:
    body = get(sb, "HK.00700", count=12).json()
    assert body["ret_code"] == 0 and body["ret_msg"] == "success"
    items = body["data"]["items"]
    assert [item["timestamp_str"] for item in items] == list(DOCUMENTED)
    for item in items:
        short, ratio, close, last_close = DOCUMENTED[item["timestamp_str"]]
        assert (item["aggregated_short"], item["aggregated_short_ratio"]) == (short, ratio)
        assert (item["close_price"], item["last_close_price"]) == (close, last_close)
        assert isinstance(item["avg_cost"], float) and isinstance(item["avg_daily_short_volume"], str)
    assert items[0] == HK_ITEM  # the REST document's example item, value for value
    assert items[1]["avg_cost"] == 471.399 and items[1]["avg_daily_short_volume"] == "2392820"
    assert items[1]["timestamp"] == 1778169600000
    assert get(sb, "hk.700", count=1).json()["data"]["items"][0] == items[0]


def test_history_lengths_and_determinism(sb: SandboxServer) -> None:
    hk = sb.history("HK.00700")
    us = sb.history("US.AAPL")
    assert hk[-1]["timestamp_str"] == "2018-01-05" and len(hk) > 400
    assert us[-1]["timestamp_str"] == "2016-01-15" and len(us) > 200
    assert sb.history("HK.00700") == hk
    lengths = [len(sb.history(f"US.T{i}")) for i in range(30)]
    assert min(lengths) < 60 and max(lengths) > 150
    assert all(sbdata.history_start(f"HK.{i:05d}") >= date(2017, 1, 1) for i in range(50))


def test_hk_calendar_last_trading_day_of_week() -> None:
    days = sbdata.record_dates("HK", date(2018, 1, 1), TODAY)
    assert [d.isoformat() for d in days if d >= date(2026, 2, 27)][::-1] == list(DOCUMENTED)
    for day in days:
        monday = day - timedelta(days=day.weekday())
        later = [monday + timedelta(days=n) for n in range(day.weekday() + 1, 5)]
        assert sbdata.is_business_day("HK", day)
        assert not any(sbdata.is_business_day("HK", d) for d in later), day
    assert date(2020, 12, 24) in days and date(2020, 12, 25) not in days  # Christmas on a Friday
    assert date(2026, 4, 2) in days and date(2026, 4, 30) in days  # Good Friday, Labour Day


def test_us_calendar_15th_and_month_end(sb: SandboxServer) -> None:
    days = [date.fromisoformat(str(i["timestamp_str"])) for i in sb.history("US.AAPL")]
    for day in days:
        assert sbdata.is_business_day("US", day)
        month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        assert day in (
            sbdata.previous_business_day("US", day.replace(day=15)),
            sbdata.previous_business_day("US", month_end),
        )
    assert len(days) == len(set(days))
    expected = [
        date(2026, 5, 15),
        date(2026, 4, 30),
        date(2026, 4, 15),
        date(2026, 3, 31),
        date(2026, 3, 13),  # 15th is a Sunday
        date(2026, 2, 27),  # 28th is a Saturday
        date(2026, 2, 13),
        date(2026, 1, 30),
    ]
    assert days[:8] == expected
    assert date(2024, 3, 28) in days  # 31st a Sunday, 29th Good Friday
    assert date(2021, 12, 31) in days  # NYSE stays open before a Saturday New Year
    assert date(2023, 12, 29) in days and date(2025, 11, 28) in days


def test_timestamps_are_local_midnight(sb: SandboxServer) -> None:
    for symbol, tz in (("HK.00700", "Asia/Hong_Kong"), ("US.AAPL", "America/New_York")):
        offsets = set()
        for item in sb.history(symbol):
            local = datetime.fromtimestamp(int(item["timestamp"]) / 1000, ZoneInfo(tz))
            assert (local.hour, local.minute) == (0, 0)
            assert local.date().isoformat() == item["timestamp_str"]
            offsets.add(local.utcoffset())
        if symbol == "HK.00700":
            assert offsets == {timedelta(hours=8)}
        else:
            assert offsets == {timedelta(hours=-5), timedelta(hours=-4)}  # DST-aware
    us = {i["timestamp_str"]: i["timestamp"] for i in sb.history("US.AAPL")}
    assert us["2026-01-15"] == int(datetime(2026, 1, 15, 5, tzinfo=ZoneInfo("UTC")).timestamp()) * 1000
    assert us["2026-05-15"] == int(datetime(2026, 5, 15, 4, tzinfo=ZoneInfo("UTC")).timestamp()) * 1000


def test_us_item_fields(sb: SandboxServer) -> None:
    item = get(sb, "US.AAPL", count=1).json()["data"]["items"][0]
    assert set(item) == {
        "shares_short",
        "short_percent",
        "avg_daily_share_volume",
        "days_to_cover",
        "close_price",
        "last_close_price",
        "avg_daily_short_volume",
        "timestamp",
        "timestamp_str",
    }
    for name in ("shares_short", "avg_daily_share_volume", "avg_daily_short_volume"):
        assert isinstance(item[name], str) and int(item[name]) > 0
    for name in ("short_percent", "days_to_cover", "close_price", "last_close_price"):
        assert isinstance(item[name], float)


# ---------------------------------------------------------------------------------------------- paging


@pytest.mark.parametrize(("marker", "last"), [("-1", "-1"), ("empty", ""), ("absent", None)])
def test_pagination_walks_full_history(sb: SandboxServer, marker: str, last: str | None) -> None:
    sb.configure(end_marker=marker)
    for symbol, count in (("HK.00700", 90), ("US.AAPL", 90), ("US.AAPL", 7)):
        items, pages = walk(sb, symbol, count)
        assert items == sb.history(symbol)
        dates = [i["timestamp_str"] for i in items]
        assert len(dates) == len(set(dates)) and dates == sorted(dates, reverse=True)
        assert all(len(p["items"]) == count for p in pages[:-1])
        assert pages[-1].get("next_key", None) == last
        assert ("next_key" in pages[-1]) is (last is not None)
    assert get(sb, "HK.00700").json()["data"]["items"] == sb.history("HK.00700")[:30]  # default count


def test_publish_adds_one_date_and_keeps_pages(sb: SandboxServer) -> None:
    first = get(sb, "HK.00700", count=5).json()["data"]
    second = get(sb, "HK.00700", count=5, next_key=first["next_key"]).json()["data"]
    before = sb.history("HK.00700")
    assert sb.publish("HK") == date(2026, 5, 22)
    after = sb.history("HK.00700")
    assert after[1:] == before and after[0]["timestamp_str"] == "2026-05-22"
    assert get(sb, "HK.00700", count=5, next_key=first["next_key"]).json()["data"] == second
    assert get(sb, "HK.00700", count=1).json()["data"]["items"][0]["timestamp_str"] == "2026-05-22"
    assert sb.history("US.AAPL")[0]["timestamp_str"] == "2026-05-15"  # the other market did not move
    reply = requests.post(sb.url + "/_sandbox/publish", params={"market": "US"}, timeout=5).json()
    assert reply == {"market": "US", "trade_date": "2026-05-29"}
    assert sb.published("US") == date(2026, 5, 29)
    sb.reset()
    assert sb.history("HK.00700") == before


def test_today_sets_published_date(sb: SandboxServer) -> None:
    sb.configure(today=date(2026, 3, 1))
    assert get(sb, "HK.00700", count=1).json()["data"]["items"][0]["timestamp_str"] == "2026-02-27"
    sb.configure(today=date(2016, 1, 1))  # before HK.00700's first record
    assert get(sb, "HK.00700").json()["ret_code"] == -10


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("symbol", "ret_code", "code"),
    [
        ("HK.99999", -7, "invalid_symbol"),
        ("US.NOSUCH", -7, "invalid_symbol"),
        ("HK.99998", -8, "unsupported"),
        ("US.VIX", -8, "unsupported"),
        ("HK.99997", -10, "no_data"),
        ("US.NODATA", -10, "no_data"),
        ("US.BADRET", 42, None),
        ("SH.600000", -8, "unsupported"),
        ("SZ.000001", -8, "unsupported"),
        ("JP.7203", -8, "unsupported"),
    ],
)
def test_error_symbols(sb: SandboxServer, symbol: str, ret_code: int, code: str | None) -> None:
    response = get(sb, symbol)
    assert response.status_code == 200
    body = response.json()
    assert body["ret_code"] == ret_code and body["ret_msg"]
    assert body["error"]["message"] and "data" not in body
    if code:
        assert body["error"]["code"] == code


def test_fault_symbols(sb: SandboxServer) -> None:
    response = get(sb, "US.BADJSON")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(ValueError):
        response.json()
    response = get(sb, "US.HTML")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")
    first = get(sb, "US.LOOPKEY", count=3).json()["data"]
    again = get(sb, "US.LOOPKEY", count=3, next_key=first["next_key"]).json()["data"]
    assert len(first["items"]) == 3 and first["next_key"] not in ("", "-1")
    assert again == first
    huge = get(sb, "US.LOOPKEY", count=90, next_key=first["next_key"]).json()["data"]
    assert huge["next_key"] == first["next_key"] and len(huge["items"]) == 90


@pytest.mark.parametrize(
    "params", [{"count": 0}, {"count": 91}, {"count": "abc"}, {"count": -1}, {"count": "1.5"}, {"count": ""}]
)
def test_bad_count(sb: SandboxServer, params: dict[str, Any]) -> None:
    response = get(sb, "HK.00700", **params)
    assert response.status_code == 400
    assert response.json()["ret_code"] == -3 and response.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "symbol",
    ["HK.123456", "HK.ABC", "HK.", "US.1ABC", "US.", "US.ABCDEFGHIJK", "AAPL", "X.1", "US.A..B", "H K.1"],
)
def test_malformed_symbols(sb: SandboxServer, symbol: str) -> None:
    response = get(sb, symbol)
    assert response.status_code == 400 and response.json()["ret_code"] == -3


def test_bad_next_key(sb: SandboxServer) -> None:
    other = get(sb, "US.AAPL", count=2).json()["data"]["next_key"]
    for key in ("garbage!!", "-1", other, "SEsuMDA3MDB8MjAyNi0wNS0xNA"):  # last: HK.00700|2026-05-14
        response = get(sb, "HK.00700", count=2, next_key=key)
        assert response.status_code == 400 and response.json()["ret_code"] == -3, key


def test_bad_paths(sb: SandboxServer) -> None:
    response = requests.get(sb.url + "/v1/quote/HK.00700/nope", timeout=5)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = requests.post(sb.url + PATH.format("HK.00700"), timeout=5)
    assert response.status_code == 405
    assert requests.get(sb.url + "/_sandbox/nope", timeout=5).status_code == 404


# ---------------------------------------------------------------------------------------------- limits


def test_rate_limit_sliding_window(sb: SandboxServer) -> None:
    sb.configure(rate_limit_calls=5, rate_limit_period=1.0)
    sb.reset_stats()
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            deadline = time.monotonic() + 2.2
            while time.monotonic() < deadline:
                response = session.get(sb.url + PATH.format("HK.00700"), params={"count": 1}, timeout=5)
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        retry_after.append(response.headers["Retry-After"])
                        assert response.json()["error"]["code"] == "rate_limited"
                        assert "ret_code" not in response.json()
                        assert int(response.headers["X-Retry-After-Ms"]) >= 1
                time.sleep(0.02)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sb.stats()
    stamps = stats["timestamps"]
    assert statuses.count(200) == len(stamps) and 10 <= len(stamps) <= 15
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(stamps, stamps[5:], strict=False))
    assert retry_after and all(value.isdigit() and int(value) >= 1 for value in retry_after)
    assert stats["rate_limited"] == statuses.count(429) == stats["by_status"]["429"]
    assert stats["requests"] == len(statuses)


# ---------------------------------------------------------------------------------------------- faults


def test_fault_internal_error(sb: SandboxServer) -> None:
    sb.configure(internal_error_rate=1.0)
    response = get(sb, "HK.00700")
    assert response.status_code == 200
    assert response.json()["ret_code"] == -5 and response.json()["error"]["code"] == "internal_error"
    assert sb.stats()["faults"]["internal_error"] == 1


def test_fault_http5xx(sb: SandboxServer) -> None:
    sb.configure(http5xx_rate=1.0)
    statuses = {get(sb, "HK.00700").status_code for _ in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert get(sb, "HK.00700").headers["Content-Type"].startswith("text/html")


def test_fault_http429_does_not_use_a_slot(sb: SandboxServer) -> None:
    sb.configure(http429_rate=1.0, rate_limit_calls=2, rate_limit_period=30.0)
    for _ in range(4):
        response = get(sb, "HK.00700")
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    stats = sb.stats()
    assert stats["timestamps"] == [] and stats["faults"]["http429"] == 4 and stats["rate_limited"] == 0
    sb.configure(http429_rate=0.0)
    assert [get(sb, "HK.00700").status_code for _ in range(3)] == [200, 200, 429]


def test_fault_delay(sb: SandboxServer) -> None:
    sb.configure(delay_rate=1.0, delay_seconds=0.4)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(sb, "HK.00700", timeout=0.15)
    started = time.monotonic()
    assert get(sb, "HK.00700").json()["ret_code"] == 0
    assert time.monotonic() - started >= 0.4


def test_fault_malformed(sb: SandboxServer) -> None:
    sb.configure(malformed_rate=1.0)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        get(sb, "HK.00700")
    sb.configure(malformed_rate=0.0)
    assert get(sb, "HK.00700").status_code == 200


def test_fault_draws_are_seeded(sb: SandboxServer) -> None:
    def run() -> list[int]:
        sb.configure(seed=7, internal_error_rate=0.5)
        return [get(sb, "HK.00700", count=1).json()["ret_code"] for _ in range(16)]

    first = run()
    assert first == run() and set(first) == {0, -5}


# ---------------------------------------------------------------------------------------------- auth, control


def test_token(sb: SandboxServer) -> None:
    sb.configure(token="s3cret")
    url = sb.url + PATH.format("HK.00700")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {
            "error": {"code": "unauthorized", "message": response.json()["error"]["message"]}
        }
    response = requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=5)
    assert response.status_code == 200 and response.json()["ret_code"] == 0
    state = requests.get(sb.url + "/_sandbox/state", timeout=5).text
    assert "s3cret" not in state and '"token_set":true' in state


def test_enqueue(sb: SandboxServer) -> None:
    assert (
        sb.enqueue(status=503, body="busy", headers={"Content-Type": "text/plain", "Retry-After": "3"}) == 1
    )
    reply = requests.post(
        sb.url + "/_sandbox/enqueue",
        json={"status": 200, "body": '{"ret_code": -5}', "headers": {}},
        timeout=5,
    )
    assert reply.json() == {"queued": 2}
    first = get(sb, "US.AAPL")
    assert (first.status_code, first.text, first.headers["Retry-After"]) == (503, "busy", "3")
    assert first.headers["Content-Type"] == "text/plain"
    second = get(sb, "US.AAPL")
    assert second.json() == {"ret_code": -5} and second.headers["Content-Type"].startswith("application/json")
    assert get(sb, "US.AAPL").json()["ret_code"] == 0
    assert requests.post(sb.url + "/_sandbox/enqueue", json={"status": "x"}, timeout=5).status_code == 400


def test_stats(sb: SandboxServer) -> None:
    sb.reset_stats()
    get(sb, "hk.700")
    get(sb, "HK.00700", count=999)
    get(sb, "US.AAPL")
    requests.get(sb.url + "/_sandbox/state", timeout=5)
    stats = requests.get(sb.url + "/_sandbox/stats", timeout=5).json()
    assert set(stats) == {
        "requests",
        "by_transport",
        "by_status",
        "by_ret_type",
        "by_symbol",
        "rate_limited",
        "faults",
        "timestamps",
    }
    assert stats["requests"] == 3 and stats["by_status"] == {"200": 2, "400": 1}
    assert stats["by_transport"] == {"rest": 3, "opend": 0} and stats["by_ret_type"] == {}
    assert stats["by_symbol"] == {"HK.00700": 2, "US.AAPL": 1}
    assert len(stats["timestamps"]) == 3 and abs(stats["timestamps"][-1] - time.time()) < 5
    assert requests.post(sb.url + "/_sandbox/reset_stats", timeout=5).json() == {"ok": True}
    assert sb.stats()["requests"] == 0


def test_control_config_and_state(sb: SandboxServer) -> None:
    reply = requests.post(
        sb.url + "/_sandbox/config", json={"internal_error_rate": 0.25, "end_marker": "absent"}, timeout=5
    )
    assert reply.status_code == 200
    state = requests.get(sb.url + "/_sandbox/state", timeout=5).json()
    assert state["fault_rates"]["internal_error"] == 0.25 and state["config"]["end_marker"] == "absent"
    assert state["published"] == {"HK": "2026-05-15", "US": "2026-05-15"}
    for bad in ({"internal_error_rate": 2}, {"port": 1}, {"nope": 1}, {"end_marker": "x"}):
        assert requests.post(sb.url + "/_sandbox/config", json=bad, timeout=5).status_code == 400
    assert requests.post(sb.url + "/_sandbox/config", data="not json", timeout=5).status_code == 400
    history = requests.get(sb.url + "/_sandbox/history", params={"symbol": "US.AAPL"}, timeout=5).json()
    assert history["items"] == sb.history("US.AAPL")
    assert requests.post(sb.url + "/_sandbox/reset", timeout=5).json() == {"ok": True}


# ---------------------------------------------------------------------------------------------- robustness


def test_stalled_request_is_dropped(sb: SandboxServer) -> None:
    sb.configure(socket_timeout=0.5)
    host, port = sb.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as stalled:
        stalled.sendall(b"GET /v1/quote/HK.00700/short-sel")
        assert get(sb, "HK.00700").status_code == 200  # others are served meanwhile
        assert stalled.recv(1024) == b""  # closed by the server (the socket's 5 s only guards a hang)
    assert get(sb, "HK.00700").status_code == 200


def test_long_urls(sb: SandboxServer) -> None:
    response = get(sb, "HK." + "1" * 9000)
    assert response.status_code == 400 and response.json()["ret_code"] == -3
    assert requests.get(sb.url + "/" + "x" * 70_000, timeout=5).status_code == 414
    assert get(sb, "HK.00700").status_code == 200


def test_cli_serves_and_stops_on_sigterm(sb: SandboxServer) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    cmd = [sys.executable, "-m", "airflow_provider_shortint.sandbox", "--port", "0", "--end-marker", "-1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("shortint sandbox listening on http://127.0.0.1:")
        url = line.split()[-1]
        response = requests.get(url + PATH.format("US.TSLA"), params={"count": 90}, timeout=5)
        assert response.json()["data"]["items"] == sb.history("US.TSLA")[:90]  # same data in any process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_token_from_environment() -> None:
    """SHORTINT_SANDBOX_TOKEN sets the required token without putting it on the command line."""
    from airflow_provider_shortint.sandbox.__main__ import build_parser

    os.environ["SHORTINT_SANDBOX_TOKEN"] = "env-token"
    try:
        assert build_parser().parse_args([]).token == "env-token"
        assert build_parser().parse_args(["--token", "flag"]).token == "flag"
    finally:
        del os.environ["SHORTINT_SANDBOX_TOKEN"]
    assert build_parser().parse_args([]).token is None
