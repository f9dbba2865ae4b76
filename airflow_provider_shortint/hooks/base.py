"""What both transports' hooks share: the public methods of DESIGN.md §5 on top of one ``fetch_raw_page``.

A transport hook (REST: ``ShortInterestHook``; OpenD: ``FutuOpenDHook``) only says how one page is
fetched (with its retries and the request budget) and how large a page may be; paging, typing, Arrow
conversion and the latest-record shortcut are written once, here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook

from airflow_provider_shortint.budget import RateLimiter, shared_limiter
from airflow_provider_shortint.exceptions import InvalidParameterError, ShortInterestError
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.records import RepeatedDateGuard, ShortInterestPage, parse_items, rows_to_table
from airflow_provider_shortint.retry import RetryPolicy
from airflow_provider_shortint.symbols import normalize_symbol
from airflow_provider_shortint.text import Secret, register_secret, shown
from airflow_provider_shortint.transports.paging import (
    NextKeyPaginator,
    RawPage,
    checked_next_key,
    history_page_bound,
    paginate,
    validate_count,
)
from airflow_provider_shortint.validation import to_date

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from airflow_provider_shortint.transports.settings import TransportSettings


class _BudgetBusy(Exception):
    """No budget slot is free right now (raised only while :meth:`test_connection` probes)."""


class ShortInterestBaseHook(BaseHook):
    """Paging, typed rows and history for a transport that can fetch one raw page; the connection's
    settings, retry policy and request budget, read the same way for every transport.

    :param conn_id: id of the connection (each subclass names this argument after its conn type).
    :param max_retries: retries of a transient failure; default: the connection's ``max_retries`` extra.
    :param backoff_max: longest backoff between two attempts, in seconds (Retry-After may ask longer,
        up to ``retry.MAX_RETRY_AFTER``).
    :param rate_limiter: the request budget to draw from; default: the one the connection's
        ``rate_limit_*`` extras describe, shared by every hook of the process (or machine, or Redis).
    :param sleep: how to wait between attempts (tests pass a recorder).
    """

    #: Largest page the transport accepts (REST 90, OpenD 50); page sizes outside 1..max_count raise.
    max_count: ClassVar[int]

    def __init__(
        self,
        conn_id: str,
        *,
        max_retries: int | None = None,
        backoff_max: float = 60.0,
        rate_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self._conn_id = checked_conn_id(conn_id)
        self._max_retries = max_retries
        self.backoff_max = backoff_max
        self._rate_limiter = rate_limiter
        self._sleep = sleep
        self._loaded: TransportSettings | None = None
        #: Requests sent so far by this hook (every attempt counts); the operator reports it.
        self.requests_made = 0
        self._probing = False  # test_connection: no retry, no waiting for the budget

    # -- what a transport says about its connection -----------------------------------------------------

    def read_settings(self, conn: Any) -> TransportSettings:
        """The transport's validated settings from an Airflow connection (bad values raise)."""
        raise NotImplementedError

    def secret_of(self, settings: Any) -> Secret | str | None:
        """A secret of the settings to mask in logs and messages (the REST token); None by default."""
        return None

    @property
    def connection_label(self) -> str:
        """How messages name the hook's connection: ``connection '<id>'``, or ``this connection`` while
        :meth:`test_connection` probes (Airflow's Test button runs it on a temporary, random id that
        would mean nothing to the user)."""
        return "this connection" if self._probing else f"connection {self._conn_id!r}"

    def describe_endpoint(self) -> str:
        """Where the hook connects, for :meth:`test_connection`'s success message."""
        raise NotImplementedError

    # -- settings, retries and budget, once for every transport -----------------------------------------

    def load_settings(self) -> TransportSettings:
        """Validated connection settings, read once per hook (bad ones raise before any request)."""
        if self._loaded is None:
            settings = self.read_settings(self.get_connection(self._conn_id))
            secret = self.secret_of(settings)
            if secret:
                from airflow.sdk.log import mask_secret

                mask_secret(_plain(secret))
            self._use(settings, secret)
        assert self._loaded is not None
        return self._loaded

    async def aload_settings(self) -> TransportSettings:
        """Async twin of :meth:`load_settings` for triggers: never touches the connection synchronously."""
        if self._loaded is None:
            settings = self.read_settings(await self.aget_connection(self._conn_id))
            secret = self.secret_of(settings)
            if secret:
                from airflow.sdk.log import amask_secret

                await amask_secret(_plain(secret))
            self._use(settings, secret)
        assert self._loaded is not None
        return self._loaded

    def _use(self, settings: TransportSettings, secret: Secret | str | None) -> None:
        register_secret(secret)  # masked in every exception and message the provider builds
        self._loaded = settings

    @property
    def max_retries(self) -> int:
        return self.load_settings().max_retries if self._max_retries is None else self._max_retries

    @property
    def retry_policy(self) -> RetryPolicy:
        """How transient failures are retried (the connection's ``max_retries`` and ``backoff_base``;
        none while :meth:`test_connection` probes)."""
        return self._policy(0 if self._probing else self.max_retries)

    def _policy(self, max_retries: int) -> RetryPolicy:
        return RetryPolicy(
            max_retries, self.load_settings().backoff_base, self.backoff_max, sleep=self._sleep, log=self.log
        )

    @property
    def rate_limiter(self) -> RateLimiter:
        """The budget named by ``rate_limit_key`` (default: the account's one budget), shared by every
        hook of this process, of this machine with ``rate_limit_state_dir``, of every machine with a Redis
        connection (DESIGN.md §9)."""
        if self._rate_limiter is None:
            s = self.load_settings()
            self._rate_limiter = shared_limiter(
                s.budget_key(),
                s.rate_limit_calls,
                s.rate_limit_period,
                s.rate_limit_state_dir,
                redis_conn_id=s.rate_limit_redis_conn_id,
            )
        return self._rate_limiter

    @contextlib.contextmanager
    def budget_slot(self) -> Iterator[None]:
        """One slot of the budget around one request (counted in ``requests_made``); while
        :meth:`test_connection` probes, only a slot free right now (else ``_BudgetBusy``)."""
        limiter = self.rate_limiter
        if not self._probing:
            with limiter.slot():
                self.requests_made += 1
                yield
            return
        taken = limiter.try_acquire()
        if not isinstance(taken, str):
            wait, why = taken
            raise _BudgetBusy(f"{why}; a slot frees in about {wait:.1f} s")
        try:
            self.requests_made += 1
            yield
        finally:
            limiter.release(taken)

    # -- the transport --------------------------------------------------------------------------------

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One page for validated arguments, items in the REST item shape (DESIGN §2), retried and
        budgeted; ``next_key`` None on the last page."""
        raise NotImplementedError

    def max_pages(self, symbol: str, page_size: int) -> int | None:
        """Most pages one symbol's history can take at ``page_size``: the market's cadence over a generous
        span (``paginate.history_page_bound``); a server that pages without end is a fault."""
        return history_page_bound(MARKETS[market_of(symbol)], page_size)

    def close(self) -> None:
        """Release the transport's connection (the hook can be used again afterwards)."""

    # -- public API (DESIGN.md §5) ---------------------------------------------------------------------

    def get_page(self, symbol: str, count: int = 30, next_key: str | None = None) -> ShortInterestPage:
        """One page, newest first. ``next_key`` of the result is None on the last page.

        :param symbol: e.g. "HK.00700" or "us.aapl" (normalised; malformed or other markets raise first).
        :param count: items on the page, 1..``max_count``.
        :param next_key: the ``next_key`` of the previous page, or None (or "") for the newest page.
        """
        symbol = normalize_symbol(symbol)
        count = validate_count(count, "count", self.max_count)
        raw = self.fetch_raw_page(symbol, count, checked_next_key(next_key))
        return ShortInterestPage(symbol, market_of(symbol), parse_items(symbol, raw.items), raw.next_key)

    def iter_pages(
        self,
        symbol: str,
        page_size: int | None = None,
        stop_after: dt.date | str | None = None,
        first_page_size: int | None = None,
    ) -> Iterator[ShortInterestPage]:
        """Pages newest first until the last one, or until a page reaches trade dates <= ``stop_after``.

        :param symbol: the security, as for :meth:`get_page`.
        :param page_size: items per request, 1..``max_count`` (default ``max_count``).
        :param stop_after: a date or ISO string; no page is fetched after one that reaches it.
        :param first_page_size: a smaller first request, for a caller that knows the expected gap.

        Raises ``ShortInterestResponseError`` if the server hands out the same key twice, more pages than
        a history can hold, or one trade date twice with different values (the same values twice: the
        later copy is dropped).
        """
        symbol = normalize_symbol(symbol)
        market = market_of(symbol)
        guard = RepeatedDateGuard(symbol)

        def to_page(raw: RawPage) -> tuple[ShortInterestPage, dt.date | None]:
            rows = parse_items(symbol, raw.items)
            oldest = min((row["trade_date"] for row in rows), default=None)
            return ShortInterestPage(symbol, market, guard.filter(rows), raw.next_key), oldest

        paginator = self._paginator(symbol, page_size, to_date(stop_after, "stop_after"), first_page_size)
        yield from paginate(paginator, self._fetcher(symbol), to_page)

    def get_history(
        self,
        symbol: str,
        since: dt.date | str | None = None,
        page_size: int | None = None,
        first_page_size: int | None = None,
    ) -> pa.Table:
        """All rows with ``trade_date > since`` (everything if None) as a table in the lake schema.

        :param symbol: the security, as for :meth:`get_page`.
        :param since: a date or ISO string; only newer rows are returned, and paging stops there.
        :param page_size: items per request (default ``max_count``).
        :param first_page_size: a smaller first request (see :meth:`iter_pages`).

        Pages stop as soon as one reaches ``since``; ``first_page_size`` sizes the first request to the
        expected gap. One row per trade date (as :meth:`iter_pages`: a repeat with the same values is
        dropped, with other values raises).
        """
        bound = to_date(since, "since")
        stamp = dt.datetime.now(dt.UTC)
        rows = [
            row
            for page in self.iter_pages(symbol, page_size, bound, first_page_size)
            for row in page.items
            if bound is None or row["trade_date"] > bound
        ]
        return rows_to_table(rows, stamp)

    def get_latest(self, symbol: str) -> dict[str, Any] | None:
        """The newest record of ``symbol`` (one request, count=1), or None if it has none."""
        page = self.get_page(symbol, count=1)
        return page.items[0] if page.items else None

    def get_short_interest(
        self, code: str, next_key: str | None = None, num: int | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """SDK parity: ``(us_df, hk_df)``, the other market's frame empty, attrs["next_key"] "-1" at the end.

        Raises instead of returning an error code.
        """
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """One request for HK.00700's newest record: no retry, and no wait for the request budget (a
        budget with no free slot answers "busy" at once), so it is bounded by the connection's timeout.
        ``(ok, message)`` for the Airflow UI; the message names the root cause of a failure."""
        self._probing = True
        try:
            self.load_settings()
            latest = self.get_latest("HK.00700")
        except _BudgetBusy as err:
            return False, f"request budget busy ({err}); nothing was sent, try again shortly"
        except ShortInterestError as err:
            return False, f"{type(err).__name__}: {err.message}"
        except Exception as err:
            return False, f"{type(err).__name__}: {shown(str(err), 300)}"
        finally:
            self._probing = False
            self.close()
        newest = latest["trade_date"].isoformat() if latest else "no data"
        return True, f"Connected to {self.describe_endpoint()}: HK.00700 newest record {newest}"

    # -- helpers ---------------------------------------------------------------------------------------

    def _paginator(
        self, symbol: str, page_size: int | None, stop_after: dt.date | None, first_page_size: int | None
    ) -> NextKeyPaginator:
        size = self.max_count if page_size is None else validate_count(page_size, "page_size", self.max_count)
        return NextKeyPaginator(
            symbol,
            page_size=size,
            max_count=self.max_count,
            first_page_size=first_page_size,
            stop_after=stop_after,
            max_pages=self.max_pages(symbol, size),
        )

    def _fetcher(self, symbol: str) -> Callable[[int, str | None], RawPage]:
        return functools.partial(self.fetch_raw_page, symbol)


def _plain(secret: Secret | str) -> str:
    """The value for Airflow's log masker, which needs it to find it in log lines."""
    return secret.reveal() if isinstance(secret, Secret) else secret


def checked_conn_id(conn_id: object) -> str:
    """A connection id as given, or ``InvalidParameterError`` for None, '' or a non-string (before Airflow
    is asked for it)."""
    if not isinstance(conn_id, str) or not conn_id.strip():
        raise InvalidParameterError(
            "the connection id must name an Airflow connection (of type shortint or futu_opend), "
            f"got {shown(conn_id)}"
        )
    return conn_id


def hook_for(conn_id: str, **hook_params: Any) -> ShortInterestBaseHook:
    """The hook the connection's type registers (Airflow's ``Connection.get_hook``), REST or OpenD.

    ``hook_params`` go to the hook (``max_retries``, ``backoff_max``, ``rate_limiter``, ``sleep``). A
    connection of a type this provider does not serve raises ``InvalidParameterError`` naming the types
    it does.
    """
    conn = BaseHook.get_connection(checked_conn_id(conn_id))
    return _ours(conn, hook_params)


async def ahook_for(conn_id: str, **hook_params: Any) -> ShortInterestBaseHook:
    """Async twin of :func:`hook_for` for triggers: the connection read with ``aget_connection`` and the
    hook's settings loaded, so the hook never reads the connection synchronously afterwards."""
    conn = await BaseHook.aget_connection(checked_conn_id(conn_id))
    hook = _ours(conn, hook_params)
    await hook.aload_settings()
    return hook


def _ours(conn: Any, hook_params: dict[str, Any]) -> ShortInterestBaseHook:
    from airflow_provider_shortint.get_provider_info import connection_settings

    served = [settings.conn_type for settings in connection_settings()]
    if conn.conn_type not in served:
        raise InvalidParameterError(
            f"connection {conn.conn_id!r} has conn_type {conn.conn_type!r}; the short interest provider "
            f"serves {' and '.join(map(repr, served))} connections"
        )
    hook = conn.get_hook(hook_params=hook_params)
    if not isinstance(hook, ShortInterestBaseHook):  # another provider registered one of our types
        raise InvalidParameterError(
            f"connection {conn.conn_id!r}: conn_type {conn.conn_type!r} gives {type(hook).__name__}, "
            "not a short interest hook"
        )
    return hook
