"""The one registry of markets: symbol grammar, cadence, columns, the SDK frame's columns, time zone,
report metric.

Every other module asks this one what a market is; adding a market means adding one ``Market`` here
(and its calendar to the sandbox). A symbol whose prefix is not registered never gets a market by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError

_HK_CODE = re.compile(r"[0-9]{1,5}")
_US_TICKER = re.compile(r"[A-Z][A-Z0-9.\-]{0,9}")


@dataclass(frozen=True)
class Market:
    """What the provider knows about one market."""

    code: str  # the symbol prefix and the lake's ``market=`` partition value
    timezone: str  # IANA zone of the market's trading day (``timestamp`` is midnight there)
    is_valid_code: Callable[[str], bool]  # the part after "CODE." once upper-cased
    code_rule: str  # how a malformed code is explained to the user
    normalize_code: Callable[[str], str]  # "700" -> "00700"
    cadence_days: int  # typical days between two records (sizes the first page of an incremental run)
    columns: tuple[str, ...]  # value columns the REST endpoint fills for this market
    sdk_columns: tuple[str, ...]  # columns of the futu-api SDK's frame for this market, in its order
    short_metric: str  # the column that measures short interest (the report plots it)

    @property
    def opend_missing(self) -> tuple[str, ...]:
        """Value columns the REST endpoint fills and the SDK's frame lacks (left null in rows from OpenD)."""
        return tuple(column for column in self.columns if column not in self.sdk_columns)

    @property
    def rest_frame_columns(self) -> tuple[str, ...]:
        """Columns of ``ShortInterestHook.get_short_interest``'s frame: the SDK's, then the REST fields it
        lacks (a REST page carries more than the SDK's frame)."""
        return self.sdk_columns + self.opend_missing

    def normalize(self, code: str, shown: str) -> str:
        """Canonical ``CODE.xxx`` for an upper-cased code, or ``InvalidParameterError``."""
        if not self.is_valid_code(code):
            raise InvalidParameterError(f"malformed symbol {shown}: {self.code_rule}")
        return f"{self.code}.{self.normalize_code(code)}"


HK = Market(
    code="HK",
    timezone="Asia/Hong_Kong",
    is_valid_code=lambda code: bool(_HK_CODE.fullmatch(code)),
    code_rule="an HK code is 1 to 5 digits",
    normalize_code=lambda code: f"{int(code):05d}",
    cadence_days=7,
    columns=(
        "close_price",
        "last_close_price",
        "avg_daily_short_volume",
        "aggregated_short",
        "aggregated_short_ratio",
        "avg_cost",
    ),
    sdk_columns=(
        "timestamp",
        "timestamp_str",
        "aggregated_short",
        "aggregated_short_ratio",
        "close_price",
        "last_close_price",
    ),
    short_metric="aggregated_short_ratio",
)

US = Market(
    code="US",
    timezone="America/New_York",
    # 1-10 characters: a letter, then letters, digits, '.', '-'; no "..", no trailing '.' or '-'.
    is_valid_code=lambda code: bool(_US_TICKER.fullmatch(code)) and ".." not in code and code[-1] not in ".-",
    code_rule="a US ticker is 1 to 10 letters, digits, '.' or '-', starting with a letter",
    normalize_code=lambda code: code,
    cadence_days=14,
    columns=(
        "close_price",
        "last_close_price",
        "avg_daily_short_volume",
        "shares_short",
        "short_percent",
        "avg_daily_share_volume",
        "days_to_cover",
    ),
    sdk_columns=(
        "timestamp",
        "timestamp_str",
        "shares_short",
        "short_percent",
        "avg_daily_share_volume",
        "days_to_cover",
        "close_price",
        "last_close_price",
    ),
    short_metric="short_percent",
)

#: Registered markets by code, in the order the provider lists them.
MARKETS: dict[str, Market] = {market.code: market for market in (HK, US)}
MARKET_CODES: tuple[str, ...] = tuple(MARKETS)


def get_market(code: object) -> Market:
    """The registered market called ``code`` ("hk" is accepted), else ``InvalidParameterError``."""
    market = MARKETS.get(code.strip().upper()) if isinstance(code, str) else None
    if market is None:
        raise InvalidParameterError(f"market must be one of {list(MARKET_CODES)}, got {code!r}")
    return market


def market_of(symbol: str) -> str:
    """Market code of a canonical symbol; a prefix that is not registered raises (never a default)."""
    prefix, dot, _ = symbol.partition(".")
    if not dot or prefix not in MARKETS:
        raise UnsupportedSecurityError(
            f"{symbol!r} belongs to no supported market (expected one of {list(MARKET_CODES)})",
            ret_code=-8,
        )
    return prefix
