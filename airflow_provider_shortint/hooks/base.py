"""What both transports' hooks share: the public methods of DESIGN.md §5 on top of one ``fetch_raw_page``.

A transport hook (REST: ``ShortInterestHook``; OpenD: ``FutuOpenDHook``) only says how one page is
fetched (with its retries and the request budget) and how large a page may be; paging, typing, Arrow
conversion and the latest-record shortcut are written once, here.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.markets import market_of
from airflow_provider_shortint.paginate import NextKeyPaginator, RawPage, is_last, paginate
from airflow_provider_shortint.records import (
    RepeatedDateGuard,
    ShortInterestPage,
    concat_tables,
    drop_repeated_dates,
    items_to_table,
    parse_items,
)
from airflow_provider_shortint.symbols import normalize_symbol
from airflow_provider_shortint.text import shown
from airflow_provider_shortint.validation import to_date, validate_count

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pandas as pd
    import pyarrow as pa


class ShortInterestBaseHook(BaseHook):
    """Paging, typed rows and history for a transport that can fetch one raw page."""

    #: Largest page the transport accepts (REST 90, OpenD 50); page sizes outside 1..max_count raise.
    max_count: ClassVar[int]
    #: Requests sent so far by this hook (every attempt counts); the operator reports it.
    requests_made: int = 0

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One page for validated arguments, items in the REST item shape (DESIGN §2), retried and
        budgeted; ``next_key`` None on the last page."""
        raise NotImplementedError

    def max_pages(self, symbol: str, page_size: int) -> int | None:
        """Most pages one symbol's history can take at ``page_size``; None for no bound."""
        return None

    def close(self) -> None:
        """Release the transport's connection (the hook can be used again afterwards)."""

    # -- public API (DESIGN.md §5) ---------------------------------------------------------------------

    def get_page(self, symbol: str, count: int = 30, next_key: str | None = None) -> ShortInterestPage:
        """One page, newest first. ``next_key`` of the result is None on the last page.

        :param symbol: e.g. "HK.00700" or "us.aapl" (normalised; malformed or other markets raise first).
        :param count: items on the page, 1..``max_count``.
        :param next_key: the ``next_key`` of the previous page, or None for the newest page.
        """
        symbol = normalize_symbol(symbol)
        count = validate_count(count, "count", self.max_count)
        if next_key is not None and (not isinstance(next_key, str) or is_last(next_key)):
            raise InvalidParameterError(
                f"next_key must be a key returned by a previous page, got {shown(next_key)} "
                "(that value marks the last page)"
            )
        raw = self.fetch_raw_page(symbol, count, next_key)
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
        expected gap. Items go straight to Arrow (see ``records.items_to_table``). One row per trade date
        (as :meth:`iter_pages`: a repeat with the same values is dropped, with other values raises).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        symbol = normalize_symbol(symbol)
        bound = to_date(since, "since")
        stamp = dt.datetime.now(dt.UTC)

        def to_table(raw: RawPage) -> tuple[pa.Table, dt.date | None]:
            table = items_to_table(symbol, raw.items, stamp)
            oldest: dt.date | None = pc.min(table.column("trade_date")).as_py()
            if bound is not None:
                table = table.filter(pc.greater(table.column("trade_date"), pa.scalar(bound, pa.date32())))
            return table, oldest

        paginator = self._paginator(symbol, page_size, bound, first_page_size)
        return drop_repeated_dates(
            symbol, concat_tables(paginate(paginator, self._fetcher(symbol), to_table))
        )

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
