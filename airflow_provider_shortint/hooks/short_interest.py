"""ShortInterestHook: the REST contract of DESIGN.md §2-§5.

Layers: the connection's settings (``connection.ConnectionSettings``), one ``requests.Session`` per hook
(keep-alive across pages and symbols), one request per attempt (``transport_http.HttpTransport``: the
checked envelope, bounded in time and bytes), the retry policy and request budget around each attempt
(here), and paging, typing and Arrow conversion for every transport (``hooks.base``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_shortint.connection import ConnectionSettings
from airflow_provider_shortint.exceptions import ShortInterestError, ShortInterestResponseError
from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.paginate import RawPage, history_page_bound, is_last
from airflow_provider_shortint.ratelimit import RateLimiter, shared_limiter
from airflow_provider_shortint.retry import RetryPolicy
from airflow_provider_shortint.text import register_secret, shown
from airflow_provider_shortint.validation import MAX_COUNT

if TYPE_CHECKING:
    import pandas as pd
    import requests

    from airflow_provider_shortint.transport_http import HttpTransport


class ShortInterestHook(ShortInterestBaseHook):
    """Talks to ``GET /v1/quote/{symbol}/short-selling/short-interest``: pages, types, retries, rate limit.

    :param shortint_conn_id: id of a ``shortint`` connection (host = base URL, password = API token).
    :param max_retries: retries of a transient failure; default: the connection's ``max_retries`` extra.
    :param backoff_max: longest backoff between two attempts, in seconds (Retry-After may ask longer,
        up to ``retry.MAX_RETRY_AFTER``).
    :param rate_limiter: the request budget to draw from; default: the one the connection's
        ``rate_limit_*`` extras describe, shared by every hook of the process (or machine, or Redis).
    :param sleep: how to wait between attempts (tests pass a recorder).
    """

    conn_name_attr = "shortint_conn_id"
    default_conn_name = "shortint_default"
    conn_type = "shortint"
    hook_name = "Short Interest"
    max_count = MAX_COUNT

    def __init__(
        self,
        shortint_conn_id: str = default_conn_name,
        *,
        max_retries: int | None = None,
        backoff_max: float = 60.0,
        rate_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.shortint_conn_id = shortint_conn_id
        self._max_retries = max_retries
        self.backoff_max = backoff_max
        self._rate_limiter = rate_limiter
        self._sleep = sleep
        self._settings: ConnectionSettings | None = None
        self._session: requests.Session | None = None
        self._transport: HttpTransport | None = None
        self.requests_made = 0

    # -- connection ---------------------------------------------------------------------------------------

    @property
    def settings(self) -> ConnectionSettings:
        """Validated connection settings, read once per hook (bad ones raise before any request)."""
        if self._settings is None:
            settings = ConnectionSettings.from_connection(self.get_connection(self.shortint_conn_id))
            if settings.token:
                from airflow.sdk.log import mask_secret

                mask_secret(settings.token)
            self._use(settings)
        assert self._settings is not None
        return self._settings

    async def aload_settings(self) -> ConnectionSettings:
        """Async twin of :attr:`settings` for triggers: never touches the connection synchronously."""
        if self._settings is None:
            conn = await self.aget_connection(self.shortint_conn_id)
            settings = ConnectionSettings.from_connection(conn)
            if settings.token:
                from airflow_provider_shortint._compat import amask_secret

                await amask_secret(settings.token)
            self._use(settings)
        assert self._settings is not None
        return self._settings

    def _use(self, settings: ConnectionSettings) -> None:
        register_secret(settings.token)  # masked in every exception and message the provider builds
        self._settings = settings

    @property
    def max_retries(self) -> int:
        return self.settings.max_retries if self._max_retries is None else self._max_retries

    @property
    def retry_policy(self) -> RetryPolicy:
        """How transient failures are retried (the connection's ``max_retries`` and ``backoff_base``)."""
        return self._policy(self.max_retries)

    def _policy(self, max_retries: int) -> RetryPolicy:
        return RetryPolicy(
            max_retries, self.settings.backoff_base, self.backoff_max, sleep=self._sleep, log=self.log
        )

    @property
    def rate_limiter(self) -> RateLimiter:
        """The budget named by ``rate_limit_key`` (default: the base URL), shared by every hook of this
        process, of this machine with ``rate_limit_state_dir``, of every machine with a Redis connection."""
        if self._rate_limiter is None:
            s = self.settings
            self._rate_limiter = shared_limiter(
                s.budget_key(s.base_url),
                s.rate_limit_calls,
                s.rate_limit_period,
                s.rate_limit_state_dir,
                redis_conn_id=s.rate_limit_redis_conn_id,
            )
        return self._rate_limiter

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session`` (keep-alive across pages and symbols)."""
        if self._session is None:
            from airflow_provider_shortint.transport_http import new_session

            self._session = new_session(self.settings)
        return self._session

    @property
    def transport(self) -> HttpTransport:
        """Sends one request over :meth:`get_conn`'s session and checks the envelope."""
        if self._transport is None:
            from airflow_provider_shortint.transport_http import HttpTransport

            self._transport = HttpTransport(self.settings, self.shortint_conn_id, self.get_conn)
        return self._transport

    def close(self) -> None:
        """Close the HTTP session (the hook opens a new one if used again)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- one page -----------------------------------------------------------------------------------------

    def max_pages(self, symbol: str, page_size: int) -> int | None:
        """Most pages a history can take: the market's cadence over a generous span (``paginate``)."""
        return history_page_bound(MARKETS[market_of(symbol)], page_size)

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One page for validated arguments under the retry policy: the envelope checked, at most ``count``
        items (left as sent), ``next_key`` None on the last page."""
        return self._fetch(symbol, count, next_key, self.retry_policy)

    def _fetch(self, symbol: str, count: int, next_key: str | None, policy: RetryPolicy) -> RawPage:
        path = f"/v1/quote/{quote(symbol, safe='.')}/short-selling/short-interest"
        params: dict[str, str | int] = {"count": count}
        if next_key is not None:
            params["next_key"] = next_key
        payload = policy.call(symbol, lambda: self._attempt(symbol, path, params))
        if payload is None:  # ret_code -10: the security has no short interest data
            self.log.info("%s: the API has no short interest data for this security (ret_code -10)", symbol)
            return RawPage([], None)
        return _raw_page(symbol, count, payload, self.settings.token)

    def _attempt(self, symbol: str, path: str, params: dict[str, str | int]) -> dict[str, Any] | None:
        """One attempt: a slot of the budget, one request, the checked envelope (transient faults raise)."""
        transport = self.transport
        with self.rate_limiter.slot():
            self.requests_made += 1
            return transport.send(symbol, path, params)

    # -- SDK parity and connection test ------------------------------------------------------------------

    def get_short_interest(
        self, code: str, next_key: str | None = None, num: int | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """SDK parity: ``(us_df, hk_df)``, the other market's frame empty, attrs["next_key"] "-1" at the end.

        Unlike the SDK it raises instead of returning an error code. ``timestamp`` is in seconds, as the
        SDK prints it; the REST endpoint's milliseconds stay available through :meth:`get_page`.

        :param code: a symbol, e.g. "HK.00700".
        :param next_key: the ``attrs["next_key"]`` of the previous call's frame, or None for the newest page.
        :param num: page size, 1..90 (default 30).
        """
        from airflow_provider_shortint.sdk_frames import sdk_frames

        return sdk_frames(self.get_page(code, count=30 if num is None else num, next_key=next_key))

    def test_connection(self) -> tuple[bool, str]:
        """One request for HK.00700's newest record, no retry, within the connection's timeout;
        ``(ok, message)`` for the Airflow UI (the message names the root cause of a failure)."""
        try:
            raw = self._fetch("HK.00700", 1, None, self._policy(0))
            latest = self._first_row(raw)
        except ShortInterestError as err:
            return False, f"{type(err).__name__}: {err.message}"
        except Exception as err:
            return False, f"{type(err).__name__}: {shown(str(err), 300)}"
        newest = latest["trade_date"].isoformat() if latest else "no data"
        return True, f"Connected to {self.settings.base_url}: HK.00700 newest record {newest}"

    @staticmethod
    def _first_row(raw: RawPage) -> dict[str, Any] | None:
        from airflow_provider_shortint.records import parse_items

        rows = parse_items("HK.00700", raw.items)
        return rows[0] if rows else None


def _raw_page(symbol: str, count: int, payload: dict[str, Any], token: str | None) -> RawPage:
    """The page of a ret_code-0 envelope: ``data`` an object, ``next_key`` a string that is safe to send,
    no more items than asked for."""
    data = payload.get("data")
    if not isinstance(data, dict):
        raise ShortInterestResponseError(
            f"{symbol}: response has ret_code 0 but no 'data' object", ret_code=0, symbol=symbol
        )
    key = data.get("next_key")
    if key is not None and not isinstance(key, str):
        raise ShortInterestResponseError(f"{symbol}: next_key is not a string: {shown(key)}", symbol=symbol)
    if key is not None and token and token in key:
        raise ShortInterestResponseError(
            f"{symbol}: the server's next_key contains the API token; refusing to send it in a URL",
            symbol=symbol,
        )
    items = data.get("items")
    if isinstance(items, list) and len(items) > count:
        raise ShortInterestResponseError(
            f"{symbol}: the server sent {len(items):,} items for count={count}; refusing a page larger "
            "than asked for",
            symbol=symbol,
        )
    return RawPage(items, None if is_last(key) else key)
