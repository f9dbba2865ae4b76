"""ShortInterestHook: the REST contract of DESIGN.md §2-§5 over one ``requests.Session``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseHook

from airflow_provider_shortint import __version__
from airflow_provider_shortint.exceptions import (
    ERRORS_BY_RET_CODE,
    InvalidParameterError,
    ShortInterestAuthError,
    ShortInterestError,
    ShortInterestResponseError,
    ShortInterestServerError,
)
from airflow_provider_shortint.ratelimit import RateLimiter, shared_limiter
from airflow_provider_shortint.records import (
    INT_FIELDS,
    ShortInterestPage,
    concat_tables,
    items_to_table,
    parse_items,
)
from airflow_provider_shortint.symbols import market_of, normalize_symbol

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import requests

MAX_COUNT = 90
_T = TypeVar("_T")
# Longest wait a Retry-After header can impose (a broken "Retry-After: 1e9" must not park a task forever).
MAX_RETRY_AFTER = 300.0
END_MARKERS = (None, "", "-1")
# SDK frame columns: the documented ones first, then the REST fields the SDK table leaves out.
SDK_COLUMNS = {
    "HK": (
        "timestamp",
        "timestamp_str",
        "aggregated_short",
        "aggregated_short_ratio",
        "close_price",
        "last_close_price",
        "avg_cost",
        "avg_daily_short_volume",
    ),
    "US": (
        "timestamp",
        "timestamp_str",
        "shares_short",
        "short_percent",
        "avg_daily_share_volume",
        "days_to_cover",
        "close_price",
        "last_close_price",
        "avg_daily_short_volume",
    ),
}


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook takes from the Airflow connection, validated."""

    base_url: str
    token: str | None = field(repr=False)
    timeout: float = 30.0
    verify_ssl: bool = True
    rate_limit_calls: int = 30
    rate_limit_period: float = 30.0
    max_retries: int = 5
    backoff_base: float = 1.0
    rate_limit_state_dir: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> ConnectionSettings:
        """Read host/port/password/extras of an Airflow connection; bad values raise one clear error."""
        conn_id = getattr(conn, "conn_id", None)
        host = (conn.host or "").strip()
        if not host:
            raise InvalidParameterError(
                f"connection {conn_id!r} has no host: set it to the API's base URL, e.g. https://api.example.com"
            )
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterError(f"connection {conn_id!r} host {host!r} is not an http(s) URL")
        netloc = parts.netloc
        if conn.port and parts.port is None:
            netloc = f"{netloc}:{int(conn.port)}"
        base_url = f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
        extra = conn.extra_dejson or {}
        known = {
            "timeout",
            "verify_ssl",
            "rate_limit_calls",
            "rate_limit_period",
            "max_retries",
            "backoff_base",
            "rate_limit_state_dir",
        }

        def get(name: str, convert: Callable[[Any], Any], default: Any, valid: Callable[[Any], bool]) -> Any:
            raw = extra.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = convert(raw)
            except (TypeError, ValueError):
                value = None
            if value is None or not valid(value):
                raise InvalidParameterError(
                    f"connection {conn_id!r} extra {name!r} has an invalid value {raw!r}"
                )
            return value

        unknown = sorted(set(extra) - known)
        if unknown:
            logging.getLogger(__name__).warning("connection %r: ignoring unknown extras %s", conn_id, unknown)
        return cls(
            base_url=base_url,
            token=conn.password or None,
            timeout=get("timeout", float, 30.0, lambda v: v > 0),
            verify_ssl=get("verify_ssl", _to_bool, True, lambda v: True),
            rate_limit_calls=get("rate_limit_calls", _to_int, 30, lambda v: v >= 1),
            rate_limit_period=get("rate_limit_period", float, 30.0, lambda v: v > 0),
            max_retries=get("max_retries", _to_int, 5, lambda v: 0 <= v <= 100),
            backoff_base=get("backoff_base", float, 1.0, lambda v: v >= 0),
            rate_limit_state_dir=get("rate_limit_state_dir", str, None, bool),
        )


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    number = float(value)
    return int(number) if number.is_integer() else None


def validate_count(count: object, name: str = "count") -> int:
    """``count`` must be an int in 1..90; checked before any request is spent."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InvalidParameterError(f"{name} must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    return count


def to_date(value: object, name: str) -> dt.date | None:
    """Accept None, a date/datetime or an ISO ``YYYY-MM-DD`` string (templated values arrive as strings)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    raise InvalidParameterError(f"{name} must be an ISO date like '2026-05-15', got {value!r}")


def _excerpt(body: bytes, limit: int = 120) -> str:
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip(text: str, limit: int = 300) -> str:
    """A server-provided text cut to ``limit`` characters (error messages stay one readable line)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RawPage(NamedTuple):
    """A page as sent: ``items`` unparsed, ``next_key`` None on the last page."""

    items: object
    next_key: str | None
    no_booleans: bool  # the body has no JSON true/false: Arrow's direct conversion is exact


class _Retry(Exception):
    """A transient failure: retry after backoff (or after ``retry_after`` seconds if the server said so)."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


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
                from airflow.sdk.log import amask_secret

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
                        raise _Retry(f"no answer within {self.settings.timeout:g} s") from None
                    except requests.RequestException as err:
                        raise _Retry(f"connection failed ({type(err).__name__})") from None
                payload = self._interpret(symbol, response)
                return payload, b"true" not in response.content and b"false" not in response.content
            except _Retry as retry:
                if attempt == attempts:
                    raise ShortInterestServerError(
                        f"{symbol}: {retry.reason}; gave up after {attempts} attempt(s)",
                        ret_code=-5 if retry.status is None else None,
                        symbol=symbol,
                        status=retry.status,
                    ) from None
                delay = self._backoff(attempt, retry.retry_after)
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

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; never shorter than the server's Retry-After."""
        ceiling = min(self.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after + random.uniform(0, 0.1 * retry_after + 0.01))
        return delay

    def _interpret(self, symbol: str, response: requests.Response) -> dict[str, Any] | None:
        status = response.status_code
        body = response.content
        if status == 429:
            raise _Retry("HTTP 429 (rate limited)", _retry_after(response), status)
        if status in (401, 403):
            raise ShortInterestAuthError(
                f"{symbol}: HTTP {status}: the API refused the connection's token "
                f"(set the API token as the password of connection {self.shortint_conn_id!r})",
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
            raise _Retry(f"HTTP {status}: {_excerpt(body, 60)!r}", _retry_after(response), status)
        raise ShortInterestResponseError(
            f"{symbol}: HTTP {status} with a body that is not the API's JSON envelope: {_excerpt(body)!r}",
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
            raise _Retry(f"internal error (ret_code -5): {message}")
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
        stamp = dt.datetime.now(dt.timezone.utc)

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
        import pandas as pd

        page = self.get_page(code, count=30 if num is None else num, next_key=next_key)
        frames: dict[str, pd.DataFrame] = {}
        for market, columns in SDK_COLUMNS.items():
            rows = page.items if market == page.market else []
            frame = pd.DataFrame({column: _sdk_column(rows, column) for column in columns})
            frame.attrs["next_key"] = (page.next_key or "-1") if market == page.market else "-1"
            frames[market] = frame
        return frames["US"], frames["HK"]

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


def _sdk_column(rows: list[dict[str, Any]], column: str) -> Any:
    import pandas as pd

    if column == "timestamp_str":
        return pd.Series([row["trade_date"].isoformat() for row in rows], dtype=object)
    values = [row.get(column) for row in rows]
    if column == "timestamp":
        values = [None if v is None else v // 1000 for v in values]
    if column == "timestamp" or column in INT_FIELDS:
        return pd.Series(values, dtype="int64" if None not in values else "Int64")
    return pd.Series(values, dtype="float64")


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait (``X-Retry-After-Ms`` or ``Retry-After``), if any.

    Clamped to 0..``MAX_RETRY_AFTER``; values that are not finite numbers or dates are ignored.
    """
    millis = response.headers.get("X-Retry-After-Ms")
    if millis:
        try:
            return _clamp_wait(float(millis) / 1000)
        except ValueError:
            pass
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return _clamp_wait(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
            when = when.replace(tzinfo=dt.timezone.utc)
        return _clamp_wait((when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _clamp_wait(seconds: float) -> float | None:
    """A server-requested wait within 0..MAX_RETRY_AFTER; None for NaN (ignored)."""
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
