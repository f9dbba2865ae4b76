"""The sandbox's OpenD door driven by the real futu-api client: data, paging, errors, budget, faults."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.sandbox import SandboxServer

pytestmark = pytest.mark.usefixtures("futu_quiet")

REST_PATH = "/v1/quote/{}/short-selling/short-interest"
# The vendor SDK document's example output for HK.00700, verbatim (header row, then rows; timestamps in s).
SDK_DOCUMENT_HEADER = (
    "timestamp timestamp_str aggregated_short aggregated_short_ratio close_price last_close_price"
)
SDK_DOCUMENT_ROWS = [
    (1777478400, "2026-04-30", 51480638, 0.56, 467.8, 479.2),
    (1776960000, "2026-04-24", 51888755, 0.56, 493.4, 495.2),
    (1776355200, "2026-04-17", 47974208, 0.52, 510.5, 517.0),
    (1775750400, "2026-04-10", 48424833, 0.53, 504.5, 508.5),
    (1775059200, "2026-04-02", 49982828, 0.54, 489.2, 496.6),
    (1774540800, "2026-03-27", 52744147, 0.57, 493.4, 495.6),
    (1773936000, "2026-03-20", 51710854, 0.56, 508.0, 513.0),
    (1773331200, "2026-03-13", 48105325, 0.52, 547.5, 546.5),
    (1772726400, "2026-03-06", 42404275, 0.46, 519.0, 502.0),
    (1772121600, "2026-02-27", 36037870, 0.39, 518.0, 512.0),
]
MAX_PAGES = 200


def frame_of(symbol: str, result: tuple[Any, ...]) -> Any:
    """The SDK frame of a successful call (HK or US by symbol); fails the test on an error tuple."""
    ret, us_df, hk_df = result
    assert ret == 0, result
    return hk_df if symbol.startswith("HK.") else us_df


def walk_opend(ctx: Any, symbol: str, num: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Every row of a symbol over OpenD, page by page, and the next_key of every page."""
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    key: str | None = None
    for _ in range(MAX_PAGES):
        frame = frame_of(symbol, ctx.get_short_interest(symbol, next_key=key, num=num))
        rows += frame.to_dict("records")
        key = frame.attrs["next_key"]
        keys.append(key)
        if key in ("", "-1"):
            return rows, keys
    raise AssertionError(f"{symbol}: more than {MAX_PAGES} pages")


def walk_rest(sb: SandboxServer, symbol: str) -> list[dict[str, Any]]:
    """Every item of a symbol over REST (90 per page)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"count": 90}
    for _ in range(MAX_PAGES):
        body = requests.get(sb.url + REST_PATH.format(symbol), params=params, timeout=10).json()
        assert body["ret_code"] == 0, body
        items += body["data"]["items"]
        key = body["data"].get("next_key")
        if key in (None, "", "-1"):
            return items
        params["next_key"] = key
    raise AssertionError(f"{symbol}: more than {MAX_PAGES} pages")


def as_sdk_row(symbol: str, item: dict[str, Any]) -> dict[str, Any]:
    """A REST item as the SDK frame's row: its columns only, timestamp in seconds, int64 strings as ints."""
    market = MARKETS[symbol.split(".")[0]]
    row: dict[str, Any] = {}
    for column in market.sdk_columns:
        value = item[column]
        if column == "timestamp":
            value //= 1000
        elif column != "timestamp_str" and isinstance(value, str):
            value = int(value)
        row[column] = value
    return row


# ---------------------------------------------------------------------------------------------- data


def test_documented_hk_00700_rows(opend_client: Any) -> None:
    """The real client gets the SDK document's rows, value for value, after 2026-05-15 and 2026-05-08."""
    first = frame_of("HK.00700", opend_client.get_short_interest("HK.00700"))
    assert len(first) == 10  # the .proto's default page size
    second = frame_of(
        "HK.00700", opend_client.get_short_interest("HK.00700", next_key=first.attrs["next_key"])
    )
    rows = first.to_dict("records") + second.to_dict("records")
    assert [row["timestamp_str"] for row in rows[:2]] == ["2026-05-15", "2026-05-08"]
    assert (rows[0]["aggregated_short"], rows[0]["aggregated_short_ratio"]) == (54177721, 0.59)
    assert (rows[0]["close_price"], rows[0]["last_close_price"]) == (456.4, 454.9)
    got = [
        (
            r["timestamp"],
            r["timestamp_str"],
            r["aggregated_short"],
            r["aggregated_short_ratio"],
            r["close_price"],
            r["last_close_price"],
        )
        for r in rows[2:12]
    ]
    assert got == SDK_DOCUMENT_ROWS
    assert " ".join(first.columns) == SDK_DOCUMENT_HEADER


@pytest.mark.parametrize("symbol", ["HK.00700", "US.AAPL", "HK.09988", "US.T7"])
def test_rows_equal_rest(opend_sandbox: SandboxServer, opend_client: Any, symbol: str) -> None:
    """Whole histories over both doors are the same rows (apart from the columns the SDK lacks)."""
    rest = walk_rest(opend_sandbox, symbol)
    rows, keys = walk_opend(opend_client, symbol, num=50)
    assert len(rows) == len(rest) > 0
    assert rows == [as_sdk_row(symbol, item) for item in rest]
    assert len(keys) == -(-len(rest) // 50) and keys[-1] == "-1" and len(set(keys)) == len(keys)
    zone = ZoneInfo(MARKETS[symbol[:2]].timezone)
    for row in rows[:5]:  # seconds at local midnight of the trading day
        assert (
            datetime.fromtimestamp(row["timestamp"], zone).strftime("%Y-%m-%d %H:%M")
            == row["timestamp_str"] + " 00:00"
        )


@pytest.mark.parametrize("num", [1, 7, 50])
def test_paging_sizes(opend_sandbox: SandboxServer, opend_client: Any, num: int) -> None:
    symbol = "US.AAPL"
    expected = [item["timestamp_str"] for item in opend_sandbox.history(symbol)]
    limit = 3 if num == 1 else MAX_PAGES  # one row per page: three pages are enough to show it
    key: str | None = None
    seen: list[str] = []
    for _ in range(limit):
        frame = frame_of(symbol, opend_client.get_short_interest(symbol, next_key=key, num=num))
        assert 1 <= len(frame) <= num
        seen += list(frame["timestamp_str"])
        key = frame.attrs["next_key"]
        if key == "-1":
            break
    assert seen == expected[: len(seen)] and (num == 1 or seen == expected)


@pytest.mark.parametrize(("marker", "reported"), [("-1", "-1"), ("absent", "-1"), ("empty", "")])
def test_end_markers(opend_sandbox: SandboxServer, opend_client: Any, marker: str, reported: str) -> None:
    opend_sandbox.configure(end_marker=marker)
    rows, keys = walk_opend(opend_client, "HK.00700", num=50)
    assert keys[-1] == reported and len(rows) == len(opend_sandbox.history("HK.00700"))


def test_publish_makes_a_new_date_appear(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    before = frame_of("HK.00700", opend_client.get_short_interest("HK.00700", num=1))
    assert before["timestamp_str"].tolist() == ["2026-05-15"]
    new_day = opend_sandbox.publish("HK")
    assert new_day == date(2026, 5, 22)
    after = frame_of("HK.00700", opend_client.get_short_interest("HK.00700", num=2))
    assert after["timestamp_str"].tolist() == ["2026-05-22", "2026-05-15"]
    assert after["timestamp"].iloc[0] == int(
        datetime(2026, 5, 22, tzinfo=ZoneInfo("Asia/Hong_Kong")).timestamp()
    )
    # The REST door sees the same clock.
    body = requests.get(
        opend_sandbox.url + REST_PATH.format("HK.00700"), params={"count": 1}, timeout=5
    ).json()
    assert body["data"]["items"][0]["timestamp_str"] == "2026-05-22"


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("HK.99999", "unknown security: security HK.99999 does not exist"),
        ("US.NOSUCH", "unknown security: security US.NOSUCH does not exist"),
        ("HK.99998", "unsupported security: HK.99998 is a warrant"),
        ("US.VIX", "unsupported security: US.VIX is an index"),
        ("SH.600000", "unsupported security: unsupported market 'SH'"),
        ("US.BADRET", "unknown error: an error code this client has never seen"),
        ("HK.1234567", "invalid parameter: malformed symbol"),
    ],
)
def test_error_symbols(opend_client: Any, symbol: str, message: str) -> None:
    ret, msg, data = opend_client.get_short_interest(symbol)
    assert (ret, data) == (-1, None) and msg.startswith(message), msg


@pytest.mark.parametrize("symbol", ["HK.99997", "US.NODATA"])
def test_no_data_is_an_empty_success(opend_client: Any, symbol: str) -> None:
    frame = frame_of(symbol, opend_client.get_short_interest(symbol))
    assert frame.empty and frame.attrs["next_key"] == "-1"


def test_bad_parameters(opend_client: Any) -> None:
    for num in (0, 51):
        ret, msg, _ = opend_client.get_short_interest("HK.00700", num=num)
        assert ret == -1 and msg == f"invalid parameter: num must be within 1..50, got {num}"
    ret, msg, _ = opend_client.get_short_interest("HK.00700", next_key="not-a-key")
    assert ret == -1 and msg.startswith("invalid parameter: unknown next_key")
    key = frame_of("US.AAPL", opend_client.get_short_interest("US.AAPL", num=2)).attrs["next_key"]
    ret, msg, _ = opend_client.get_short_interest("HK.00700", next_key=key)  # another symbol's key
    assert ret == -1 and msg.startswith("invalid parameter: unknown next_key")


def test_repeated_key_and_corrupt_frames(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    first = frame_of("US.LOOPKEY", opend_client.get_short_interest("US.LOOPKEY", num=5))
    again = frame_of(
        "US.LOOPKEY", opend_client.get_short_interest("US.LOOPKEY", next_key=first.attrs["next_key"], num=5)
    )
    assert again.attrs["next_key"] == first.attrs["next_key"] and again.equals(first)
    for symbol in ("US.BADJSON", "US.HTML"):
        ret, msg, data = opend_client.get_short_interest(symbol)
        assert (ret, data) == (-1, None) and "check sha error" in msg
    assert (
        frame_of("HK.00700", opend_client.get_short_interest("HK.00700", num=1)).shape[0] == 1
    )  # still connected
    assert opend_sandbox.stats()["by_ret_type"] == {"0": 3, "corrupt": 2}


# ------------------------------------------------------------------------------------------ budget, faults


def test_one_budget_for_both_doors(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    opend_sandbox.configure(rate_limit_calls=4, rate_limit_period=60.0)
    url = opend_sandbox.url + REST_PATH.format("HK.00700")
    assert requests.get(url, timeout=5).status_code == 200
    assert frame_of("HK.00700", opend_client.get_short_interest("HK.00700")).shape[0] == 10
    assert requests.get(url, timeout=5).status_code == 200
    assert frame_of("HK.00700", opend_client.get_short_interest("HK.00700")).shape[0] == 10
    refused = requests.get(url, timeout=5)  # the fifth request, whichever door, is over the limit
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    ret, msg, _ = opend_client.get_short_interest("HK.00700")
    assert ret == -1 and msg.startswith("request too frequent: at most 4 requests per 60 seconds")
    stats = opend_sandbox.stats()
    assert stats["by_transport"] == {"rest": 3, "opend": 3} and stats["rate_limited"] == 2
    assert len(stats["timestamps"]) == 4 and stats["by_ret_type"] == {"-1": 1, "0": 2}


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("internal_error", "internal error (injected fault)"),
        ("http5xx", "NN_ProtoRet_TimeOut (injected fault)"),
        ("http429", "request too frequent (injected fault)"),
    ],
)
def test_error_reply_faults(
    opend_sandbox: SandboxServer, opend_client: Any, fault: str, message: str
) -> None:
    opend_sandbox.configure(**{f"{fault}_rate": 1.0})
    assert opend_client.get_short_interest("HK.00700") == (-1, message, None)
    opend_sandbox.configure(**{f"{fault}_rate": 0.0})
    assert frame_of("HK.00700", opend_client.get_short_interest("HK.00700")).shape[0] == 10
    assert opend_sandbox.stats()["faults"][fault] == 1


def test_error_faults_take_precedence_over_a_drop(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    """As over REST: http5xx > internal_error > malformed; a drop only replaces a contract answer."""
    opend_sandbox.configure(malformed_rate=1.0, internal_error_rate=1.0)
    assert opend_client.get_short_interest("HK.00700") == (-1, "internal error (injected fault)", None)
    opend_sandbox.configure(http5xx_rate=1.0)
    assert opend_client.get_short_interest("HK.00700") == (-1, "NN_ProtoRet_TimeOut (injected fault)", None)
    assert opend_sandbox.stats()["by_ret_type"] == {"-1": 1, "-100": 1}


def test_dropped_connection_then_reconnect(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    """``malformed`` over OpenD drops the connection without a reply; the next connection is served."""
    from futu import OpenQuoteContext

    opend_sandbox.configure(malformed_rate=1.0)
    assert opend_client.get_short_interest("HK.00700") == (-1, "Disconnect", None)
    opend_sandbox.configure(malformed_rate=0.0)
    # (futu-api would reconnect by itself after its fixed 6 s; a new context connects at once.)
    fresh = OpenQuoteContext(host="127.0.0.1", port=opend_sandbox.opend_port)
    try:
        assert frame_of("HK.00700", fresh.get_short_interest("HK.00700")).shape[0] == 10
        assert fresh.get_sync_conn_id() == 2  # the sandbox's second session
    finally:
        fresh.close()
    stats = opend_sandbox.stats()
    assert stats["faults"]["malformed"] == 1 and stats["by_ret_type"] == {"0": 1, "dropped": 1}


def test_delayed_reply(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    from futu import OpenQuoteContext

    opend_sandbox.configure(delay_rate=1.0, delay_seconds=0.6)
    started = time.monotonic()
    assert frame_of("HK.00700", opend_client.get_short_interest("HK.00700")).shape[0] == 10
    assert time.monotonic() - started >= 0.6
    opend_sandbox.configure(delay_rate=0.0)
    # A delayed reply holds up nobody else: another client is served meanwhile.
    other = OpenQuoteContext(host="127.0.0.1", port=opend_sandbox.opend_port)
    try:
        assert frame_of("US.AAPL", other.get_short_interest("US.AAPL", num=3)).shape[0] == 3
    finally:
        other.close()
    assert opend_sandbox.stats()["faults"]["delay"] == 1


def test_fault_draws_are_seeded_across_doors(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    def run() -> list[int]:
        opend_sandbox.configure(seed=11, internal_error_rate=0.5)
        return [opend_client.get_short_interest("HK.00700", num=1)[0] for _ in range(12)]

    first = run()
    assert first == run() and set(first) == {0, -1}


# ---------------------------------------------------------------------------------------------- wire


def raw_frame(
    proto_id: int, body: bytes, serial: int = 7, *, sha: bytes | None = None, fmt: int = 0
) -> bytes:
    """An OpenD request frame built by hand (44-byte header; body protobuf, or JSON with fmt=1)."""
    digest = sha if sha is not None else hashlib.sha1(body).digest()
    return (
        struct.pack("<1s1sI2B2I20s8s", b"F", b"T", proto_id, fmt, 0, serial, len(body), digest, b"\0" * 8)
        + body
    )


def read_reply(sock: socket.socket) -> tuple[int, int, bytes]:
    """(proto_id, serial, body) of one reply frame."""
    head = b""
    while len(head) < 44:
        chunk = sock.recv(44 - len(head))
        assert chunk, "connection closed"
        head += chunk
    _, _, proto_id, _, _, serial, size, digest, _ = struct.unpack("<1s1sI2B2I20s8s", head)
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    assert hashlib.sha1(body).digest() == digest
    return proto_id, serial, body


def test_wire_rules(opend_sandbox: SandboxServer) -> None:
    from futu.common.pb import Common_pb2, InitConnect_pb2, KeepAlive_pb2

    address = ("127.0.0.1", opend_sandbox.opend_port)
    with socket.create_connection(address, timeout=5) as sock:  # anything before InitConnect is refused
        sock.sendall(raw_frame(1004, KeepAlive_pb2.Request(c2s={"time": 1}).SerializeToString()))
        proto_id, serial, body = read_reply(sock)
        reply = KeepAlive_pb2.Response.FromString(body)
        assert (proto_id, serial, reply.retType, reply.retMsg) == (1004, 7, -1, "send InitConnect first")
    request = InitConnect_pb2.Request(
        c2s={"clientVer": 100, "clientID": "t", "packetEncAlgo": Common_pb2.PacketEncAlgo_AES_CBC}
    )
    with socket.create_connection(address, timeout=5) as sock:  # encryption is refused, then the line drops
        sock.sendall(raw_frame(1001, request.SerializeToString()))
        reply = InitConnect_pb2.Response.FromString(read_reply(sock)[2])
        assert reply.retType == -1 and "is_encrypt=False" in reply.retMsg
        assert sock.recv(16) == b""
    with socket.create_connection(address, timeout=5) as sock:  # a frame failing its SHA-1 drops the line
        sock.sendall(raw_frame(1004, b"\x08\x01", sha=b"\0" * 20))
        assert sock.recv(16) == b""
    with socket.create_connection(address, timeout=5) as sock:  # so does a header that is not "FT"
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"\0" * 40)
        assert sock.recv(16) == b""
    request.c2s.packetEncAlgo = Common_pb2.PacketEncAlgo_None
    with socket.create_connection(address, timeout=5) as sock:  # the plain handshake, then a ping
        sock.sendall(raw_frame(1001, request.SerializeToString(), serial=1))
        s2c = InitConnect_pb2.Response.FromString(read_reply(sock)[2]).s2c
        assert s2c.keepAliveInterval == 10 and s2c.connID > 0
        sock.sendall(raw_frame(1004, KeepAlive_pb2.Request(c2s={"time": 1}).SerializeToString(), serial=2))
        reply = KeepAlive_pb2.Response.FromString(read_reply(sock)[2])
        assert reply.retType == 0 and abs(reply.s2c.time - time.time()) < 60
    assert opend_sandbox.stats()["requests"] == 0  # session protocols are not API requests


def test_json_format(opend_sandbox: SandboxServer) -> None:
    """Requests in the JSON format (header format 1) are answered in JSON.

    Not through the SDK: futu-api 10's own JSON parser (pbjson.json2pb) fails on protobuf >= 6.
    """
    import json

    init = {"c2s": {"clientVer": 100, "clientID": "json", "packetEncAlgo": -1}}
    query = {"c2s": {"security": {"market": 1, "code": "00700"}, "num": 2}}
    with socket.create_connection(("127.0.0.1", opend_sandbox.opend_port), timeout=5) as sock:
        sock.sendall(raw_frame(1001, json.dumps(init).encode(), serial=1, fmt=1))
        assert json.loads(read_reply(sock)[2])["s2c"]["keepAliveInterval"] == 10
        sock.sendall(raw_frame(3249, json.dumps(query).encode(), serial=2, fmt=1))
        proto_id, serial, body = read_reply(sock)
    reply = json.loads(body)
    assert (proto_id, serial, reply["retType"]) == (3249, 2, 0)
    items = reply["s2c"]["hkItemList"]
    assert [item["timestampStr"] for item in items] == ["2026-05-15", "2026-05-08"]
    assert items[0]["aggregatedShort"] == "54177721" and items[0]["timestamp"] == "1778774400"


def test_dripping_client_is_cut_off(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    """A frame must arrive whole within 2 x socket_timeout of its first byte; others are served meanwhile."""
    opend_sandbox.configure(socket_timeout=0.5)
    with socket.create_connection(("127.0.0.1", opend_sandbox.opend_port), timeout=5) as sock:
        frame = raw_frame(1004, b"\x0a\x02\x08\x01")
        closed = False
        for byte in frame[:40]:  # one byte every 0.2 s: each read is in time, the frame is not
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            assert frame_of("US.AAPL", opend_client.get_short_interest("US.AAPL", num=1)).shape[0] == 1
            time.sleep(0.2)
        if not closed:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(16) == b""


def test_global_state(opend_client: Any) -> None:
    ret, state = opend_client.get_global_state()
    assert ret == 0 and state["qot_logined"] is True and state["server_ver"] == "1000"


def test_gateway_not_logged_in(opend_sandbox: SandboxServer, opend_client: Any) -> None:
    """``opend_logged_in=False``: the gateway refuses 3249 itself (no budget slot), and its state says so."""
    config = requests.post(opend_sandbox.url + "/_sandbox/config", json={"opend_logged_in": False}, timeout=5)
    assert config.status_code == 200 and config.json()["config"]["opend_logged_in"] is False
    ret, msg, data = opend_client.get_short_interest("HK.00700")
    assert (ret, data) == (-1, None) and "not logged in" in msg
    assert opend_client.get_global_state()[1]["qot_logined"] is False
    stats = opend_sandbox.stats()
    assert (
        stats["by_transport"]["opend"] == 1
        and stats["timestamps"] == []
        and stats["by_ret_type"] == {"-1": 1}
    )
    bad = requests.post(opend_sandbox.url + "/_sandbox/config", json={"opend_logged_in": "no"}, timeout=5)
    assert bad.status_code == 400
    opend_sandbox.configure(opend_logged_in=True)
    assert frame_of("HK.00700", opend_client.get_short_interest("HK.00700")).shape[0] == 10


def test_stop_disconnects_clients(futu_quiet: None) -> None:
    from futu import OpenQuoteContext

    server = SandboxServer(rate_limit_calls=0, opend_port=0).start()
    ctx = OpenQuoteContext(host="127.0.0.1", port=server.opend_port)
    try:
        assert frame_of("HK.00700", ctx.get_short_interest("HK.00700", num=1)).shape[0] == 1
        state = requests.get(server.url + "/_sandbox/state", timeout=5).json()
        assert state["opend_port"] == server.opend_port and state["config"]["opend_port"] == 0
        server.stop()
        ctx.set_sync_query_connect_timeout(1.0)  # the SDK would otherwise wait for its reconnect forever
        assert ctx.get_short_interest("HK.00700", num=1)[0] == -1
    finally:
        ctx.close()
        server.stop()


def test_without_opend_port(opend_sandbox: SandboxServer) -> None:
    with SandboxServer() as server, pytest.raises(RuntimeError, match="opend_port=0"):
        _ = server.opend_port
    with pytest.raises(ValueError, match="opend_port"):
        SandboxServer(opend_port=70000)


def test_missing_sdk_is_named() -> None:
    """Without futu-api, asking for an OpenD port fails at start with a message naming the extra."""
    code = (
        "import sys; sys.modules['futu'] = None\n"  # as if futu-api were not installed
        "from airflow_provider_shortint.sandbox.__main__ import main\n"
        "sys.exit(main(['--port', '0', '--opend-port', '0']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and result.stdout == ""
    assert "needs the vendor SDK futu-api: pip install 'airflow-provider-shortint[futu]'" in result.stderr


def test_cli_opend_port(opend_sandbox: SandboxServer, tmp_path: Any) -> None:
    """The CLI serves both doors; the SDK it imports writes nothing under $HOME."""
    from futu import OpenQuoteContext

    cmd = [sys.executable, "-m", "airflow_provider_shortint.sandbox", "--port", "0", "--opend-port", "0"]
    env = {**os.environ, "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("shortint sandbox listening on http://127.0.0.1:")
        line = proc.stdout.readline()
        assert line.startswith("shortint sandbox OpenD listening on 127.0.0.1:")
        ctx = OpenQuoteContext(host="127.0.0.1", port=int(line.rsplit(":", 1)[1]))
        try:
            frame = frame_of("US.TSLA", ctx.get_short_interest("US.TSLA", num=50))
        finally:
            ctx.close()
        expected = [as_sdk_row("US.TSLA", item) for item in opend_sandbox.history("US.TSLA")[:50]]
        assert frame.to_dict("records") == expected  # same data in any process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not list(tmp_path.rglob("*FutuOpenD*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
