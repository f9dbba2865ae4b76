"""ShortInterestHook: the REST contract of DESIGN.md §2-§5 over one ``requests.Session``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_shortint import __version__
from airflow_provider_shortint.connection import ConnectionSettings
from airflow_provider_shortint.exceptions import (
    ERRORS_BY_RET_CODE,
    ShortInterestAuthError,
    ShortInterestError,
    ShortInterestResponseError,
)
from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
from airflow_provider_shortint.paginate import RawPage, is_last
from airflow_provider_shortint.ratelimit import RateLimiter, shared_limiter
from airflow_provider_shortint.retry import RetryPolicy, TransientFailure, retry_after
from airflow_provider_shortint.text import clip as _clip
from airflow_provider_shortint.text import excerpt as _excerpt
from airflow_provider_shortint.validation import MAX_COUNT

if TYPE_CHECKING:
    import pandas as pd
    import requests


class ShortInterestHook(ShortInterestBaseHook):
    """Talks to ``GET /v1/quote/{symbol}/short-selling/short-interest``: pages, types, retries, rate limit."""

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
        self.requests_made = 0

    # -- connection ---------------------------------------------------------------------------------------

    @property
    def settings(self) -> ConnectionSettings:
        """Validated connection settings, read once per hook."""
        if self._settings is None:
            conn = self.get_connection(self.shortint_conn_id)
            settings = ConnectionSettings.from_connection(conn)
            if settings.token:
                from airflow.sdk.log import mask_secret

                mask_secret(settings.token)
            self._settings = settings
        return self._settings

    async def aload_settings(self) -> ConnectionSettings:
        """Async twin of :attr:`settings` for triggers: never touches the connection synchronously."""
        if self._settings is None:
            conn = await self.aget_connection(self.shortint_conn_id)
            settings = ConnectionSettings.from_connection(conn)
            if settings.token:
                from airflow_provider_shortint._compat import amask_secret

                await amask_secret(settings.token)
            self._settings = settings
        return self._settings

    @property
    def max_retries(self) -> int:
        return self.settings.max_retries if self._max_retries is None else self._max_retries

    @property
    def retry_policy(self) -> RetryPolicy:
        """How transient failures are retried (the connection's ``max_retries`` and ``backoff_base``)."""
        return RetryPolicy(
            self.max_retries, self.settings.backoff_base, self.backoff_max, sleep=self._sleep, log=self.log
        )

    @property
    def rate_limiter(self) -> RateLimiter:
        """The budget shared by every hook of this process (and machine, with ``rate_limit_state_dir``)."""
        if self._rate_limiter is None:
            s = self.settings
            self._rate_limiter = shared_limiter(
                s.base_url, s.rate_limit_calls, s.rate_limit_period, s.rate_limit_state_dir
            )
        return self._rate_limiter

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session`` (keep-alive across pages and symbols)."""
        if self._session is None:
            import requests

            session = requests.Session()
            session.headers["Accept"] = "application/json"
            session.headers["User-Agent"] = f"airflow-provider-shortint/{__version__}"
            if self.settings.token:
                session.headers["Authorization"] = f"Bearer {self.settings.token}"
            session.verify = self.settings.verify_ssl
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- one request --------------------------------------------------------------------------------------

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One request for validated arguments: the envelope checked, the items left as sent."""
        payload = self._call(symbol, count, next_key)
        if payload is None:  # ret_code -10: the security has no short interest data
            return RawPage([], None)
        data = payload.get("data")
        if not isinstance(data, dict):
            raise ShortInterestResponseError(
                f"{symbol}: response has ret_code 0 but no 'data' object", ret_code=0, symbol=symbol
            )
        key = data.get("next_key")
        if key is not None and not isinstance(key, str):
            raise ShortInterestResponseError(
                f"{symbol}: next_key is not a string: {_clip(repr(key), 80)}", symbol=symbol
            )
        return RawPage(data.get("items"), None if is_last(key) else key)

    def _call(self, symbol: str, count: int, next_key: str | None) -> dict[str, Any] | None:
        """Send one request under the retry policy; return the JSON payload (None for no_data) or raise."""
        url = f"{self.settings.base_url}/v1/quote/{quote(symbol, safe='.')}/short-selling/short-interest"
        params: dict[str, str | int] = {"count": count}
        if next_key is not None:
            params["next_key"] = next_key
        return self.retry_policy.call(symbol, lambda: self._attempt(symbol, url, params))

    def _attempt(self, symbol: str, url: str, params: dict[str, str | int]) -> dict[str, Any] | None:
        """One attempt: a slot of the budget, one GET, the answer interpreted (transient faults raise)."""
        import requests

        with self.rate_limiter.slot():
            self.requests_made += 1
            try:
                response = self.get_conn().get(url, params=params, timeout=self.settings.timeout)
            except requests.Timeout:
                raise TransientFailure(
                    f"no answer from {self.settings.base_url} within {self.settings.timeout:g} s", "timeout"
                ) from None
            except requests.RequestException as err:
                raise TransientFailure(
                    f"connection to {self.settings.base_url} failed ({type(err).__name__})",
                    "connection_error",
                ) from None
        return self._interpret(symbol, response)

    def _interpret(self, symbol: str, response: requests.Response) -> dict[str, Any] | None:
        status = response.status_code
        body = response.content
        if status == 429:
            raise TransientFailure(
                "HTTP 429 (rate limited)", "rate_limited", retry_after=retry_after(response), status=status
            )
        if status in (401, 403):
            what = (
                "refused the API token (check the password"
                if self.settings.token
                else "requires an API token (set it as the password"
            )
            raise ShortInterestAuthError(
                f"{symbol}: HTTP {status}: the API {what} of connection {self.shortint_conn_id!r})",
                symbol=symbol,
                status=status,
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON ("[[[[...")
            payload = None
        if isinstance(payload, dict) and "ret_code" in payload:
            return self._dispatch(symbol, status, payload, body)
        if status >= 500:
            raise TransientFailure(
                f"HTTP {status}: {_excerpt(body, 60)!r}",
                "http_error",
                retry_after=retry_after(response),
                status=status,
            )
        hint = f" (is {self.settings.base_url} the API's base URL?)" if status == 404 else ""
        raise ShortInterestResponseError(
            f"{symbol}: HTTP {status} with a body that is not the API's JSON envelope: "
            f"{_excerpt(body)!r}{hint}",
            symbol=symbol,
            status=status,
        )

    def _dispatch(
        self, symbol: str, status: int, payload: dict[str, Any], body: bytes
    ) -> dict[str, Any] | None:
        ret_code = payload["ret_code"]
        raw_error = payload.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        message = _clip(str(error.get("message") or payload.get("ret_msg") or "no message"))
        error_code = _clip(error["code"], 64) if isinstance(error.get("code"), str) else None
        if ret_code == 0 and not isinstance(ret_code, bool):
            return payload
        if ret_code == -10:
            self.log.info("%s: the API has no short interest data for this security (ret_code -10)", symbol)
            return None
        if ret_code == -5:
            raise TransientFailure(f"internal error (ret_code -5): {message}", "internal_error", ret_code=-5)
        error_class = ERRORS_BY_RET_CODE.get(ret_code) if isinstance(ret_code, int) else None
        if error_class is None:
            raise ShortInterestResponseError(
                f"{symbol}: HTTP {status} with unknown ret_code {_clip(repr(ret_code), 40)}: "
                f"{_excerpt(body)!r}",
                ret_code=ret_code if isinstance(ret_code, int) else None,
                symbol=symbol,
                status=status,
            )
        raise error_class(
            f"{symbol}: {message} (ret_code {ret_code})",
            ret_code=ret_code,
            error_code=error_code,
            symbol=symbol,
            status=status,
        )

    # -- SDK parity and connection test ------------------------------------------------------------------

    def get_short_interest(
        self, code: str, next_key: str | None = None, num: int | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """SDK parity: ``(us_df, hk_df)``, the other market's frame empty, attrs["next_key"] "-1" at the end.

        Unlike the SDK it raises instead of returning an error code. ``timestamp`` is in seconds, as the
        SDK prints it; the REST endpoint's milliseconds stay available through :meth:`get_page`.
        """
        from airflow_provider_shortint.sdk_frames import sdk_frames

        return sdk_frames(self.get_page(code, count=30 if num is None else num, next_key=next_key))

    def test_connection(self) -> tuple[bool, str]:
        """One request for HK.00700's newest record; ``(ok, message)`` for the Airflow UI."""
        try:
            latest = self.get_latest("HK.00700")
        except ShortInterestError as err:
            return False, f"{type(err).__name__}: {err.message}"
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        newest = latest["trade_date"].isoformat() if latest else "no data"
        return True, f"Connected to {self.settings.base_url}: HK.00700 newest record {newest}"
