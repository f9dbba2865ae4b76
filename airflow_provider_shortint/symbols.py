"""Parse, normalise and validate symbols ("hk.700" -> "HK.00700") before any request is made."""

from __future__ import annotations

import re
from collections.abc import Iterable

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.text import shown

__all__ = ["market_of", "normalize_symbol", "parse_symbols"]

_OTHER_MARKET = re.compile(r"[A-Z]{2,4}")
_OTHER_CODE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,19}")
MAX_PROBLEMS_SHOWN = 10  # an error about 5 000 bad symbols names the first ten


def normalize_symbol(symbol: object) -> str:
    """Return the canonical form of ``symbol`` ("HK.00700", "US.BRK.B") or raise.

    Raises ``UnsupportedSecurityError`` for a well-formed symbol of another market and
    ``InvalidParameterError`` for anything malformed, non-strings included.
    """
    if not isinstance(symbol, str):
        raise InvalidParameterError(
            f"symbol must be a string like 'HK.00700' or 'US.AAPL', got {type(symbol).__name__}"
        )
    text = symbol.strip()
    if not text.isascii():  # before upper(): "\u017f".upper() == "S", "\ufb00".upper() == "FF"
        raise InvalidParameterError(
            f"malformed symbol {shown(symbol, 44)}: only ASCII letters, digits, '.' and '-' are allowed"
        )
    text = text.upper()
    market, dot, code = text.partition(".")
    if not dot or not code:
        raise InvalidParameterError(
            f"malformed symbol {shown(symbol, 44)}: expected MARKET.CODE, e.g. 'HK.00700'"
        )
    if market in MARKETS:
        return MARKETS[market].normalize(code, shown(symbol, 44))
    if _OTHER_MARKET.fullmatch(market) and _OTHER_CODE.fullmatch(code):
        raise UnsupportedSecurityError(
            f"unsupported market {market!r} in {shown(symbol, 44)}: "
            f"only {' and '.join(MARKETS)} securities have short interest",
            ret_code=-8,
        )
    raise InvalidParameterError(
        f"malformed symbol {shown(symbol, 44)}: expected 'HK.<digits>' or 'US.<ticker>'"
    )


def parse_symbols(symbols: object) -> list[str]:
    """Normalise a list or a comma-separated string of symbols, dropping duplicates, keeping order.

    Every symbol is checked before any is used; all problems are reported in one error.
    """
    items: list[object]
    if isinstance(symbols, (bytes, bytearray, memoryview)):
        raise InvalidParameterError(
            f"symbols must be a list or a comma-separated string, got {type(symbols).__name__}"
        )
    if isinstance(symbols, str):
        items = [part for part in symbols.split(",") if part.strip()]
    elif isinstance(symbols, Iterable):
        items = list(symbols)
    else:
        raise InvalidParameterError(
            f"symbols must be a list or a comma-separated string, got {type(symbols).__name__}"
        )
    if not items:
        raise InvalidParameterError("no symbols given")
    result: list[str] = []
    problems: list[str] = []
    unsupported = True
    for item in items:
        try:
            canonical = normalize_symbol(item)
        except UnsupportedSecurityError as err:
            problems.append(err.message)
            continue
        except InvalidParameterError as err:
            problems.append(err.message)
            unsupported = False
            continue
        if canonical not in result:
            result.append(canonical)
    if problems:
        error = UnsupportedSecurityError if unsupported else InvalidParameterError
        listed = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(listed):
            listed.append(f"and {len(problems) - len(listed)} more")
        raise error(f"{len(problems)} bad symbol(s), nothing requested: " + "; ".join(listed))
    return result
