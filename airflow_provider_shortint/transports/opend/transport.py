"""One ``get_short_interest`` call over OpenD: the connection's lifecycle, the SDK's answer classified into
the provider's errors, and its frames turned into REST-shaped items (DESIGN.md §8).

futu-api reports a failed request as ``(RET_ERROR, message, None)`` and drops the gateway's
``retType``/``errCode``, so :func:`classify` reads the message (table in docs/OPEND.md, "Errors"); a link
the provider's relay cut is classified by the relay's reason first (:func:`link_error`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    ShortInterestAuthError,
    ShortInterestConnectionError,
    ShortInterestError,
    ShortInterestResponseError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.retry import TransientFailure
from airflow_provider_shortint.text import clip
from airflow_provider_shortint.transports.opend.link import LinkFailure
from airflow_provider_shortint.transports.opend.settings import OPEND_MAX_COUNT
from airflow_provider_shortint.transports.paging import RawPage, server_next_key

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_shortint.transports.opend.sdk import Connection
    from airflow_provider_shortint.transports.opend.settings import FutuOpenDSettings

#: The SDK's frame columns per market (the lake columns it lacks are left out, as the SDK does).
SDK_FRAME_COLUMNS: dict[str, tuple[str, ...]] = {code: market.sdk_columns for code, market in MARKETS.items()}
NO_DATA = "no_data"

# What a failure message means, in this order: a leading REST error code ("invalid_symbol: ..."); else
# the first known phrase of OpenD or of the SDK that matches; else "no data" only when that is the whole
# message; else an unknown error. A kind is an exception class (fails at once), NO_DATA (an empty page),
# or the error_code of a TransientFailure (retried under the retry policy).
_CODES: dict[str, Any] = {
    "invalid_symbol": InvalidSymbolError,
    "unsupported": UnsupportedSecurityError,
    "invalid_parameter": InvalidParameterError,
    "no_data": NO_DATA,
    "internal_error": "internal_error",
    "not_logged_in": "not_logged_in",
    "rate_limited": "rate_limited",
    "timeout": "timeout",
}
_RETRY_IN = re.compile(
    r"retry in ([0-9]{1,5}(?:\.[0-9]{1,3})?) ?s\b"
)  # "request too frequent ... (retry in 12.3 s)"
_LEADING_CODE = re.compile(r"\s*([a-z_]+)\s*:")
_PHRASES: tuple[tuple[re.Pattern[str], Any], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (
            r"\bno (data |quote |market )?(permission|right|authori[sz]ation)|permission denied"
            r"|not authori[sz]ed|无权限|没有权限|权限不足",
            ShortInterestAuthError,
        ),
        (
            r"unknown (stock|security|code)|does not exist|no such (stock|security)|未知股票|股票不存在",
            InvalidSymbolError,
        ),
        (r"not supported|unsupported|only stocks|不支持", UnsupportedSecurityError),
        (r"invalid param|parameter|参数", InvalidParameterError),
        (r"time ?out|timed out|超时", "timeout"),
        (r"disconnect|connection|not connected|连接|断开", "connection_error"),
        (r"log(ged)? ?in|未登录|登录", "not_logged_in"),
        (r"frequen|too many|rate limit|频率|频繁", "rate_limited"),
        (r"internal|busy|try again|繁忙|内部", "internal_error"),
    )
)
# "No data" as the whole message (an empty history), never as a part of another ("No data permission").
_NO_DATA = re.compile(
    r"(no (short interest )?data( available| found)?|暂无数据|无数据)[\s.!。]*", re.IGNORECASE
)


def classify(symbol: str, message: str) -> ShortInterestError | TransientFailure | None:
    """The error for a failed request's message, or None when it certainly means "no data" (an empty
    page); what is not certainly "no data" is an error."""
    text = clip(message.strip() or "no message", 300)
    leading = _LEADING_CODE.match(text)
    kind = _CODES.get(leading.group(1)) if leading else None
    if kind is None:
        kind = next((kind for pattern, kind in _PHRASES if pattern.search(text)), None)
    if kind is None and _NO_DATA.fullmatch(text):
        kind = NO_DATA
    if kind == NO_DATA:
        return None
    if isinstance(kind, str):
        wait = _RETRY_IN.search(text)
        return TransientFailure(f"OpenD: {text}", kind, retry_after=float(wait.group(1)) if wait else None)
    if kind is ShortInterestAuthError:
        return ShortInterestAuthError(
            f"{symbol}: OpenD: {text} (the account logged in to OpenD lacks this permission)",
            symbol=symbol,
            error_code="no_permission",
        )
    if kind is not None:
        error: ShortInterestError = kind(f"{symbol}: OpenD: {text}", symbol=symbol)
        return error
    return ShortInterestResponseError(
        f"{symbol}: OpenD answered with an unknown error: {text}", symbol=symbol
    )


def link_error(
    failure: LinkFailure, settings: FutuOpenDSettings, label: str, symbol: str | None = None
) -> ShortInterestError | TransientFailure:
    """The provider's error for a link that could not be made or that the relay cut (docs/OPEND.md)."""
    where = f"{settings.host}:{settings.port}"
    kind, detail = failure.kind, failure.detail
    if kind == "name_not_resolved":
        return ShortInterestConnectionError(
            f"cannot reach OpenD at {where}: {detail}; check the host of {label}",
            error_code="name_not_resolved",
        )
    if kind == "init_refused":
        return ShortInterestConnectionError(
            f"OpenD at {where} refused the connection (InitConnect): {detail}"
        )
    if kind == "init_unreadable":
        hint = "; rsa_private_key must be the key configured in OpenD" if settings.is_encrypt else ""
        return ShortInterestConnectionError(f"OpenD at {where}: {detail}{hint}", error_code="init_unreadable")
    if kind in ("frame_too_large", "garbled"):
        prefix = f"{symbol}: " if symbol else ""
        return ShortInterestResponseError(
            f"{prefix}OpenD at {where} sent {detail}; the connection was cut", symbol=symbol
        )
    if kind in ("answer_timeout", "init_timeout", "resolve_timeout", "connect_timeout"):
        return TransientFailure(f"OpenD at {where}: {detail}", "timeout")
    if kind in ("connect_refused", "connect_failed"):
        return TransientFailure(f"could not connect to OpenD at {where}: {detail}", "connection_error")
    return TransientFailure(f"OpenD at {where}: {detail}", "connection_error")  # closed, temporary DNS


def empty_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(us_df, hk_df)`` with no rows, the SDK's columns and ``next_key`` "-1" (a security without data)."""
    import pandas as pd

    frames = {code: pd.DataFrame(columns=list(columns)) for code, columns in SDK_FRAME_COLUMNS.items()}
    for frame in frames.values():
        frame.attrs["next_key"] = "-1"
    return frames["US"], frames["HK"]


def frames_to_page(symbol: str, us_df: pd.DataFrame, hk_df: pd.DataFrame) -> RawPage:
    """The symbol's market frame as REST-shaped items: ``timestamp`` seconds -> milliseconds, NaN -> None.

    Rows in the other market's frame mean OpenD answered for another security: a response error.
    """
    market = market_of(symbol)
    frame, other = (hk_df, us_df) if market == "HK" else (us_df, hk_df)
    if len(other):
        raise ShortInterestResponseError(
            f"{symbol}: OpenD answered with {len(other)} row(s) of the other market", symbol=symbol
        )
    # One conversion to Python objects for the whole frame (~10x faster than to_dict("records")).
    names = [str(name) for name in frame.columns]
    items = []
    for row in frame.to_numpy(dtype=object).tolist():
        item = {
            name: None if value != value else value for name, value in zip(names, row, strict=True)
        }  # NaN
        seconds = item.get("timestamp")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            item["timestamp"] = seconds * 1000  # the lake stores milliseconds, as REST sends them
        items.append(item)
    return RawPage(items, server_next_key(symbol, frame.attrs.get("next_key")))


class OpenDTransport:
    """One lazily opened connection (context + relay) and one call on it; a failed connection is dropped
    so the next attempt starts on a fresh one.

    ``label`` names the connection in messages ("connection 'id'", or "this connection" while
    ``test_connection`` probes); ``getaddrinfo`` resolves the host (tests inject a resolver).
    """

    def __init__(
        self,
        settings: FutuOpenDSettings,
        *,
        label: Callable[[], str] = lambda: "the connection",
        getaddrinfo: Callable[..., Any] = socket.getaddrinfo,
    ) -> None:
        self.settings = settings
        self.label = label
        self.getaddrinfo = getaddrinfo
        self._conn: Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def connection(self) -> Connection:
        """The open connection, connecting first if needed (or again, if the last one dropped): an
        unreachable gateway is a TransientFailure, a host that does not resolve or an InitConnect the
        gateway refused a ``ShortInterestConnectionError`` (not retried)."""
        if self._conn is not None and not self._conn.is_ready:
            self.close()
        if self._conn is None:
            from airflow_provider_shortint.transports.opend.sdk import open_connection

            s = self.settings
            try:
                self._conn = open_connection(
                    s.host,
                    s.port,
                    is_encrypt=s.is_encrypt,
                    rsa_file=s.rsa_private_key,
                    security_firm=s.security_firm,
                    timeout=s.timeout,
                    getaddrinfo=self.getaddrinfo,
                )
            except LinkFailure as failure:
                raise link_error(failure, s, self.label()) from None
        return self._conn

    def context(self) -> Any:
        """The open ``OpenQuoteContext`` (see :meth:`connection`)."""
        return self.connection().ctx

    def get_short_interest(self, symbol: str, count: int | None, next_key: str | None) -> tuple[Any, Any]:
        """The SDK's ``(us_df, hk_df)`` for a validated symbol, or an exception (TransientFailure: retry).

        A page with more items than asked for (``count``; unset: the most OpenD pages) is a response error.
        """
        conn = self.connection()
        ret, us_df, hk_df = conn.ctx.get_short_interest(symbol, next_key=next_key, num=count)
        if ret == 0:  # futu.RET_OK
            limit = OPEND_MAX_COUNT if count is None else count
            if len(us_df) + len(hk_df) > limit:
                raise ShortInterestResponseError(
                    f"{symbol}: OpenD answered with {len(us_df) + len(hk_df):,} items for a page of {limit}",
                    symbol=symbol,
                )
            return us_df, hk_df
        if conn.failure is not None:  # the relay cut the link: its reason, not the SDK's "Disconnect"
            self.close()
            raise link_error(conn.failure, self.settings, self.label(), symbol)
        message = str(us_df)
        failure = classify(symbol, message)
        if failure is None:
            return empty_frames()
        if isinstance(failure, TransientFailure) and self._link_failed(conn, message):
            self.close()  # the SDK does not reconnect by itself (see sdk.py); the retry opens anew
        raise failure

    @staticmethod
    def _link_failed(conn: Connection, message: str) -> bool:
        """Whether the connection itself failed (the SDK's own Disconnect/Timeout, or the context is no
        longer connected); a timeout or error the gateway reported is retried on the same connection."""
        from airflow_provider_shortint.transports.opend.sdk import SDK_LINK_FAILURES

        return message.strip() in SDK_LINK_FAILURES or not conn.is_ready

    def close(self) -> None:
        """Close the connection (its sockets and threads are gone when this returns)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            from airflow_provider_shortint.transports.opend.sdk import close_connection

            close_connection(conn)
