"""ShortInterestHook: the REST contract of DESIGN.md §2-§5.

Layers: the connection's settings (``transports.rest.settings.RestSettings``), one aiohttp session per
hook on an event loop of the hook's own (``transports.rest.client.RestClient``: keep-alive across pages
and symbols, driven from these synchronous methods), one request per attempt
(``transports.rest.http.HttpTransport``: the checked envelope, bounded in time and bytes), the retry
policy and request budget around each attempt (here), and paging, typing and Arrow conversion for every
transport (``hooks.base``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from airflow_provider_shortint.exceptions import ShortInterestResponseError
from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
from airflow_provider_shortint.retry import RetryPolicy
from airflow_provider_shortint.text import Secret
from airflow_provider_shortint.transports.paging import RawPage, server_next_key
from airflow_provider_shortint.transports.rest.settings import REST_MAX_COUNT, RestSettings

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_shortint.transports.rest.client import RestClient
    from airflow_provider_shortint.transports.rest.http import HttpTransport


class ShortInterestHook(ShortInterestBaseHook):
    """Talks to ``GET /v1/quote/{symbol}/short-selling/short-interest``: pages, types, retries, rate limit.

    :param shortint_conn_id: id of a ``shortint`` connection (host = base URL, password = API token).
    :param trace_configs: aiohttp ``TraceConfig`` objects that observe the hook's requests (metrics,
        debugging); they see the request headers, the token included.
    :param options: ``max_retries``, ``backoff_max``, ``rate_limiter``, ``sleep``: see
        :class:`~airflow_provider_shortint.hooks.base.ShortInterestBaseHook`.

    The methods are synchronous and work from any thread that has no running event loop (in async code:
    ``asyncio.to_thread``). :meth:`close` releases the session, its sockets and its loop; the hook opens
    new ones if used again.
    """

    conn_name_attr = "shortint_conn_id"
    default_conn_name = "shortint_default"
    conn_type = "shortint"
    hook_name = "Short Interest"
    max_count = REST_MAX_COUNT

    def __init__(
        self,
        shortint_conn_id: str = default_conn_name,
        *,
        trace_configs: Sequence[Any] = (),
        **options: Any,
    ) -> None:
        super().__init__(shortint_conn_id, **options)
        self.shortint_conn_id = shortint_conn_id
        self.trace_configs = list(trace_configs)
        self._client: RestClient | None = None
        self._transport: HttpTransport | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def read_settings(self, conn: Any) -> RestSettings:
        return RestSettings.from_connection(conn, label=self.connection_label)

    def secret_of(self, settings: RestSettings) -> Secret | None:
        return settings.token

    @property
    def settings(self) -> RestSettings:
        """Validated connection settings, read once per hook (bad ones raise before any request)."""
        return cast("RestSettings", self.load_settings())

    def get_conn(self) -> RestClient:
        """The hook's HTTP client: one aiohttp session on the hook's own loop (opened by the first
        request, kept alive across pages and symbols)."""
        if self._client is None or self._client.closed:
            from airflow_provider_shortint.transports.rest.client import RestClient, proxy_for

            settings = self.settings
            self._client = RestClient(
                verify_ssl=settings.verify_ssl,
                proxy=proxy_for(settings.base_url),
                trace_configs=self.trace_configs,
            )
        return self._client

    @property
    def transport(self) -> HttpTransport:
        """Sends one request through :meth:`get_conn`'s client and checks the envelope."""
        if self._transport is None:
            from airflow_provider_shortint.transports.rest.http import HttpTransport

            self._transport = HttpTransport(self.settings, self.get_conn, lambda: self.connection_label)
        return self._transport

    def close(self) -> None:
        """Close the HTTP session, its sockets and its event loop (the hook opens new ones if used again)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def describe_endpoint(self) -> str:
        return self.settings.base_url

    # -- one page -----------------------------------------------------------------------------------------

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One page for validated arguments under the retry policy: the envelope checked, at most ``count``
        items (left as sent), ``next_key`` None on the last page."""
        return self._fetch(symbol, count, next_key, self.retry_policy)

    def _fetch(self, symbol: str, count: int, next_key: str | None, policy: RetryPolicy) -> RawPage:
        from airflow_provider_shortint.transports.rest.client import refuse_running_loop

        refuse_running_loop()
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
        self.get_conn()  # the client and its proxy are settled before a budget slot is taken
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


def _raw_page(symbol: str, count: int, payload: dict[str, Any], token: Secret | None) -> RawPage:
    """The page of a ret_code-0 envelope: ``data`` an object, ``next_key`` a string that is safe to send
    back, no more items than asked for."""
    data = payload.get("data")
    if not isinstance(data, dict):
        raise ShortInterestResponseError(
            f"{symbol}: response has ret_code 0 but no 'data' object", ret_code=0, symbol=symbol
        )
    key = server_next_key(symbol, data.get("next_key"))
    if key is not None and token and token.occurs_in(key):
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
    return RawPage(items, key)
