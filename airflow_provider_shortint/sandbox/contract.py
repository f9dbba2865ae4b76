"""What the short-interest API answers, whatever the wire: special symbols, opaque page keys, paging.

Both front ends (REST and OpenD) call :func:`lookup`; they only translate its answer to their protocol.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from dataclasses import dataclass
from datetime import date
from typing import Final

from airflow_provider_shortint.sandbox import data

SPECIAL_SYMBOLS: Final[dict[str, str]] = {
    "HK.99999": "ret_code -7 invalid_symbol (well-formed, no such security)",
    "US.NOSUCH": "ret_code -7 invalid_symbol (well-formed, no such security)",
    "HK.99998": "ret_code -8 unsupported (a warrant)",
    "US.VIX": "ret_code -8 unsupported (an index)",
    "HK.99997": "ret_code -10 no_data",
    "US.NODATA": "ret_code -10 no_data",
    "US.LOOPKEY": "always the same items and the same next_key (repeated-key server fault)",
    "US.BADJSON": "HTTP 200, correct Content-Length, truncated (invalid) JSON body",
    "US.HTML": "HTTP 200 with an HTML page instead of JSON",
    "US.BADRET": "ret_code 42 (unknown to clients), otherwise a well-formed error envelope",
}
SYMBOL_ERRORS: Final[dict[str, tuple[int, str, str]]] = {
    "HK.99999": (-7, "invalid_symbol", "security HK.99999 does not exist"),
    "US.NOSUCH": (-7, "invalid_symbol", "security US.NOSUCH does not exist"),
    "HK.99998": (-8, "unsupported", "HK.99998 is a warrant: only stocks and funds are supported"),
    "US.VIX": (-8, "unsupported", "US.VIX is an index: only stocks and funds are supported"),
    "HK.99997": (-10, "no_data", "no short interest data for HK.99997"),
    "US.NODATA": (-10, "no_data", "no short interest data for US.NODATA"),
    "US.BADRET": (42, "mystery", "an error code this client has never seen"),
}
#: Symbols whose (valid) page is served with a broken body: the front end decides what broken means.
BROKEN_BODY_SYMBOLS: Final = frozenset({"US.BADJSON", "US.HTML"})
LOOP_SYMBOL: Final = "US.LOOPKEY"


@dataclass(frozen=True)
class Refusal:
    """An API error: ``ret_code`` and ``code`` as in DESIGN §2."""

    ret_code: int
    code: str
    message: str


@dataclass(frozen=True)
class Page:
    """One page: items newest first; ``next_key`` None means the key is absent from the answer."""

    symbol: str
    market: data.Market
    items: list[data.Item]
    next_key: str | None


def encode_key(symbol: str, day: date) -> str:
    """Opaque page key: unpadded urlsafe base64 of the symbol and the trade date of the page's first item."""
    return base64.urlsafe_b64encode(f"{symbol}|{day.isoformat()}".encode()).decode().rstrip("=")


def decode_key(key: str) -> tuple[str, date]:
    """Inverse of :func:`encode_key`; raises ValueError when the key was not made by this server."""
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), altchars=b"-_", validate=True).decode()
        symbol, _, day = raw.partition("|")
        return symbol, date.fromisoformat(day)
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"undecodable next_key {key[:40]!r}") from err


def canonical(raw_symbol: str) -> str | Refusal:
    """The canonical symbol, or the refusal of a malformed (-3) or other-market (-8) one."""
    try:
        return data.parse_symbol(raw_symbol)
    except data.SymbolError as err:
        return Refusal(err.ret_code, err.code, err.message)


def lookup(
    symbol: str, count: int, next_key: str, published: dict[data.Market, date], end_marker: str
) -> Page | Refusal:
    """The page of ``count`` items (already validated) of a canonical symbol starting at ``next_key``."""
    if symbol in SYMBOL_ERRORS:
        return Refusal(*SYMBOL_ERRORS[symbol])
    market = data.market_of(symbol)
    items = data.history_view(symbol, published[market])  # oldest first
    if not items:
        return Refusal(-10, "no_data", f"no short interest data for {symbol} yet")
    if symbol == LOOP_SYMBOL:
        next_key = ""
    end = len(items)
    if next_key:
        try:
            key_symbol, key_day = decode_key(next_key)
        except ValueError:
            key_symbol, key_day = "", date.min
        iso = key_day.isoformat()
        end = bisect.bisect_right(items, iso, key=lambda item: str(item["timestamp_str"]))
        if key_symbol != symbol or end == 0 or items[end - 1]["timestamp_str"] != iso:
            return Refusal(-3, "invalid_parameter", f"unknown next_key {next_key[:40]!r} for {symbol}")
    start = max(0, end - count)
    key: str | None = None
    if symbol == LOOP_SYMBOL:  # points back at this very page, whatever the page size
        key = encode_key(symbol, date.fromisoformat(str(items[-1]["timestamp_str"])))
    elif start > 0:
        key = encode_key(symbol, date.fromisoformat(str(items[start - 1]["timestamp_str"])))
    elif end_marker != "absent":
        key = "-1" if end_marker == "-1" else ""
    return Page(symbol, market, items[start:end][::-1], key)
