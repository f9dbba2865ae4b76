"""ShortInterestHook: the REST contract of DESIGN.md §2-§5 over one ``requests.Session``."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote

from airflow.sdk import BaseHook

from airflow_provider_shortint import __version__
from airflow_provider_shortint.connection import ConnectionSettings
from airflow_provider_shortint.exceptions import (
    ERRORS_BY_RET_CODE,
    InvalidParameterError,
    ShortInterestAuthError,
    ShortInterestError,
    ShortInterestResponseError,
    ShortInterestServerError,
)
from airflow_provider_shortint.ratelimit import RateLimiter, shared_limiter
from airflow_provider_shortint.records import ShortInterestPage, concat_tables, items_to_table, parse_items
from airflow_provider_shortint.retry import TransientFailure, backoff_delay, retry_after
from airflow_provider_shortint.symbols import market_of, normalize_symbol
from airflow_provider_shortint.validation import MAX_COUNT, to_date, validate_count

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import requests

_T = TypeVar("_T")
END_MARKERS = (None, "", "-1")  # next_key values that mark the last page


def _excerpt(body: bytes, limit: int = 120) -> str:
    """The start of a response body for an error message, on one line."""
    return _clip(body.decode("utf-8", errors="replace"), limit)


def _clip(text: str, limit: int = 300) -> str:
    """A server-provided text cut to ``limit`` characters (error messages stay one readable line)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RawPage(NamedTuple):
    """A page as sent: ``items`` unparsed, ``next_key`` None on the last page."""

    items: object
    next_key: str | None
    no_booleans: bool  # the body has no JSON true/false: Arrow's direct conversion is exact


class ShortInterestHook(BaseHook):
    """Talks to ``GET /v1/quote/{symbol}/short-selling/short-interest``: pages, types, retries, rate limit."""

    conn_name_attr = "shortint_conn_id"
    default_conn_name = "shortint_default"
    conn_type = "shortint"
    hook_name = "Short Interest"

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

    def get_page(self, symbol: str, count: int = 30, next_key: str | None = None) -> ShortInterestPage:
        """One page, newest first. ``next_key`` of the result is None on the last page."""
        symbol = normalize_symbol(symbol)
        count = validate_count(count)
        if next_key is not None and (not isinstance(next_key, str) or next_key in ("", "-1")):
            raise InvalidParameterError(
                f"next_key must be a key returned by a previous page, got {_clip(repr(next_key), 80)} "
                "(that value marks the last page)"
            )
        raw = self._get_raw_page(symbol, count, next_key)
        return ShortInterestPage(symbol, market_of(symbol), parse_items(symbol, raw.items), raw.next_key)

    def _get_raw_page(self, symbol: str, count: int, next_key: str | None) -> _RawPage:
        """One request for validated arguments: the envelope checked, the items left as sent."""
        payload, no_booleans = self._call(symbol, count, next_key)
        if payload is None:  # ret_code -10: the security has no short interest data
            return _RawPage([], None, no_booleans)
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
        return _RawPage(data.get("items"), None if key in END_MARKERS else key, no_booleans)

    def _call(self, symbol: str, count: int, next_key: str | None) -> tuple[dict[str, Any] | None, bool]:
        """Send one request with retries; return the JSON payload (None for no_data) or raise.

        The flag says the body holds no JSON ``true``/``false``, so Arrow may convert its items directly.
        """
        import requests

        url = f"{self.settings.base_url}/v1/quote/{quote(symbol, safe='.')}/short-selling/short-interest"
        params: dict[str, str | int] = {"count": count}
        if next_key is not None:
            params["next_key"] = next_key
        session = self.get_conn()
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with self.rate_limiter.slot():
                    self.requests_made += 1
                    try:
                        response = session.get(url, params=params, timeout=self.settings.timeout)
                    except requests.Timeout:
                        raise TransientFailure(
                            f"no answer from {self.settings.base_url} within {self.settings.timeout:g} s",
                            "timeout",
                        ) from None
                    except requests.RequestException as err:
                        raise TransientFailure(
                            f"connection to {self.settings.base_url} failed ({type(err).__name__})",
                            "connection_error",
                        ) from None
                payload = self._interpret(symbol, response)
                return payload, b"true" not in response.content and b"false" not in response.content
            except TransientFailure as retry:
                if attempt == attempts:
                    raise ShortInterestServerError(
                        f"{symbol}: {retry.reason}; gave up after {attempts} attempt(s)",
                        ret_code=retry.ret_code,
                        error_code=retry.error_code,
                        symbol=symbol,
                        status=retry.status,
                    ) from None
                delay = backoff_delay(
                    attempt, self.settings.backoff_base, self.backoff_max, retry.retry_after
                )
                self.log.warning(
                    "%s: %s; retrying in %.2f s (attempt %d of %d)",
                    symbol,
                    retry.reason,
                    delay,
                    attempt + 1,
                    attempts,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

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

    # -- pages and history -------------------------------------------------------------------------------

    def iter_pages(
        self,
        symbol: str,
        page_size: int = MAX_COUNT,
        stop_after: dt.date | str | None = None,
        first_page_size: int | None = None,
    ) -> Iterator[ShortInterestPage]:
        """Pages newest first until the last one, or until a page reaches trade dates <= ``stop_after``.

        ``first_page_size`` lets a caller that knows the expected gap ask for less on the first request.
        Raises ``ShortInterestResponseError`` if the server hands out the same key twice.
        """
        symbol = normalize_symbol(symbol)

        def to_page(raw: _RawPage) -> tuple[ShortInterestPage, dt.date | None]:
            page = ShortInterestPage(symbol, market_of(symbol), parse_items(symbol, raw.items), raw.next_key)
            return page, page.oldest_date

        yield from self._paginate(symbol, page_size, stop_after, first_page_size, to_page)

    def _paginate(
        self,
        symbol: str,
        page_size: int,
        stop_after: dt.date | str | None,
        first_page_size: int | None,
        convert: Callable[[_RawPage], tuple[_T, dt.date | None]],
    ) -> Iterator[_T]:
        """The paging loop: ``convert`` turns each raw page into a result and the page's oldest date."""
        page_size = validate_count(page_size, "page_size")
        count = page_size if first_page_size is None else validate_count(first_page_size, "first_page_size")
        stop = to_date(stop_after, "stop_after")
        seen: set[str] = set()
        next_key: str | None = None
        while True:
            raw = self._get_raw_page(symbol, count, next_key)
            result, oldest = convert(raw)
            yield result
            if raw.next_key is None or oldest is None or (stop is not None and oldest <= stop):
                return
            if raw.next_key in seen:
                raise ShortInterestResponseError(
                    f"{symbol}: the server returned next_key {_clip(repr(raw.next_key), 80)} twice; "
                    "stopping instead of looping",
                    symbol=symbol,
                )
            seen.add(raw.next_key)
            next_key = raw.next_key
            count = page_size

    def get_history(
        self,
        symbol: str,
        since: dt.date | str | None = None,
        page_size: int = MAX_COUNT,
        first_page_size: int | None = None,
    ) -> pa.Table:
        """All rows with ``trade_date > since`` (everything if None) as a table in the lake schema.

        Pages stop as soon as one reaches ``since``; ``first_page_size`` sizes the first request to the
        expected gap. Items go straight from JSON to Arrow (see ``records.items_to_table``).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        symbol = normalize_symbol(symbol)
        bound = to_date(since, "since")
        stamp = dt.datetime.now(dt.UTC)

        def to_table(raw: _RawPage) -> tuple[pa.Table, dt.date | None]:
            table = items_to_table(symbol, raw.items, stamp, no_booleans=raw.no_booleans)
            oldest: dt.date | None = pc.min(table.column("trade_date")).as_py()
            if bound is not None:
                table = table.filter(pc.greater(table.column("trade_date"), pa.scalar(bound, pa.date32())))
            return table, oldest

        return concat_tables(self._paginate(symbol, page_size, bound, first_page_size, to_table))

    def get_latest(self, symbol: str) -> dict[str, Any] | None:
        """The newest record of ``symbol`` (one request, count=1), or None if it has none."""
        page = self.get_page(symbol, count=1)
        return page.items[0] if page.items else None

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
