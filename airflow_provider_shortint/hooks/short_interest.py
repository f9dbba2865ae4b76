"""ShortInterestHook: the REST contract of DESIGN.md §2-§5.

Layers: the connection's settings (``transports.rest.settings.RestSettings``), one
``requests.Session`` per hook (keep-alive across pages and symbols), one request per attempt
(``transports.rest.http.HttpTransport``: the checked envelope, bounded in time and bytes), the retry
policy and request budget around each attempt (here), and paging, typing and Arrow conversion for every
transport (``hooks.base``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from airflow_provider_shortint.exceptions import ShortInterestResponseError
from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
from airflow_provider_shortint.retry import RetryPolicy
from airflow_provider_shortint.text import shown
from airflow_provider_shortint.transports.paging import RawPage, is_last
from airflow_provider_shortint.transports.rest.settings import REST_MAX_COUNT, RestSettings

if TYPE_CHECKING:
    import pandas as pd
    import requests

    from airflow_provider_shortint.transports.rest.http import HttpTransport


class ShortInterestHook(ShortInterestBaseHook):
    """Talks to ``GET /v1/quote/{symbol}/short-selling/short-interest``: pages, types, retries, rate limit.

    :param shortint_conn_id: id of a ``shortint`` connection (host = base URL, password = API token).
    :param options: ``max_retries``, ``backoff_max``, ``rate_limiter``, ``sleep``: see
        :class:`~airflow_provider_shortint.hooks.base.ShortInterestBaseHook`.
    """

    conn_name_attr = "shortint_conn_id"
    default_conn_name = "shortint_default"
    conn_type = "shortint"
    hook_name = "Short Interest"
    max_count = REST_MAX_COUNT

    def __init__(self, shortint_conn_id: str = default_conn_name, **options: Any) -> None:
        super().__init__(shortint_conn_id, **options)
        self.shortint_conn_id = shortint_conn_id
        self._session: requests.Session | None = None
        self._transport: HttpTransport | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def read_settings(self, conn: Any) -> RestSettings:
        return RestSettings.from_connection(conn)

    def secret_of(self, settings: RestSettings) -> str | None:
        return settings.token

    @property
    def settings(self) -> RestSettings:
        """Validated connection settings, read once per hook (bad ones raise before any request)."""
        return cast("RestSettings", self.load_settings())

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session`` (keep-alive across pages and symbols)."""
        if self._session is None:
            from airflow_provider_shortint.transports.rest.http import new_session

            self._session = new_session(self.settings)
        return self._session

    @property
    def transport(self) -> HttpTransport:
        """Sends one request over :meth:`get_conn`'s session and checks the envelope."""
        if self._transport is None:
            from airflow_provider_shortint.transports.rest.http import HttpTransport

            self._transport = HttpTransport(self.settings, self.shortint_conn_id, self.get_conn)
        return self._transport

    def close(self) -> None:
        """Close the HTTP session (the hook opens a new one if used again)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def describe_endpoint(self) -> str:
        return self.settings.base_url

    # -- one page -----------------------------------------------------------------------------------------

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
        with self.budget_slot():
            return transport.send(symbol, path, params)

    # -- SDK parity and connection test ------------------------------------------------------------------

    def get_short_interest(
        self, code: str, next_key: str | None = None, num: int | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """SDK parity: ``(us_df, hk_df)``, the other market's frame empty, attrs["next_key"] "-1" at the end.

        Unlike the SDK it raises instead of returning an error code. ``timestamp`` is in seconds, as the
        SDK prints it; the REST endpoint's milliseconds stay available through :meth:`get_page`.

        :param code: a symbol, e.g. "HK.00700".
        :param next_key: the ``attrs["next_key"]`` of the previous call's frame, or None (or "") for the
            newest page; "-1" raises (it marks the last page).
        :param num: page size, 1..90 (default 30).
        """
        from airflow_provider_shortint.transports.rest.frames import sdk_frames

        return sdk_frames(self.get_page(code, count=30 if num is None else num, next_key=next_key))


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
